package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// teamBudget is a budget of 0.05 USD a 1h window over namespace team, whose
// runs reserve 0.02 each unless they set their own cap.
func teamBudget() *agentsv1alpha1.AgentRunBudget {
	return &agentsv1alpha1.AgentRunBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "team-budget", Namespace: "team"},
		Spec:       agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: time.Hour}, MaxCostUSD: "0.05", DefaultRunCapUSD: "0.02"},
	}
}

func plainUnplaced(name string) *agentsv1alpha1.AgentRun {
	run := unplacedRun(name)
	run.Spec.Podman = agentsv1alpha1.PodmanSpec{}
	return run
}

func (f *fleetHarness) budget() *agentsv1alpha1.AgentRunBudget {
	f.t.Helper()
	b := &agentsv1alpha1.AgentRunBudget{}
	f.get(types.NamespacedName{Namespace: "team", Name: "team-budget"}, b)
	return b
}

// finish ends a run as its host would, with the cost its agent reported
// ("" for none), and lets the budget controller settle it.
func (f *fleetHarness) finish(name, cost string) {
	f.t.Helper()
	run := &agentsv1alpha1.AgentRun{}
	f.get(types.NamespacedName{Namespace: "team", Name: name}, run)
	run.Status.Phase = agentsv1alpha1.PhaseSucceeded
	if cost != "" {
		run.Status.AgentResult = &agentsv1alpha1.AgentResult{CostUSD: cost}
	}
	if err := f.c.Status().Update(context.Background(), run); err != nil {
		f.t.Fatal(err)
	}
	f.settle()
}

func (f *fleetHarness) settle() ctrl.Result {
	f.t.Helper()
	res, err := f.budgets.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: "team-budget"}})
	if err != nil {
		f.t.Fatalf("settling the budget: %v", err)
	}
	return res
}

// Runs that fit the budget are placed, each with its reservation; the one
// that does not waits Pending, reason BudgetExceeded, saying what is left
// and when it frees, and is placed once a finished run's reported cost
// replaces its reservation.
func TestBudgetPlacesTheRunsThatFitAndHoldsTheRest(t *testing.T) {
	f := newFleetHarness(t, readyHost("a", 10), teamBudget(), plainUnplaced("r1"), plainUnplaced("r2"), plainUnplaced("r3"))
	for _, n := range []string{"r1", "r2"} {
		if run := f.place(n); run.Status.Host != "a" || run.Status.Budget == nil || run.Status.Budget.CapUSD != "0.02" {
			t.Fatalf("%s: host %q, budget %+v; want placed with the default cap", n, run.Status.Host, run.Status.Budget)
		}
	}
	run := f.place("r3")
	if run.Status.Host != "" || run.Status.Phase != agentsv1alpha1.PhasePending ||
		agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonBudgetExceeded ||
		!strings.Contains(run.Status.Message, "0.01 of 0.05 USD left") {
		t.Fatalf("r3 status = %+v; want Pending, BudgetExceeded, saying 0.01 USD is left", run.Status)
	}
	if b := f.budget(); b.Status.ReservedUSD != "0.04" || b.Status.Runs != 2 || len(b.Status.Entries) != 2 {
		t.Fatalf("budget status = %+v; want two reservations of 0.02", b.Status)
	}
	f.finish("r1", "0.0012")
	if b := f.budget(); b.Status.SpentUSD != "0.0012" || b.Status.ReservedUSD != "0.02" {
		t.Fatalf("after r1 reported 0.0012: budget status = %+v", b.Status)
	}
	if run := f.place("r3"); run.Status.Host != "a" {
		t.Fatalf("r3 not placed once r1's cost replaced its reservation: %+v", run.Status)
	}
}

// A run's entry leaves the budget one window after it reserved, the cost
// of a run deleted by its TTL staying counted until then; the waiting run
// is told when, and placed then.
func TestBudgetWindowReleasesAndKeepsTheCostOfDeletedRuns(t *testing.T) {
	f := newFleetHarness(t, readyHost("a", 10), teamBudget(), plainUnplaced("r1"), plainUnplaced("r2"), plainUnplaced("r3"))
	f.place("r1")
	f.clock.Step(10 * time.Minute)
	f.place("r2")
	f.finish("r1", "0.02")
	f.finish("r2", "0.02")
	// r1 goes (its TTL), before the window passes it.
	if err := f.c.Delete(context.Background(), plainUnplaced("r1")); err != nil {
		t.Fatal(err)
	}
	res := f.settle()
	if b := f.budget(); b.Status.SpentUSD != "0.04" || b.Status.Runs != 2 {
		t.Fatalf("after r1 was deleted: budget status = %+v; want its cost still counted", b.Status)
	}
	if res.RequeueAfter != 50*time.Minute {
		t.Errorf("the budget controller comes back after %v; want when r1's entry leaves the window (50m)", res.RequeueAfter)
	}
	run := f.place("r3")
	if run.Status.Host != "" || !strings.Contains(run.Status.Message, "enough frees by 2026-11-29T11:00:00Z") {
		t.Fatalf("r3 status = %+v; want held until r1's entry leaves the window at 11:00", run.Status)
	}
	f.clock.Step(50 * time.Minute)
	f.settle()
	if b := f.budget(); b.Status.SpentUSD != "0.02" || b.Status.Runs != 1 {
		t.Fatalf("after the window passed r1: budget status = %+v", b.Status)
	}
	if run := f.place("r3"); run.Status.Host != "a" {
		t.Fatalf("r3 not placed once the window freed: %+v", run.Status)
	}
}

