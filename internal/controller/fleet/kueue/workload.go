package kueue

import (
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/kueueapi"
	"github.com/agentrun/agentrun/internal/policy"
)

// workloadPrefix starts the name of every Workload agentrun makes, as Kueue
// starts a Job's with "job-".
const workloadPrefix = "agentrun-"

// WorkloadName is the name of the Workload of the run of that name: one per
// run, so a run that is gone can have its Workload deleted by name. A name
// too long for the prefix is cut and made unique again by a hash of it.
func WorkloadName(run string) string {
	const maxName = 253
	if len(workloadPrefix)+len(run) <= maxName {
		return workloadPrefix + run
	}
	h := fnv.New32a()
	h.Write([]byte(run))
	suffix := fmt.Sprintf("-%08x", h.Sum32())
	return workloadPrefix + run[:maxName-len(workloadPrefix)-len(suffix)] + suffix
}

// podSetName is the name of the Workload's one pod set.
const podSetName = "agent"

// requests are what a run asks of its ClusterQueue: one run, and its cpus
// and memory when it sets them (a run that does not gets its host's
// defaults, which the fleet does not know).
func requests(run *agentsv1alpha1.AgentRun) (corev1.ResourceList, error) {
	out := corev1.ResourceList{agentsv1alpha1.ResourceRun: resource.MustParse("1")}
	nanoCPUs, err := policy.ParseCPUs(run.Spec.Podman.CPUs)
	if err != nil {
		return nil, fmt.Errorf("spec.podman.cpus: %w", err)
	}
	if nanoCPUs > 0 {
		out[corev1.ResourceCPU] = *resource.NewMilliQuantity((nanoCPUs+999_999)/1_000_000, resource.DecimalSI)
	}
	memory, err := policy.ParseMemory(run.Spec.Podman.Memory)
	if err != nil {
		return nil, fmt.Errorf("spec.podman.memory: %w", err)
	}
	if memory > 0 {
		out[corev1.ResourceMemory] = *resource.NewQuantity(memory, resource.BinarySI)
	}
	return out, nil
}

// newWorkload is the Workload Kueue admits the run through: owned by the
// run, in its queue, asking for what requests says, at priority (nil: the
// run names no WorkloadPriorityClass).
func newWorkload(run *agentsv1alpha1.AgentRun, priority *kueueapi.WorkloadPriorityClass) (*kueueapi.Workload, error) {
	reqs, err := requests(run)
	if err != nil {
		return nil, err
	}
	wl := &kueueapi.Workload{
		ObjectMeta: metav1.ObjectMeta{
			Name: WorkloadName(run.Name), Namespace: run.Namespace,
			Labels: map[string]string{agentsv1alpha1.LabelUID: string(run.UID)},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: agentsv1alpha1.GroupVersion.String(), Kind: "AgentRun", Name: run.Name, UID: run.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: kueueapi.WorkloadSpec{
			QueueName: agentruns.QueueName(run),
			PodSets: []kueueapi.PodSet{{Name: podSetName, Count: 1, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: podSetName, Image: "agentrun", Resources: corev1.ResourceRequirements{Requests: reqs}}},
			}}}},
		},
	}
	if priority != nil {
		wl.Spec.PriorityClassRef = &kueueapi.PriorityClassRef{Group: kueueapi.PriorityGroup, Kind: kueueapi.PriorityKind, Name: priority.Name}
		wl.Spec.Priority = ptr.To(priority.Value)
	}
	return wl, nil
}

// verdict is what Kueue decided of a Workload, as the run sees it.
type verdict int

const (
	// waiting: no quota reserved; the run stays in its queue.
	waiting verdict = iota
	// admitted: the run may be placed and run.
	admitted
	// evicted: Kueue took the admission back and the quota is still
	// reserved: the run must stop, then the quota is released.
	evicted
)

// decide reads a Workload's conditions.
func decide(wl *kueueapi.Workload) verdict {
	conds := wl.Status.Conditions
	switch {
	case meta.IsStatusConditionTrue(conds, kueueapi.WorkloadEvicted) && wl.Status.Admission != nil:
		return evicted
	case meta.IsStatusConditionTrue(conds, kueueapi.WorkloadAdmitted):
		return admitted
	}
	return waiting
}

// queuedMessage says where the run waits and what Kueue says of it: why it
// has no quota yet, when Kueue has looked at it.
func queuedMessage(run *agentsv1alpha1.AgentRun, wl *kueueapi.Workload) string {
	msg := fmt.Sprintf("waiting in LocalQueue %s for Kueue to admit its Workload %s", agentruns.QueueName(run), wl.Name)
	if c := meta.FindStatusCondition(wl.Status.Conditions, kueueapi.WorkloadQuotaReserved); c != nil && c.Status == metav1.ConditionFalse && c.Message != "" {
		msg += ": " + c.Message
	}
	return msg
}

// evictedMessage names why Kueue evicted the run, from the Workload's
// Evicted condition (its reason: Preempted, ClusterQueueStopped, ...).
func evictedMessage(wl *kueueapi.Workload) string {
	c := meta.FindStatusCondition(wl.Status.Conditions, kueueapi.WorkloadEvicted)
	return fmt.Sprintf("Kueue evicted the run's Workload %s (%s): %s", wl.Name, c.Reason, c.Message)
}

// releaseQuota marks an evicted Workload's quota released once its run has
// stopped, as Kueue's own job controllers do: no reservation, not admitted,
// requeued. Kueue then queues it again.
func releaseQuota(wl *kueueapi.Workload, now metav1.Time) {
	ev := meta.FindStatusCondition(wl.Status.Conditions, kueueapi.WorkloadEvicted)
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&wl.Status.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: wl.Generation, LastTransitionTime: now,
		})
	}
	set(kueueapi.WorkloadRequeued, metav1.ConditionTrue, ev.Reason, ev.Message)
	set(kueueapi.WorkloadQuotaReserved, metav1.ConditionFalse, kueueapi.ReasonPending, ev.Message)
	set(kueueapi.WorkloadAdmitted, metav1.ConditionFalse, kueueapi.ReasonNoReservation, "The workload has no reservation")
	wl.Status.Admission = nil
}

// markFinished marks the Workload of a finished run Finished, which
// releases its quota at once.
func markFinished(wl *kueueapi.Workload, run *agentsv1alpha1.AgentRun, now metav1.Time) {
	reason := kueueapi.ReasonFailed
	if run.Status.Phase == agentsv1alpha1.PhaseSucceeded {
		reason = kueueapi.ReasonSucceeded
	}
	meta.SetStatusCondition(&wl.Status.Conditions, metav1.Condition{
		Type: kueueapi.WorkloadFinished, Status: metav1.ConditionTrue, Reason: reason,
		Message: fmt.Sprintf("AgentRun %s ended %s", run.Name, run.Status.Phase), ObservedGeneration: wl.Generation, LastTransitionTime: now,
	})
}
