package host

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/budget"
)

// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentrunbudgets,verbs=get;list;watch

// waitsForBudget tells whether a run pinned here must wait before it is
// claimed: an AgentRunBudget of its namespace counts it, and the fleet has
// not yet recorded its reservation (status.budget). Unpinned runs need no
// check: the fleet reserves before it places them.
func (r *AgentRunReconciler) waitsForBudget(ctx context.Context, run *agentsv1alpha1.AgentRun) (bool, error) {
	if run.Status.Budget != nil {
		return false, nil
	}
	list := &agentsv1alpha1.AgentRunBudgetList{}
	if err := r.List(ctx, list, client.InNamespace(run.Namespace)); err != nil {
		return false, fmt.Errorf("listing AgentRunBudgets in %s: %w", run.Namespace, err)
	}
	for i := range list.Items {
		if budget.Selects(&list.Items[i], run) {
			return true, nil
		}
	}
	return false, nil
}

// withBudgetCap is the run's Claude Code options with the cap its budget
// gave it (status.budget.capUSD) when it sets none of its own, so that the
// CLI stops the run where its reservation ends.
func withBudgetCap(run *agentsv1alpha1.AgentRun) *agentsv1alpha1.ClaudeSpec {
	c := run.Spec.Claude
	if run.Status.Budget == nil || run.Status.Budget.CapUSD == "" || (c != nil && c.MaxBudgetUSD != "") {
		return c
	}
	out := &agentsv1alpha1.ClaudeSpec{}
	if c != nil {
		out = c.DeepCopy()
	}
	out.MaxBudgetUSD = run.Status.Budget.CapUSD
	return out
}
