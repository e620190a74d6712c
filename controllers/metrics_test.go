package controllers

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
)

func TestInstrumentRuntimeCountsCallsAndFailures(t *testing.T) {
	podman := fake.New()
	rt := InstrumentRuntime(podman)
	calls, errs := testutil.ToFloat64(podmanCalls.WithLabelValues("inspect")), testutil.ToFloat64(podmanErrors.WithLabelValues("inspect"))

	if _, err := rt.Inspect(context.Background(), "absent"); err == nil {
		t.Fatal("want not found")
	}
	podman.SetUnavailable(true)
	if _, err := rt.Inspect(context.Background(), "absent"); err == nil {
		t.Fatal("want unavailable")
	}
	if got := testutil.ToFloat64(podmanCalls.WithLabelValues("inspect")) - calls; got != 2 {
		t.Errorf("calls counted = %v, want 2", got)
	}
	if got := testutil.ToFloat64(podmanErrors.WithLabelValues("inspect")) - errs; got != 1 {
		t.Errorf("errors counted = %v, want 1: a missing container is an answer, not an error", got)
	}
	var _ containers.Runtime = rt
}

func TestRunsCollectorCountsThisHostsRunsByPhase(t *testing.T) {
	mine, other, unclaimed := testRun("mine"), testRun("other"), testRun("unclaimed")
	mine.Status = agentsv1alpha1.AgentRunStatus{Host: testHost, Phase: agentsv1alpha1.PhaseSucceeded}
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
	if err := testutil.CollectAndCompare(NewRunsCollector(h.r.Client, testHost), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
