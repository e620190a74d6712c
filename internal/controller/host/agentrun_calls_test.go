package host

import (
	"testing"
	"time"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containerevents"
	"github.com/agentrun/agentrun/internal/containers/runtimetest"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// A run costs Podman what a careful script spends for the same result
// (create, start, wait, read the output, remove) and no more: Podman is
// CPU-bound on a busy host, so each further call slows every run. The exit
// comes from the host's wait, whose answer the pass reads instead of
// inspecting the container; the event stream says nothing here.
func TestARunMakesTheCallsOfAScript(t *testing.T) {
	run := agentrunstest.Run("calls")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	exits := containerevents.NewSource(runtimetest.SilentEvents(h.podman), agentrunstest.Host, time.Second)
	h.r.Exits = exits
	go func() { _ = exits.Start(t.Context()) }()

	running := h.reconcileUntil("calls", agentsv1alpha1.PhaseRunning)
	for deadline := time.Now().Add(10 * time.Second); !exits.Awaiting(running.Status.ContainerID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the host does not wait on the running container")
		}
	}
	h.pass("calls") // the pass the launch's own status write brings
	if err := h.podman.Exit(running.Status.ContainerName, 0, "done\n"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, _, ok := exits.Exited(running.Status.ContainerID); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the host's wait did not see the exit")
		}
	}
	h.reconcileUntil("calls", agentsv1alpha1.PhaseSucceeded)
	if done, _, _ := h.reconcile("calls"); len(done.Finalizers) != 0 {
		t.Fatalf("finalizer left after the finished pass: %v", done.Finalizers)
	}
	want := map[string]int{"ImageExists": 0, "SecretExists": 0, "Create": 1, "Start": 1, "Wait": 1, "Inspect": 0, "Logs": 1, "Remove": 1, "List": 0, "Stop": 0}
	for method, n := range want {
		if got := h.podman.Calls(method); got != n {
			t.Errorf("%s: %d calls, want %d", method, got, n)
		}
	}
}
