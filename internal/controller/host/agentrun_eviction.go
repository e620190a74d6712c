package host

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
)

// evict hands a run Kueue evicted back to its queue: its containers on this
// host are stopped and removed as for a cancel, and the host lets go of it
// (its finalizer, its slot, status.host), so the fleet places it again once
// Kueue admits it again. The attempt in flight counts as disrupted, like a
// lost host's: an eviction is not the run failing, and does not count
// against spec.backoffLimit.
func (r *AgentRunReconciler) evict(ctx context.Context, run *agentsv1alpha1.AgentRun) (agentruns.State, ctrl.Result, error) {
	before := agentruns.StateOf(&run.Status)
	if err := r.removeContainersAndFinalizer(ctx, run); err != nil {
		return before, ctrl.Result{}, err
	}
	r.forget(ctx, client.ObjectKeyFromObject(run))
	if run.Status.ContainerName != "" && before.Reason != agentsv1alpha1.ReasonBackOff {
		run.Status.DisruptedAttempts++
	}
	run.Status.Host, run.Status.ContainerID, run.Status.ContainerName = "", "", ""
	why := "Kueue evicted the run"
	if c := meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionAdmitted); c != nil {
		why = c.Message
	}
	return agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonQueued, Message: fmt.Sprintf(
		"%s; host %s stopped and removed its container, and the run waits in LocalQueue %s again (its next attempt does not count against spec.backoffLimit)",
		why, r.Host, agentruns.QueueName(run))}, ctrl.Result{}, nil
}
