package fleet

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
)

// ReleaseReconciler takes the finished runs hosts no longer watch. Hosts
// cache only runs without LabelReleased, and set it on their finished runs
// once nothing of them is left on the host; the fleet, which caches every
// run, deletes a released run when its ttlSecondsAfterFinished expires, and
// releases the finished runs no host will: those no host holds (failed
// before placement) and those of a host whose PodmanHost was deleted. It
// takes the label off a run it does not fit (one created with it, or given
// it while unfinished), which its host then watches again.
type ReleaseReconciler struct {
	client.Client
	Clock clock.Clock
}

// Reconcile releases one finished run if no host will, or deletes it once
// released and its TTL expired.
func (r *ReleaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	run := &agentsv1alpha1.AgentRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !run.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	if !agentruns.Released(run) {
		return ctrl.Result{}, r.releaseOrphan(ctx, run)
	}
	if !run.Status.Phase.IsFinished() || agentruns.HasHostFinalizer(run) {
		log.FromContext(ctx).Info("Taking the released label off an AgentRun its host still has to run or clean up", "agentrun", req.NamespacedName)
		patch := client.MergeFrom(run.DeepCopy())
		delete(run.Labels, agentsv1alpha1.LabelReleased)
		return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, run, patch))
	}
	left, ok := agentruns.UntilTTLExpiry(run, r.Clock.Now())
	switch {
	case !ok:
		return ctrl.Result{}, nil
	case left > 0:
		return ctrl.Result{RequeueAfter: left}, nil
	}
	return ctrl.Result{}, agentruns.DeleteExpired(ctx, r.Client, run)
}

// releaseOrphan releases a finished run whose containers are gone and whose
// host is none or removed; a host that is there releases its own.
func (r *ReleaseReconciler) releaseOrphan(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if !run.Status.Phase.IsFinished() || agentruns.HasHostFinalizer(run) {
		return nil
	}
	if run.Status.Host != "" {
		err := r.Get(ctx, client.ObjectKey{Name: run.Status.Host}, &agentsv1alpha1.PodmanHost{})
		if !apierrors.IsNotFound(err) {
			return err // nil: the host is there, and releases its run itself
		}
	}
	patch := client.MergeFrom(run.DeepCopy())
	agentruns.MarkReleased(run)
	return client.IgnoreNotFound(r.Patch(ctx, run, patch))
}

// SetupWithManager reconciles finished runs and released ones.
func (r *ReleaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			run, ok := o.(*agentsv1alpha1.AgentRun)
			return ok && (run.Status.Phase.IsFinished() || agentruns.Released(run))
		}))).
		Named("release").
		Complete(r)
}
