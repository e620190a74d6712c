// Package kueue is the fleet's Kueue integration: one controller that keeps
// each queued AgentRun (labelled kueue.x-k8s.io/queue-name) and its Kueue
// Workload in step. It makes the Workload, holds the run in its queue until
// Kueue admits it (placement and hosts leave held runs alone), hands an
// evicted run to its host to stop, releases the quota once it has stopped,
// and marks the Workload finished when the run ends. Kueue's own manager
// runs beside it with AgentRun listed in integrations.externalFrameworks
// (docs/kueue.md).
package kueue

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/kueueapi"
)

// Reconciler keeps a queued run and its Workload in step.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	Clock    clock.Clock
	// RecheckPeriod is how long a run whose WorkloadPriorityClass is
	// missing waits before it looks again.
	RecheckPeriod time.Duration
}

// Its permissions on Workloads are the fleet's alone, in
// config/rbac/fleet_role.yaml: manager-role is the hosts' too.

// Reconcile moves one queued run and its Workload on a step.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	run := &agentsv1alpha1.AgentRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone: its quota goes with its Workload, at once (a
			// cluster's garbage collector would take it too, later).
			return ctrl.Result{}, r.deleteWorkload(ctx, req.Namespace, WorkloadName(req.Name))
		}
		return ctrl.Result{}, err
	}
	if agentruns.QueueName(run) == "" {
		return ctrl.Result{}, nil
	}
	wl := &kueueapi.Workload{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: WorkloadName(run.Name)}, wl); {
	case apierrors.IsNotFound(err):
		wl = nil
	case err != nil:
		return ctrl.Result{}, err
	case wl.Labels[agentsv1alpha1.LabelUID] != string(run.UID):
		// An earlier run of the same name left it; its deletion brings
		// the run back (the Workload's watch maps it by name).
		return ctrl.Result{}, r.deleteWorkload(ctx, wl.Namespace, wl.Name)
	}
	switch {
	case !run.DeletionTimestamp.IsZero():
		return ctrl.Result{}, r.deleteWorkload(ctx, run.Namespace, WorkloadName(run.Name))
	case run.Status.Phase.IsFinished():
		return ctrl.Result{}, r.finish(ctx, run, wl)
	case wl == nil && run.Status.Host != "":
		// Labelled after a host took it, which admission refuses (rule:
		// immutable queue) unless both its checks were off: it runs
		// outside any queue.
		return ctrl.Result{}, nil
	case wl == nil:
		return r.createWorkload(ctx, run)
	}
	return ctrl.Result{}, r.follow(ctx, run, wl)
}

// createWorkload submits the run to its queue.
func (r *Reconciler) createWorkload(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	var priority *kueueapi.WorkloadPriorityClass
	if name := run.Labels[agentsv1alpha1.LabelPriorityClass]; name != "" {
		priority = &kueueapi.WorkloadPriorityClass{}
		if err := r.Get(ctx, client.ObjectKey{Name: name}, priority); apierrors.IsNotFound(err) {
			return ctrl.Result{RequeueAfter: r.RecheckPeriod}, r.hold(ctx, run, fmt.Sprintf(
				"the WorkloadPriorityClass %s named by label %s does not exist; the run is queued in LocalQueue %s once it does",
				name, agentsv1alpha1.LabelPriorityClass, agentruns.QueueName(run)))
		} else if err != nil {
			return ctrl.Result{}, err
		}
	}
	wl, err := newWorkload(run, priority)
	if err != nil {
		// The webhook refuses such a run; one from before it is held.
		return ctrl.Result{}, r.hold(ctx, run, err.Error())
	}
	if err := r.Create(ctx, wl); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("creating Workload %s/%s: %w", wl.Namespace, wl.Name, err)
	}
	return ctrl.Result{}, r.hold(ctx, run, queuedMessage(run, wl))
}

// follow carries Kueue's decision over to the run.
func (r *Reconciler) follow(ctx context.Context, run *agentsv1alpha1.AgentRun, wl *kueueapi.Workload) error {
	switch decide(wl) {
	case admitted:
		return r.admit(ctx, run, wl)
	case evicted:
		return r.evict(ctx, run, wl)
	}
	if run.Status.Host != "" {
		// Admitted before, evicted since, and its host has not stopped it
		// yet: the host's own write follows.
		return nil
	}
	return r.hold(ctx, run, queuedMessage(run, wl))
}

// hold keeps a run no host holds Pending, reason Queued, with msg.
func (r *Reconciler) hold(ctx context.Context, run *agentsv1alpha1.AgentRun, msg string) error {
	base := run.DeepCopy()
	setAdmitted(run, metav1.ConditionFalse, agentsv1alpha1.ReasonQueued, msg)
	agentruns.ApplyState(&run.Status, run.Generation, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonQueued, Message: msg})
	return writeStatus(ctx, r.Client, base, run)
}