// A run that reserved before its fleet process stopped (its ledger entry
// written, its own status not), or that moved to another host, reserves
// once.
func TestBudgetReservesOnceAcrossRestartsAndFailover(t *testing.T) {
	b := teamBudget()
	b.Status.Entries = []agentsv1alpha1.BudgetEntry{{RunUID: "uid-r1", RunName: "r1", CostUSD: "0.02", Runs: 1,
		Time: metav1.NewTime(time.Date(2026, 11, 29, 9, 59, 0, 0, time.UTC))}}
	f := newFleetHarness(t, readyHost("a", 10), b, plainUnplaced("r1"))
	run := f.place("r1")
	if run.Status.Host != "a" || run.Status.Budget == nil {
		t.Fatalf("r1 after the restart: %+v", run.Status)
	}
	// Its host is lost: the fleet clears status.host, and places it again.
	run.Status.Host = ""
	if err := f.c.Status().Update(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	if run := f.place("r1"); run.Status.Host != "a" {
		t.Fatalf("r1 not placed again: %+v", run.Status)
	}
	if got := f.budget(); len(got.Status.Entries) != 1 || got.Status.Runs != 1 || got.Status.ReservedUSD != "0.02" {
		t.Fatalf("budget after a restart and a failover = %+v; want r1 counted once", got.Status)
	}
}

// Two writers that read the same ledger (two fleet processes by mistake)
// cannot both write it: the second is refused, and counts again from the
// first's ledger.
func TestBudgetLedgerWritesAreOptimistic(t *testing.T) {
	f := newFleetHarness(t, teamBudget(), plainUnplaced("r1"), plainUnplaced("r2"))
	first, second := f.budget(), f.budget()
	for _, w := range []struct {
		b   *agentsv1alpha1.AgentRunBudget
		run string
	}{{first, "r1"}, {second, "r2"}} {
		base := w.b.DeepCopy()
		w.b.Status.Entries = append(w.b.Status.Entries, agentsv1alpha1.BudgetEntry{RunUID: types.UID("uid-" + w.run), RunName: w.run,
			CostUSD: "0.02", Runs: 1, Time: metav1.NewTime(f.clock.Now())})
		err := writeLedger(context.Background(), f.c, base, w.b, f.clock.Now())
		if w.b == first && err != nil {
			t.Fatalf("first write: %v", err)
		}
		if w.b == second && !apierrors.IsConflict(err) {
			t.Fatalf("second write from the same version: %v; want a conflict", err)
		}
	}
	if got := f.budget(); len(got.Status.Entries) != 1 {
		t.Fatalf("entries = %+v", got.Status.Entries)
	}
}

// A pinned run is never placed, but its host waits for the fleet's
// reservation (status.budget) before it claims it; one that does not fit
// waits BudgetExceeded like any other, and a run with no cap to reserve
// says what to set.
func TestBudgetAdmitsPinnedRuns(t *testing.T) {
	pinned := agentrunstest.PlainRun("p1", func(r *agentsv1alpha1.AgentRun) { r.UID = "uid-p1" })
	uncapped := agentrunstest.PlainRun("p2", func(r *agentsv1alpha1.AgentRun) { r.UID = "uid-p2" })
	b := teamBudget()
	b.Spec.MaxCostUSD, b.Spec.DefaultRunCapUSD = "1", ""
	pinned.Spec.Claude = &agentsv1alpha1.ClaudeSpec{MaxBudgetUSD: "0.5"}
	f := newFleetHarness(t, b, pinned, uncapped)
	run := f.place("p1")
	if run.Status.Host != "" || run.Status.Budget == nil || run.Status.Budget.ReservedUSD != "0.5" || run.Status.Budget.CapUSD != "" {
		t.Fatalf("pinned run: %+v; want its own cap reserved, no host set by the fleet", run.Status)
	}
	run = f.place("p2")
	if run.Status.Budget != nil || agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonBudgetExceeded ||
		!strings.Contains(run.Status.Message, "defaultRunCapUSD") {
		t.Fatalf("uncapped run: %+v; want BudgetExceeded, naming what to set", run.Status)
	}
	if got := f.budget(); got.Status.ReservedUSD != "0.5" || got.Status.Runs != 1 {
		t.Fatalf("budget = %+v", got.Status)
	}
}

// A run no budget selects is placed as before, with no reservation.
func TestBudgetSelectorLeavesOtherRunsAlone(t *testing.T) {
	b := teamBudget()
	b.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	f := newFleetHarness(t, readyHost("a", 10), b, plainUnplaced("r1"))
	if run := f.place("r1"); run.Status.Host != "a" || run.Status.Budget != nil {
		t.Fatalf("unselected run: %+v", run.Status)
	}
}

// A run deleted before the fleet saw it finish may have spent up to its
// cap: its reservation stays counted, as spent, until the window passes it.
func TestBudgetCountsTheCapOfARunGoneUnsettled(t *testing.T) {
	f := newFleetHarness(t, readyHost("a", 10), teamBudget(), plainUnplaced("r1"))
	f.place("r1")
	if err := f.c.Delete(context.Background(), plainUnplaced("r1")); err != nil {
		t.Fatal(err)
	}
	f.settle()
	if b := f.budget(); b.Status.SpentUSD != "0.02" || b.Status.ReservedUSD != "0" || b.Status.Runs != 1 {
		t.Fatalf("budget status = %+v; want r1's cap counted as spent", b.Status)
	}
}

// A run two budgets count must fit both; while one refuses it, it holds no
// reservation in the other (not even one an earlier pass left there).
func TestBudgetRunMustFitEveryBudgetThatCountsIt(t *testing.T) {
	wide, narrow := teamBudget(), teamBudget()
	narrow.Name, narrow.Spec.MaxCostUSD = "narrow", "0.01"
	wide.Status.Entries = []agentsv1alpha1.BudgetEntry{{RunUID: "uid-r1", RunName: "r1", CostUSD: "0.02", Runs: 1,
		Time: metav1.NewTime(time.Date(2026, 11, 29, 9, 59, 0, 0, time.UTC))}}
	f := newFleetHarness(t, readyHost("a", 10), wide, narrow, plainUnplaced("r1"))
	run := f.place("r1")
	if run.Status.Host != "" || !strings.Contains(run.Status.Message, "AgentRunBudget narrow") {
		t.Fatalf("r1: %+v; want held by budget narrow", run.Status)
	}
	if got := f.budget(); len(got.Status.Entries) != 0 {
		t.Fatalf("the budget that had room holds a reservation of a waiting run: %+v", got.Status.Entries)
	}
	narrow = &agentsv1alpha1.AgentRunBudget{}
	f.get(types.NamespacedName{Namespace: "team", Name: "narrow"}, narrow)
	narrow.Spec.MaxCostUSD = "1"
	if err := f.c.Update(context.Background(), narrow); err != nil {
		t.Fatal(err)
	}
	if run := f.place("r1"); run.Status.Host != "a" || len(run.Status.Budget.Budgets) != 2 {
		t.Fatalf("r1 once both have room: %+v", run.Status)
	}
	if got := f.budget(); got.Status.ReservedUSD != "0.02" {
		t.Fatalf("budget team-budget = %+v", got.Status)
	}
}

// A settle that loses its write to a reservation made meanwhile (the
// placement controller writes the same ledger) comes back for it: the
// budget's own watch passes generation changes only, so no event would
// bring the finished run's cost in until the window moved.
func TestBudgetSettleComesBackAfterAConflict(t *testing.T) {
	f := newFleetHarness(t, readyHost("a", 10), teamBudget(), plainUnplaced("r1"), plainUnplaced("r2"))
	f.place("r1")
	run := &agentsv1alpha1.AgentRun{}
	f.get(types.NamespacedName{Namespace: "team", Name: "r1"}, run)
	run.Status.Phase, run.Status.AgentResult = agentsv1alpha1.PhaseSucceeded, &agentsv1alpha1.AgentResult{CostUSD: "0.01"}
	if err := f.c.Status().Update(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	// r2 reserves between the settle's read and its write.
	conflicting := *f.budgets
	conflicting.Client = interceptor.NewClient(f.c.(client.WithWatch), interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			f.place("r2")
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	res, err := conflicting.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: "team-budget"}})
	if err == nil && res.RequeueAfter == 0 {
		t.Fatalf("a settle that lost its write returned %+v, nil: nothing brings it back", res)
	}
	f.settle()
	if b := f.budget(); b.Status.SpentUSD != "0.01" || b.Status.ReservedUSD != "0.02" || b.Status.Runs != 2 {
		t.Fatalf("budget status = %+v; want r1 settled at 0.01 and r2 reserved", b.Status)
	}
}
