package fleet

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/budget"
)

// conflictRetry is how soon a settle that lost its write to a reservation
// reads the ledger again: long enough for the reservation to reach the cache.
const conflictRetry = 200 * time.Millisecond

// BudgetReconciler keeps each AgentRunBudget's ledger: it replaces a
// finished run's reservation with the cost the run reported, drops the
// entries that left the window, and writes the totals. The placement
// controller adds the reservations; both write with an optimistic lock.
type BudgetReconciler struct {
	client.Client
	// Reader reads from the API server, to tell a run that is gone from
	// one the cache has not seen yet.
	Reader client.Reader
	Clock  clock.Clock
}

// Reconcile settles and prunes one budget, and comes back when its oldest
// entry leaves the window.
func (r *BudgetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &agentsv1alpha1.AgentRunBudget{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := b.DeepCopy()
	for _, e := range base.Status.Entries {
		if e.Final || e.RunUID == "" {
			continue
		}
		cost, settled, err := r.costOf(ctx, b.Namespace, e)
		if err != nil {
			return ctrl.Result{}, err
		}
		if settled {
			budget.Settle(b, e.RunUID, cost)
		}
	}
	now := r.Clock.Now()
	if err := writeLedger(ctx, r.Client, base, b, now); err != nil {
		if apierrors.IsConflict(err) {
			// Placement reserved meanwhile. The budget's own watch passes
			// generation changes only, so no event brings the new version:
			// come back for it, or the settle waits for the next run's end.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if b.Status.NextReleaseTime == nil {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(b.Status.NextReleaseTime.Sub(now), time.Second)}, nil
}

// costOf tells whether an entry's run has settled, and at what cost: a
// finished run at the cost it reported (0 without one); a run that is gone
// (deleted before the fleet saw it finish) at its whole reservation, since
// it may have spent up to its cap.
func (r *BudgetReconciler) costOf(ctx context.Context, namespace string, e agentsv1alpha1.BudgetEntry) (budget.USD, bool, error) {
	key := types.NamespacedName{Namespace: namespace, Name: e.RunName}
	run := &agentsv1alpha1.AgentRun{}
	err := r.Get(ctx, key, run)
	if apierrors.IsNotFound(err) {
		err = r.Reader.Get(ctx, key, run)
	}
	switch {
	case apierrors.IsNotFound(err) || (err == nil && run.UID != e.RunUID):
		reserved, _ := budget.ParseUSD(e.CostUSD)
		return reserved, true, nil
	case err != nil:
		return 0, false, err
	case !run.Status.Phase.IsFinished():
		return 0, false, nil
	}
	if res := run.Status.AgentResult; res != nil && res.CostUSD != "" {
		cost, err := budget.ParseUSD(res.CostUSD)
		if err != nil {
			log.FromContext(ctx).Info("AgentRun reported a cost that does not parse; counting its reservation", "agentrun", key, "costUSD", res.CostUSD)
			cost, _ = budget.ParseUSD(e.CostUSD)
		}
		return cost, true, nil
	}
	return 0, true, nil
}

// SetupWithManager watches budgets, and the runs they count as they finish
// or go.
func (r *BudgetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRunBudget{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&agentsv1alpha1.AgentRun{}, handler.EnqueueRequestsFromMapFunc(countingBudgets), builder.WithPredicates(settles())).
		Named("agentrunbudget").
		Complete(r)
}

// countingBudgets are the budgets a run reserved in.
func countingBudgets(_ context.Context, o client.Object) []reconcile.Request {
	run, ok := o.(*agentsv1alpha1.AgentRun)
	if !ok || run.Status.Budget == nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(run.Status.Budget.Budgets))
	for _, name := range run.Status.Budget.Budgets {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: run.Namespace, Name: name}})
	}
	return out
}

// settles passes the events that settle a reservation: a run that
// finishes, or goes.
func settles() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return finished(e.Object) },
		GenericFunc: func(event.GenericEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !finished(e.ObjectOld) && finished(e.ObjectNew)
		},
	}
}

func finished(o client.Object) bool {
	run, ok := o.(*agentsv1alpha1.AgentRun)
	return ok && run.Status.Phase.IsFinished()
}