// admit lets the fleet place the run.
func (r *Reconciler) admit(ctx context.Context, run *agentsv1alpha1.AgentRun, wl *kueueapi.Workload) error {
	base := run.DeepCopy()
	msg := fmt.Sprintf("Kueue admitted the run's Workload %s into ClusterQueue %s", wl.Name, clusterQueue(wl))
	setAdmitted(run, metav1.ConditionTrue, agentsv1alpha1.ReasonAdmitted, msg)
	if run.Status.Host == "" && agentruns.StateOf(&run.Status).Reason == agentsv1alpha1.ReasonQueued {
		agentruns.ApplyState(&run.Status, run.Generation, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonWaitingForHost,
			Message: msg + "; waiting for a host"})
	}
	return writeStatus(ctx, r.Client, base, run)
}

// evict tells the run's host to stop it, and once no host holds it,
// releases its quota and queues it again.
func (r *Reconciler) evict(ctx context.Context, run *agentsv1alpha1.AgentRun, wl *kueueapi.Workload) error {
	base := run.DeepCopy()
	msg := evictedMessage(wl)
	wasEvicted := agentruns.SaysEvicted(run)
	setAdmitted(run, metav1.ConditionFalse, agentsv1alpha1.ReasonEvicted, msg)
	if run.Status.Host == "" && agentruns.StateOf(&run.Status).Reason != agentsv1alpha1.ReasonQueued {
		// Admitted but not placed yet; a run its host stopped says so
		// already.
		agentruns.ApplyState(&run.Status, run.Generation, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonQueued,
			Message: msg + "; the run waits in LocalQueue " + agentruns.QueueName(run) + " again"})
	}
	if err := writeStatus(ctx, r.Client, base, run); err != nil {
		return err
	}
	if !wasEvicted {
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonEvicted, "Evict", "%s", agentruns.TruncateUTF8(msg, agentruns.MaxEventNoteBytes))
	}
	if run.Status.Host != "" {
		return nil // its host stops it; its status write brings the run back
	}
	wlBase := wl.DeepCopy()
	releaseQuota(wl, metav1.NewTime(r.Clock.Now()))
	return patchWorkloadStatus(ctx, r.Client, wlBase, wl)
}

// finish releases a finished run's quota.
func (r *Reconciler) finish(ctx context.Context, run *agentsv1alpha1.AgentRun, wl *kueueapi.Workload) error {
	if wl == nil || meta.IsStatusConditionTrue(wl.Status.Conditions, kueueapi.WorkloadFinished) {
		return nil
	}
	base := wl.DeepCopy()
	markFinished(wl, run, metav1.NewTime(r.Clock.Now()))
	return patchWorkloadStatus(ctx, r.Client, base, wl)
}

func (r *Reconciler) deleteWorkload(ctx context.Context, namespace, name string) error {
	wl := &kueueapi.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := r.Delete(ctx, wl); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting Workload %s/%s: %w", namespace, name, err)
	}
	return nil
}

func clusterQueue(wl *kueueapi.Workload) string {
	if wl.Status.Admission == nil {
		return ""
	}
	return wl.Status.Admission.ClusterQueue
}

func setAdmitted(run *agentsv1alpha1.AgentRun, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&run.Status.Conditions, metav1.Condition{Type: agentsv1alpha1.ConditionAdmitted, Status: status,
		Reason: reason, Message: agentruns.TruncateUTF8(msg, agentruns.MaxMessageBytes), ObservedGeneration: run.Generation})
}

// writeStatus writes the run's status checked against the version read; a
// conflict or a run gone since is left to the watch, which brings the new
// version.
func writeStatus(ctx context.Context, c client.Client, base, run *agentsv1alpha1.AgentRun) error {
	err := agentruns.WriteStatus(ctx, c, base, run)
	if agentruns.Stale(err) {
		return nil
	}
	return err
}

// patchWorkloadStatus merge-patches what changed of the Workload's status,
// checked against the version read, so Kueue's fields this package does not
// declare stay as Kueue wrote them.
func patchWorkloadStatus(ctx context.Context, c client.Client, base, wl *kueueapi.Workload) error {
	err := c.Status().Patch(ctx, wl, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	if agentruns.Stale(err) {
		return nil // the Workload's watch brings the new version
	}
	if err != nil {
		return fmt.Errorf("writing the status of Workload %s/%s: %w", wl.Namespace, wl.Name, err)
	}
	return nil
}

// SetupWithManager watches the queued runs and their Workloads.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.RecheckPeriod == 0 {
		r.RecheckPeriod = time.Minute
	}
	queued := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[agentsv1alpha1.LabelQueueName] != ""
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(queued)).
		Owns(&kueueapi.Workload{}).
		Named("kueue").
		Complete(r)
}
