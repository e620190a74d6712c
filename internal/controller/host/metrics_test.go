package host

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containerevents"
	"github.com/agentrun/agentrun/internal/containers"
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

// The host's own time at a run's end is measured from when it learned of the
// container's exit: the wait for the pass that records it, and the status
// write; the output read on its own. A run the host ends itself (a cancel)
// has no exit to wait for: only its output read counts.
func TestRunEndIsMeasuredFromTheExitTheHostLearnedOf(t *testing.T) {
	count := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, stage := range []string{runEndQueued, runEndOutput, runEndWritten} {
			m := &dto.Metric{}
			if err := runEnd.WithLabelValues(stage).(prometheus.Histogram).Write(m); err != nil {
				t.Fatal(err)
			}
			out[stage] = m.GetHistogram().GetSampleCount()
		}
		return out
	}
	ended, cancelled := agentrunstest.Run("ended"), agentrunstest.Run("cancelled")
	ended.Spec.Podman.SecretsEnv, cancelled.Spec.Podman.SecretsEnv = nil, nil
	h := newHarness(t, ended, cancelled)

	before := count()
	exitThroughWait(h, "ended")
	h.reconcileUntil("ended", agentsv1alpha1.PhaseSucceeded)
	want := map[string]uint64{runEndQueued: before[runEndQueued] + 1, runEndOutput: before[runEndOutput] + 1, runEndWritten: before[runEndWritten] + 1}
	if got := count(); !maps.Equal(got, want) {
		t.Errorf("after a run's exit: observations %v, want %v", got, want)
	}

	h.reconcileUntil("cancelled", agentsv1alpha1.PhaseRunning)
	// The cancel's pass reads the output only once the wait has seen the
	// container it stopped end, as it may on a real host.
	h.r.Runtime = logsAfterExitSeen{Runtime: h.podman, exits: h.r.Exits}
	run := &agentsv1alpha1.AgentRun{}
	if err := h.r.Get(t.Context(), client.ObjectKey{Namespace: "team", Name: "cancelled"}, run); err != nil {
		t.Fatal(err)
	}
	run.Spec.Cancel = true
	if err := h.r.Update(t.Context(), run); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("cancelled", agentsv1alpha1.PhaseCancelled)
	want[runEndOutput]++
	if got := count(); !maps.Equal(got, want) {
		t.Errorf("after a cancel: observations %v, want %v", got, want)
	}
}

// logsAfterExitSeen reads a container's output once exits has seen it end.
type logsAfterExitSeen struct {
	containers.Runtime
	exits interface {
		Exited(containerID string) (containerevents.Exit, bool)
	}
}

func (l logsAfterExitSeen) Logs(ctx context.Context, id string, maxBytes int) (string, error) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, ok := l.exits.Exited(id); ok {
			break
		}
	}
	return l.Runtime.Logs(ctx, id, maxBytes)
}
