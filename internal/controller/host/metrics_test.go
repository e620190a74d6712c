package host

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/egress"
)

func TestRunsCollectorCountsThisHostsRunsByPhase(t *testing.T) {
	mine, other, unclaimed := agentrunstest.Run("mine"), agentrunstest.Run("other"), agentrunstest.Run("unclaimed")
	mine.Status = agentsv1alpha1.AgentRunStatus{Host: agentrunstest.Host, Phase: agentsv1alpha1.PhaseSucceeded}
	other.Status = agentsv1alpha1.AgentRunStatus{Host: "host-b", Phase: agentsv1alpha1.PhaseSucceeded}
	// A released run is out of a host's cache; a process running the
	// fleet too holds it, and counts it as a host would: not at all.
	released := agentrunstest.Run("released")
	released.Status = mine.Status
	agentruns.MarkReleased(released)
	h := newHarness(t, mine, other, unclaimed, released)

	want := `
# HELP agentrun_runs AgentRuns this host holds (taken, not released), by phase.
# TYPE agentrun_runs gauge
agentrun_runs{host="host-a",phase="Cancelled"} 0
agentrun_runs{host="host-a",phase="Failed"} 0
agentrun_runs{host="host-a",phase="Pending"} 0
agentrun_runs{host="host-a",phase="Running"} 0
agentrun_runs{host="host-a",phase="Succeeded"} 1
`
	if err := testutil.CollectAndCompare(NewRunsCollector(h.r.Client, agentrunstest.Host), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// Each attempt through a run's proxy is counted by host and outcome, and a
// refusal is told in the run's EgressDenied event.
func TestEgressAttemptsAreCountedByHostAndOutcome(t *testing.T) {
	h := newHarness(t)
	p := &proxiedRun{uid: "u", ref: agentrunstest.Run("r")}
	host := "host-metrics"
	h.r.egress.host = host
	for _, a := range []egress.Attempt{
		{Outcome: egress.Allowed, Target: "github.com:443"},
		{Outcome: egress.RefusedName, Target: "evil.test:443", Reason: "not on the run's egress list"},
		{Outcome: egress.RefusedAddress, Target: "metadata.test:80"},
		{Outcome: egress.OverLimit},
	} {
		h.r.egress.observed(p, a)
	}
	for outcome, want := range map[string]float64{"allowed": 1, "refused_name": 1, "refused_address": 1, "over_limit": 1} {
		if got := testutil.ToFloat64(egressConnections.WithLabelValues(host, outcome)); got != want {
			t.Errorf("agentrun_egress_connections_total{outcome=%q} = %g, want %g", outcome, got, want)
		}
	}
	if got := h.events(); len(got) != 1 || !strings.Contains(got[0], "Warning EgressDenied the egress proxy refused 1 connection(s) of this run: evil.test:443 (1)") {
		t.Errorf("events %q; want one EgressDenied for the first refusal, the others within the minute held back", got)
	}
}
