package host

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

func TestRunsCollectorCountsThisHostsRunsByPhase(t *testing.T) {
	mine, other, unclaimed := agentrunstest.Run("mine"), agentrunstest.Run("other"), agentrunstest.Run("unclaimed")
	mine.Status = agentsv1alpha1.AgentRunStatus{Host: agentrunstest.Host, Phase: agentsv1alpha1.PhaseSucceeded}
	other.Status = agentsv1alpha1.AgentRunStatus{Host: "host-b", Phase: agentsv1alpha1.PhaseSucceeded}
	h := newHarness(t, mine, other, unclaimed)

	want := `
# HELP agentrun_runs AgentRuns taken by this host, by phase.
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
