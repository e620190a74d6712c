// Package budget keeps an AgentRunBudget's ledger: which runs its rolling
// window counts, what they reserved or cost, whether one more run fits and,
// when it does not, when it will. Pure functions of the budget, the run and
// the time; the fleet's controllers (internal/controller/fleet) write what
// they compute.
package budget

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// Selects tells whether a budget counts a run: same namespace, and its
// selector (none: every run) matches the run's labels. An invalid selector
// selects every run: a budget must not stop holding through a typo.
func Selects(b *agentsv1alpha1.AgentRunBudget, run *agentsv1alpha1.AgentRun) bool {
	if b.Namespace != run.Namespace {
		return false
	}
	if b.Spec.Selector == nil {
		return true
	}
	sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
	return err != nil || sel.Matches(labels.Set(run.Labels))
}

// Totals are what a ledger counts.
type Totals struct {
	Spent, Reserved USD
	Runs            int32
}

// totals sums entries.
func totals(entries []agentsv1alpha1.BudgetEntry) Totals {
	var t Totals
	for _, e := range entries {
		cost, _ := ParseUSD(e.CostUSD) // the fleet wrote it with String
		if e.Final {
			t.Spent += cost
		} else {
			t.Reserved += cost
		}
		t.Runs += e.Runs
	}
	return t
}

// window is the budget's window; a budget whose window does not parse
// (admission refuses such) counts nothing out of it.
func window(b *agentsv1alpha1.AgentRunBudget) time.Duration {
	return b.Spec.Window.Duration
}

// Prune drops the entries that left the window by now. It tells whether it
// dropped any.
func Prune(b *agentsv1alpha1.AgentRunBudget, now time.Time) bool {
	before := len(b.Status.Entries)
	b.Status.Entries = slices.DeleteFunc(b.Status.Entries, func(e agentsv1alpha1.BudgetEntry) bool {
		return !e.Time.Add(window(b)).After(now)
	})
	return len(b.Status.Entries) != before
}

// entry is the index of the run's entry, or -1.
func entry(b *agentsv1alpha1.AgentRunBudget, uid types.UID) int {
	return slices.IndexFunc(b.Status.Entries, func(e agentsv1alpha1.BudgetEntry) bool { return e.RunUID == uid })
}

// Holds tells whether the ledger has the run's entry: it reserved already,
// and must not again (a restart between the reservation and the run's own
// status write, or a run that moved to another host).
func Holds(b *agentsv1alpha1.AgentRunBudget, uid types.UID) bool {
	return entry(b, uid) >= 0
}

// Fit tells whether a run reserving runCap fits in a pruned budget now; when
// it does not, why, for the run's message: what is left and when enough
// frees.
func Fit(b *agentsv1alpha1.AgentRunBudget, runCap USD, now time.Time) (bool, string) {
	limit, err := ParseUSD(b.Spec.MaxCostUSD)
	if err != nil {
		return false, fmt.Sprintf("AgentRunBudget %s has an invalid maxCostUSD: %v", b.Name, err)
	}
	t := totals(b.Status.Entries)
	fits := func(t Totals) bool {
		return t.Spent+t.Reserved+runCap <= limit && (b.Spec.MaxRuns == nil || t.Runs < *b.Spec.MaxRuns)
	}
	if fits(t) && (len(b.Status.Entries) < agentsv1alpha1.MaxBudgetEntries || mergeable(b.Status.Entries) >= 0) {
		return true, ""
	}
	left := max(limit-t.Spent-t.Reserved, 0)
	why := fmt.Sprintf("AgentRunBudget %s has %s of %s USD left in its %s window (%s spent, %s reserved by running runs), and this run reserves %s",
		b.Name, left, limit, b.Spec.Window.Duration, t.Spent, t.Reserved, runCap)
	if b.Spec.MaxRuns != nil {
		why += fmt.Sprintf("; %d of its %d runs are counted", t.Runs, *b.Spec.MaxRuns)
	}
	if runCap > limit {
		return false, why + ": the run's cap is more than the whole budget, so it cannot start under it (lower spec.claude.maxBudgetUSD)"
	}
	if at, ok := FreesAt(b, runCap); ok {
		return false, why + "; enough frees by " + at.UTC().Format(time.RFC3339) + ", or sooner as running runs finish under their caps"
	}
	return false, why + "; it waits for running runs to finish"
}

