package fleet

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// RunRecordReconciler deletes the AgentRunRecords nothing needs any more: a
// record goes once no AgentRun of its name has existed for Retention. (A run
// of the same name stands for the record's manifest, having ended AlreadyRan,
// or replaces the record when it finishes; the cache's copy of a finished run
// lacks what its key hashes, so names are compared, not keys.) It runs with
// the fleet, once per cluster.
type RunRecordReconciler struct {
	client.Client
	Retention time.Duration
	Clock     clock.Clock

	// goneSince holds, by record, when this process first saw that no run
	// of the record's name and manifest exists. It is not stored: after a
	// restart the count starts again, which keeps a record longer, never
	// shorter, than Retention.
	goneSince sync.Map
}

// Reconcile keeps or deletes one record.
func (g *RunRecordReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rec := &agentsv1alpha1.AgentRunRecord{}
	if err := g.Get(ctx, req.NamespacedName, rec); err != nil {
		if apierrors.IsNotFound(err) {
			g.goneSince.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	run := &agentsv1alpha1.AgentRun{}
	err := g.Get(ctx, req.NamespacedName, run)
	switch {
	case err == nil:
		// Its deletion brings the record back here.
		g.goneSince.Delete(req.NamespacedName)
		return ctrl.Result{}, nil
	case client.IgnoreNotFound(err) != nil:
		return ctrl.Result{}, err
	}
	now := g.Clock.Now()
	since, _ := g.goneSince.LoadOrStore(req.NamespacedName, now)
	expiry := since.(time.Time).Add(g.Retention)
	if rec.Spec.CompletionTime != nil && rec.Spec.CompletionTime.Add(g.Retention).After(expiry) {
		expiry = rec.Spec.CompletionTime.Add(g.Retention)
	}
	if left := expiry.Sub(now); left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	// The precondition keeps a record a host has just rewritten for a newer
	// run.
	if err := g.Delete(ctx, rec, client.Preconditions{ResourceVersion: &rec.ResourceVersion}); err != nil &&
		!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return ctrl.Result{}, err
	}
	log.FromContext(ctx).Info("Deleted the record of a run gone for the retention period", "record", req.NamespacedName, "retention", g.Retention)
	g.goneSince.Delete(req.NamespacedName)
	return ctrl.Result{}, nil
}

// SetupWithManager reconciles each record, and the record of each run that
// changes or goes.
func (g *RunRecordReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRunRecord{}).
		Watches(&agentsv1alpha1.AgentRun{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}}
		})).
		Named("agentrunrecord").
		Complete(g)
}
