package host

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// A run pinned here that a budget counts is not claimed until the fleet
// recorded its reservation (status.budget); then it launches.
func TestPinnedRunWaitsForItsBudgetReservation(t *testing.T) {
	b := &agentsv1alpha1.AgentRunBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "team-budget", Namespace: "team"},
		Spec:       agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: time.Hour}, MaxCostUSD: "1", DefaultRunCapUSD: "0.25"},
	}
	h := newHarness(t, b, agentrunstest.PlainRun("p", nil))
	run, res, err := h.reconcile("p")
	if err != nil || run.Status.Host != "" || res.RequeueAfter == 0 || len(h.podman.All()) != 0 {
		t.Fatalf("before the fleet reserved: host %q, requeue %v, err %v, %d containers; want unclaimed, rechecked", run.Status.Host, res.RequeueAfter, err, len(h.podman.All()))
	}
	run.Status.Budget = &agentsv1alpha1.RunBudget{Budgets: []string{"team-budget"}, ReservedUSD: "0.25", CapUSD: "0.25"}
	if err := h.r.Status().Update(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	if run := h.reconcileUntil("p", agentsv1alpha1.PhaseRunning); run.Status.Host != agentrunstest.Host {
		t.Fatalf("after the reservation: %+v", run.Status)
	}
}

// The cap a budget gave a run that sets none is passed to Claude Code; a
// run's own cap wins, and a host whose default command is not Claude Code
// gets no Claude flags.
func TestContainerSpecPassesTheBudgetCap(t *testing.T) {
	claude := Defaults{Image: "default:1", Command: []string{"claude", "-p"}}
	run := agentrunstest.PlainRun("cap", func(r *agentsv1alpha1.AgentRun) {
		r.Status.Budget = &agentsv1alpha1.RunBudget{Budgets: []string{"b"}, ReservedUSD: "0.25", CapUSD: "0.25"}
	})
	for _, tc := range []struct {
		name  string
		d     Defaults
		claim *agentsv1alpha1.ClaudeSpec
		want  string
	}{
		{"budget cap", claude, nil, "claude|-p|--max-budget-usd=0.25|--|Review the open PRs"},
		{"other options kept", claude, &agentsv1alpha1.ClaudeSpec{Model: "opus"}, "claude|-p|--model=opus|--max-budget-usd=0.25|--|Review the open PRs"},
		{"own cap wins", claude, &agentsv1alpha1.ClaudeSpec{MaxBudgetUSD: "2"}, "claude|-p|--max-budget-usd=2|--|Review the open PRs"},
		{"not Claude Code", Defaults{Command: []string{"agent"}}, nil, "agent|Review the open PRs"},
	} {
		r := run.DeepCopy()
		r.Spec.Claude = tc.claim
		spec, err := containerSpec(r, tc.d, "h1", 1)
		if err != nil || strings.Join(spec.Command, "|") != tc.want {
			t.Errorf("%s: command %q, %v; want %q", tc.name, spec.Command, err, tc.want)
		}
	}
}
