package agentruns

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// QueueName is the Kueue LocalQueue a run waits in (its
// kueue.x-k8s.io/queue-name label); empty for a run Kueue does not admit.
func QueueName(run *agentsv1alpha1.AgentRun) string {
	return run.Labels[agentsv1alpha1.LabelQueueName]
}

// HeldByQueue tells whether a queued run may not be given a host yet: Kueue
// has not admitted its Workload (or evicted it). The fleet does not place
// it, its pinned host does not claim it. A cancelled run is not held: it
// ends at once, wherever it is.
func HeldByQueue(run *agentsv1alpha1.AgentRun) bool {
	return QueueName(run) != "" && !run.Spec.Cancel &&
		!meta.IsStatusConditionTrue(run.Status.Conditions, agentsv1alpha1.ConditionAdmitted)
}

// Evicted tells whether Kueue evicted a queued run that a host holds: the
// host stops and removes its container and hands the run back to its queue.
func Evicted(run *agentsv1alpha1.AgentRun) bool {
	return QueueName(run) != "" && run.Status.Host != "" && !run.Status.Phase.IsFinished() && SaysEvicted(run)
}

// SaysEvicted tells whether the run's Admitted condition says Kueue evicted
// it, wherever the run is now.
func SaysEvicted(run *agentsv1alpha1.AgentRun) bool {
	c := meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionAdmitted)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == agentsv1alpha1.ReasonEvicted
}
