package controllers

import (
	"testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// A run costs Podman what a careful script spends for the same result
// (create, start, wait, read the output, remove), plus the one inspect that
// reads its exit: Podman is CPU-bound on a busy host, so each further call
// slows every run.
func TestARunMakesTheCallsOfAScriptAndOneInspect(t *testing.T) {
	run := testRun("calls")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	running := h.reconcileUntil("calls", agentsv1alpha1.PhaseRunning)
	if err := h.podman.Exit(running.Status.ContainerName, 0, "done\n"); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("calls", agentsv1alpha1.PhaseSucceeded)
	if done, _, _ := h.reconcile("calls"); len(done.Finalizers) != 0 {
		t.Fatalf("finalizer left after the finished pass: %v", done.Finalizers)
	}
	want := map[string]int{"ImageExists": 0, "SecretExists": 0, "Create": 1, "Start": 1, "Inspect": 1, "Logs": 1, "Remove": 1, "List": 0, "Stop": 0}
	for method, n := range want {
		if got := h.podman.Calls(method); got != n {
			t.Errorf("%s: %d calls, want %d", method, got, n)
		}
	}
}
