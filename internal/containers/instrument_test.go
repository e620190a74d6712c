package containers_test

import (
	"context"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
)

// counted reads a counter of the manager's registry for one operation.
func counted(t *testing.T, name, operation string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" && l.GetValue() == operation {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestInstrumentCountsCallsAndFailures(t *testing.T) {
	podman := fake.New()
	rt := containers.Instrument(podman)
	calls, errs := counted(t, "agentrun_podman_api_calls_total", "inspect"), counted(t, "agentrun_podman_api_errors_total", "inspect")

	if _, err := rt.Inspect(context.Background(), "absent"); err == nil {
		t.Fatal("want not found")
	}
	podman.SetUnavailable(true)
	if _, err := rt.Inspect(context.Background(), "absent"); err == nil {
		t.Fatal("want unavailable")
	}
	if got := counted(t, "agentrun_podman_api_calls_total", "inspect") - calls; got != 2 {
		t.Errorf("calls counted = %v, want 2", got)
	}
	if got := counted(t, "agentrun_podman_api_errors_total", "inspect") - errs; got != 1 {
		t.Errorf("errors counted = %v, want 1: a missing container is an answer, not an error", got)
	}
}
