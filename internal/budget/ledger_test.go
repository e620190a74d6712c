package budget

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func testBudget(maxCost string, maxRuns *int32) *agentsv1alpha1.AgentRunBudget {
	return &agentsv1alpha1.AgentRunBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "ns"},
		Spec:       agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: time.Hour}, MaxCostUSD: maxCost, MaxRuns: maxRuns},
	}
}

func testRun(uid string) *agentsv1alpha1.AgentRun {
	return &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Name: "run-" + uid, Namespace: "ns", UID: types.UID(uid)}}
}

func mustUSD(t *testing.T, s string) USD {
	t.Helper()
	u, err := ParseUSD(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A run fits while spent + reserved + its cap stays within maxCostUSD, and
// the runs counted stay under maxRuns; a refusal says what is left and when
// enough frees.
func TestFitReserveSettle(t *testing.T) {
	b := testBudget("0.05", nil)
	cap2 := mustUSD(t, "0.02")
	for i, want := range []bool{true, true, false} {
		ok, why := Fit(b, cap2, t0)
		if ok != want {
			t.Fatalf("run %d: Fit = %v (%s), want %v", i, ok, why, want)
		}
		if ok {
			Reserve(b, testRun(fmt.Sprint(i)), cap2, t0.Add(time.Duration(i)*time.Minute))
		} else if !strings.Contains(why, "0.01 of 0.05 USD left") || !strings.Contains(why, "0.04 reserved") {
			t.Errorf("refusal %q does not say what is left", why)
		}
	}
	// Reserving twice (a restart, a failover) counts once.
	Reserve(b, testRun("0"), cap2, t0.Add(30*time.Minute))
	if got := totals(b.Status.Entries); got.Reserved != 2*cap2 || got.Runs != 2 {
		t.Fatalf("totals after a second reservation of one run = %+v", got)
	}
	// The first run reports 0.0012: its reservation becomes that cost,
	// and the third run fits.
	if !Settle(b, "0", mustUSD(t, "0.0012")) {
		t.Fatal("Settle did not change the entry")
	}
	if ok, why := Fit(b, cap2, t0); !ok {
		t.Fatalf("after settling, Fit refused: %s", why)
	}
	Refresh(b, t0)
	if b.Status.SpentUSD != "0.0012" || b.Status.ReservedUSD != "0.02" || b.Status.Runs != 2 || !b.Status.NextReleaseTime.Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("status = %+v", b.Status)
	}
}

// Entries leave the rolling window one window after they reserved; until
// then a settled cost still counts, whether or not the run still exists.
func TestPruneAndFreesAt(t *testing.T) {
	b := testBudget("0.05", ptr.To[int32](2))
	Reserve(b, testRun("a"), mustUSD(t, "0.03"), t0)
	Settle(b, "a", mustUSD(t, "0.03"))
	Reserve(b, testRun("b"), mustUSD(t, "0.01"), t0.Add(10*time.Minute))
	if ok, why := Fit(b, mustUSD(t, "0.01"), t0.Add(20*time.Minute)); ok || !strings.Contains(why, "2 of its 2 runs") {
		t.Fatalf("maxRuns 2 with 2 counted: Fit = %v, %q", ok, why)
	}
	at, ok := FreesAt(b, mustUSD(t, "0.02"))
	if !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("FreesAt = %v, %v; want the first entry's end", at, ok)
	}
	if Prune(b, t0.Add(time.Hour-time.Second)) {
		t.Error("pruned an entry still in the window")
	}
	if !Prune(b, t0.Add(time.Hour)) || len(b.Status.Entries) != 1 || b.Status.Entries[0].RunUID != "b" {
		t.Errorf("entries after the first left the window: %+v", b.Status.Entries)
	}
	// A cap more than the whole budget never fits, and says so.
	if ok, why := Fit(b, mustUSD(t, "1"), t0); ok || !strings.Contains(why, "more than the whole budget") {
		t.Errorf("a cap above maxCostUSD: Fit = %v, %q", ok, why)
	}
}

// A full ledger merges its oldest settled entries, dated by the later one,
// and keeps every run and dollar counted; one full of reservations refuses.
func TestLedgerStaysBounded(t *testing.T) {
	b := testBudget("1000", nil)
	for i := range agentsv1alpha1.MaxBudgetEntries + 10 {
		uid := types.UID(fmt.Sprint(i))
		Reserve(b, testRun(string(uid)), mustUSD(t, "0.5"), t0.Add(time.Duration(i)*time.Second))
		Settle(b, uid, mustUSD(t, "0.25"))
	}
	got := totals(b.Status.Entries)
	if len(b.Status.Entries) != agentsv1alpha1.MaxBudgetEntries || got.Runs != agentsv1alpha1.MaxBudgetEntries+10 || got.Spent != mustUSD(t, "66.5") {
		t.Fatalf("%d entries, totals %+v", len(b.Status.Entries), got)
	}
	if !b.Status.Entries[0].Time.Time.Equal(t0.Add(10*time.Second)) || b.Status.Entries[0].Runs != 11 {
		t.Errorf("merged entry = %+v: the merge must keep the later time", b.Status.Entries[0])
	}

	full := testBudget("1000", nil)
	for i := range agentsv1alpha1.MaxBudgetEntries {
		Reserve(full, testRun(fmt.Sprint(i)), mustUSD(t, "0.5"), t0)
	}
	if ok, _ := Fit(full, mustUSD(t, "0.5"), t0); ok {
		t.Error("a ledger full of reservations took one more")
	}
}

func TestRunCap(t *testing.T) {
	budgets := []agentsv1alpha1.AgentRunBudget{*testBudget("5", nil), *testBudget("5", nil)}
	budgets[0].Spec.DefaultRunCapUSD, budgets[1].Spec.DefaultRunCapUSD = "0.5", "0.25"
	run := testRun("a")
	if c, host, err := RunCap(run, budgets); err != nil || c != mustUSD(t, "0.25") || host != "0.25" {
		t.Errorf("RunCap without the run's own cap = %s, %q, %v; want the smallest default, passed to the host", c, host, err)
	}
	run.Spec.Claude = &agentsv1alpha1.ClaudeSpec{MaxBudgetUSD: "2"}
	if c, host, err := RunCap(run, budgets); err != nil || c != mustUSD(t, "2") || host != "" {
		t.Errorf("RunCap with the run's own cap = %s, %q, %v", c, host, err)
	}
	run.Spec.Claude = nil
	none := []agentsv1alpha1.AgentRunBudget{*testBudget("5", nil)}
	if _, _, err := RunCap(run, none); err == nil || !strings.Contains(err.Error(), "defaultRunCapUSD") {
		t.Errorf("RunCap without any cap: %v", err)
	}
}
