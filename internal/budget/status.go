package budget

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// Refresh writes a pruned ledger's totals, next release and Exhausted
// condition into the budget's status.
func Refresh(b *agentsv1alpha1.AgentRunBudget, now time.Time) {
	t := totals(b.Status.Entries)
	s := &b.Status
	s.ObservedGeneration = b.Generation
	s.SpentUSD, s.ReservedUSD, s.Runs = t.Spent.String(), t.Reserved.String(), t.Runs
	s.NextReleaseTime = nil
	if len(s.Entries) > 0 {
		s.NextReleaseTime = &metav1.Time{Time: s.Entries[0].Time.Add(window(b))}
	}
	defaultCap, _ := ParseUSD(b.Spec.DefaultRunCapUSD) // none: 0, the least a run can reserve
	cond := metav1.Condition{Type: agentsv1alpha1.BudgetConditionExhausted, ObservedGeneration: b.Generation,
		Status: metav1.ConditionFalse, Reason: agentsv1alpha1.ReasonBudgetAvailable, Message: "the budget can take more runs"}
	if ok, why := Fit(b, defaultCap, now); !ok {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, agentsv1alpha1.ReasonBudgetSpent, why
	}
	meta.SetStatusCondition(&s.Conditions, cond)
}

// RunCap is what a run reserves under the budgets that select it: its own
// spec.claude.maxBudgetUSD, else the smallest of their defaultRunCapUSD,
// which its host then passes to Claude Code (hostCap). Without either the
// run has no bound to reserve, and an error says what to set.
func RunCap(run *agentsv1alpha1.AgentRun, budgets []agentsv1alpha1.AgentRunBudget) (runCap USD, hostCap string, err error) {
	if c := run.Spec.Claude; c != nil && c.MaxBudgetUSD != "" {
		runCap, err = ParseUSD(c.MaxBudgetUSD)
		return runCap, "", err
	}
	found := false
	for i := range budgets {
		d, err := ParseUSD(budgets[i].Spec.DefaultRunCapUSD)
		if err == nil && (!found || d < runCap) {
			runCap, found = d, true
		}
	}
	if !found {
		return 0, "", fmt.Errorf("AgentRunBudget %s counts this run, but neither the run's spec.claude.maxBudgetUSD nor the budget's defaultRunCapUSD bounds what it may spend: set one of them",
			budgets[0].Name)
	}
	return runCap, runCap.String(), nil
}
