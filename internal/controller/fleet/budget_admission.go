package fleet

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/budget"
)

// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentrunbudgets,verbs=get;list;watch

// The fleet's writes to agentrunbudgets/status are granted in
// config/rbac/fleet_role.yaml, not by a marker: manager-role is the hosts'
// too, and a host that wrote a ledger could free its own runs' spend.

// admission is the outcome of checking a run against its namespace's
// budgets.
type admission struct {
	// admitted: the run may be given a host; Budget is what to record on it
	// (nil when no budget selects it).
	admitted bool
	budget   *agentsv1alpha1.RunBudget
	// why and wait, when not admitted: the run's message, and how long
	// until it may fit (0: unknown, recheck).
	why  string
	wait time.Duration
}

// selectingBudgets lists the AgentRunBudgets of the run's namespace that
// count it.
func selectingBudgets(ctx context.Context, c client.Reader, run *agentsv1alpha1.AgentRun) ([]agentsv1alpha1.AgentRunBudget, error) {
	list := &agentsv1alpha1.AgentRunBudgetList{}
	if err := c.List(ctx, list, client.InNamespace(run.Namespace)); err != nil {
		return nil, fmt.Errorf("listing AgentRunBudgets in %s: %w", run.Namespace, err)
	}
	out := list.Items[:0]
	for i := range list.Items {
		if budget.Selects(&list.Items[i], run) {
			out = append(out, list.Items[i])
		}
	}
	return out, nil
}

// admit reserves the run's cap in every budget that selects it, or in none:
// the run starts only if it fits them all. Each budget's status is written
// with the resourceVersion read, so two writers (two fleet processes by
// mistake) never both count into one version; a conflict is returned, and
// the run comes back when the budget's new version reaches the cache. A run that reserved already (a restart between the
// reservation and the run's own status write) is not counted again.
func (p *PlacementReconciler) admit(ctx context.Context, run *agentsv1alpha1.AgentRun) (admission, error) {
	if run.Status.Budget != nil || run.Spec.Cancel {
		return admission{admitted: true, budget: run.Status.Budget}, nil
	}
	budgets, err := selectingBudgets(ctx, p.Client, run)
	if err != nil || len(budgets) == 0 {
		return admission{admitted: err == nil}, err
	}
	runCap, hostCap, err := budget.RunCap(run, budgets)
	if err != nil {
		return admission{why: err.Error()}, p.release(ctx, run, budgets)
	}
	now := p.Clock.Now()
	read := make([]agentsv1alpha1.AgentRunBudget, len(budgets))
	for i := range budgets {
		budgets[i].DeepCopyInto(&read[i])
	}
	for i := range budgets {
		b := &budgets[i]
		budget.Prune(b, now)
		if budget.Holds(b, run.UID) {
			continue
		}
		if ok, why := budget.Fit(b, runCap, now); !ok {
			out := admission{why: why}
			if at, ok := budget.FreesAt(b, runCap); ok {
				out.wait = at.Sub(now)
			}
			return out, p.release(ctx, run, read)
		}
	}
	names := make([]string, 0, len(budgets))
	for i := range budgets {
		b := &budgets[i]
		budget.Reserve(b, run, runCap, now)
		if err := writeLedger(ctx, p.Client, &read[i], b, now); err != nil {
			return admission{}, err
		}
		names = append(names, b.Name)
	}
	return admission{admitted: true, budget: &agentsv1alpha1.RunBudget{Budgets: names, ReservedUSD: runCap.String(), CapUSD: hostCap}}, nil
}

// release drops what the run reserved in budgets that took it before one
// refused it: a run that waits holds no reservation.
func (p *PlacementReconciler) release(ctx context.Context, run *agentsv1alpha1.AgentRun, budgets []agentsv1alpha1.AgentRunBudget) error {
	now := p.Clock.Now()
	for i := range budgets {
		b := budgets[i].DeepCopy()
		if budget.Release(b, run.UID) {
			if err := writeLedger(ctx, p.Client, &budgets[i], b, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeLedger refreshes the totals of b's changed ledger and writes its
// status over base's, the budget as read, checked against base's
// resourceVersion; nothing when nothing changed.
func writeLedger(ctx context.Context, c client.Client, base, b *agentsv1alpha1.AgentRunBudget, now time.Time) error {
	budget.Prune(b, now)
	budget.Refresh(b, now)
	if equality.Semantic.DeepEqual(base.Status, b.Status) {
		return nil
	}
	if err := c.Status().Patch(ctx, b, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("writing the ledger of AgentRunBudget %s/%s: %w", b.Namespace, b.Name, err)
	}
	return nil
}