// FreesAt is when, as entries leave the window oldest first, a run
// reserving runCap would fit, counting the reservations still held as
// they are; false when leaving entries do not free enough (running runs
// must finish first).
func FreesAt(b *agentsv1alpha1.AgentRunBudget, runCap USD) (time.Time, bool) {
	limit, _ := ParseUSD(b.Spec.MaxCostUSD)
	t := totals(b.Status.Entries)
	for i, e := range b.Status.Entries {
		t = subtract(t, totals(b.Status.Entries[i:i+1]))
		if t.Spent+t.Reserved+runCap <= limit && (b.Spec.MaxRuns == nil || t.Runs < *b.Spec.MaxRuns) {
			return e.Time.Add(window(b)), true
		}
	}
	return time.Time{}, false
}

func subtract(a, b Totals) Totals {
	return Totals{Spent: a.Spent - b.Spent, Reserved: a.Reserved - b.Reserved, Runs: a.Runs - b.Runs}
}

// Reserve adds the run's entry, dated now, unless the ledger holds it
// already. A full ledger first merges its oldest settled entries.
func Reserve(b *agentsv1alpha1.AgentRunBudget, run *agentsv1alpha1.AgentRun, runCap USD, now time.Time) {
	if Holds(b, run.UID) {
		return
	}
	for len(b.Status.Entries) >= agentsv1alpha1.MaxBudgetEntries {
		i := mergeable(b.Status.Entries)
		if i < 0 {
			return // Fit refuses such a ledger: nothing reserves past it
		}
		b.Status.Entries = merge(b.Status.Entries, i)
	}
	b.Status.Entries = append(b.Status.Entries, agentsv1alpha1.BudgetEntry{
		RunUID: run.UID, RunName: run.Name, Time: metav1.NewTime(now), CostUSD: runCap.String(), Runs: 1,
	})
}

// Release drops the run's entry while it is a reservation: the run did not
// start under it (another budget refused it). It tells whether it dropped
// one.
func Release(b *agentsv1alpha1.AgentRunBudget, uid types.UID) bool {
	i := entry(b, uid)
	if i < 0 || b.Status.Entries[i].Final {
		return false
	}
	b.Status.Entries = slices.Delete(b.Status.Entries, i, i+1)
	return true
}

// Settle replaces the run's reservation with what it cost, keeping the
// entry's time. It tells whether it changed the entry.
func Settle(b *agentsv1alpha1.AgentRunBudget, uid types.UID, cost USD) bool {
	i := entry(b, uid)
	if i < 0 || b.Status.Entries[i].Final {
		return false
	}
	b.Status.Entries[i].CostUSD, b.Status.Entries[i].Final = cost.String(), true
	return true
}

// mergeable is the index of the oldest settled entry followed, at any
// distance, by another settled one, or -1.
func mergeable(entries []agentsv1alpha1.BudgetEntry) int {
	first := -1
	for i, e := range entries {
		if !e.Final {
			continue
		}
		if first >= 0 {
			return first
		}
		first = i
	}
	return -1
}

// merge folds the settled entry at i into the next settled one, which keeps
// its (later) time: the merged cost leaves the window later than the older
// entry would have, never sooner.
func merge(entries []agentsv1alpha1.BudgetEntry, i int) []agentsv1alpha1.BudgetEntry {
	j := i + 1 + slices.IndexFunc(entries[i+1:], func(e agentsv1alpha1.BudgetEntry) bool { return e.Final })
	a, _ := ParseUSD(entries[i].CostUSD)
	b, _ := ParseUSD(entries[j].CostUSD)
	entries[j].CostUSD = (a + b).String()
	entries[j].Runs += entries[i].Runs
	entries[j].RunUID, entries[j].RunName = "", ""
	return slices.Delete(entries, i, i+1)
}
