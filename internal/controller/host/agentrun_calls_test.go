package host

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containerevents"
	"github.com/agentrun/agentrun/internal/containers"
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
	exitThroughWait(h, "calls")
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

// exitThroughWait launches the run name with the host's exit source on a
// silent event stream, and ends its container with 0 once the host waits on
// it, returning when the wait has seen the exit; the run's next pass
// records it.
func exitThroughWait(h *harness, name string) {
	h.t.Helper()
	exits := containerevents.NewSource(runtimetest.SilentEvents(h.podman), agentrunstest.Host, time.Second)
	h.r.Exits = exits
	go func() { _ = exits.Start(h.t.Context()) }()

	running := h.reconcileUntil(name, agentsv1alpha1.PhaseRunning)
	for deadline := time.Now().Add(10 * time.Second); !exits.Awaiting(running.Status.ContainerID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatal("the host does not wait on the running container")
		}
	}
	h.pass(name) // the pass the launch's own status write brings
	if err := h.podman.Exit(running.Status.ContainerName, 0, "done\n"); err != nil {
		h.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := exits.Exited(running.Status.ContainerID); ok {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the host's wait did not see the exit")
		}
	}
}

// A finished run's container is removed once: when the finalizer's drop
// meets another writer's change of the run (the fleet's run recorder takes
// its own finalizer off as the run finishes), the pass the newer version
// brings drops the finalizer without removing the container again (make
// bench counted 1.8 removals a run, each a call to a Podman already busy
// with the next runs' launches and exits).
func TestAFinishedRunsContainerIsRemovedOnce(t *testing.T) {
	run := agentrunstest.Run("removed")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	exitThroughWait(h, "removed")
	h.reconcileUntil("removed", agentsv1alpha1.PhaseSucceeded)
	h.r.Runtime = &changedWhileRemoving{Runtime: h.podman, h: h, name: "removed"}
	if done, _, _ := h.reconcile("removed"); len(done.Finalizers) == 0 {
		t.Fatal("the finalizer's drop did not meet the change made while removing: the test does not test what it says")
	}
	if done, _, _ := h.reconcile("removed"); len(done.Finalizers) != 0 {
		t.Fatalf("finalizer left after the pass the change brought: %v", done.Finalizers)
	}
	if got := h.podman.Calls("Remove"); got != 1 {
		t.Errorf("the container was removed %d times, want once", got)
	}
}

// changedWhileRemoving changes the run (a label, as another writer's change)
// while its container is first being removed.
type changedWhileRemoving struct {
	containers.Runtime
	h       *harness
	name    string
	changed bool
}

func (c *changedWhileRemoving) Remove(ctx context.Context, id string) error {
	if c.changed {
		return c.Runtime.Remove(ctx, id)
	}
	c.changed = true
	run := &agentsv1alpha1.AgentRun{}
	if err := c.h.r.Get(ctx, client.ObjectKey{Namespace: "team", Name: c.name}, run); err != nil {
		return err
	}
	patch := client.MergeFrom(run.DeepCopy())
	metav1.SetMetaDataLabel(&run.ObjectMeta, "changed-by", "another-writer")
	if err := c.h.r.Patch(ctx, run, patch); err != nil {
		return err
	}
	return c.Runtime.Remove(ctx, id)
}
