package host

import (
	"context"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// progressHarness is a harness whose host publishes running output every 10 s,
// with a running run "chatty" whose GH_TOKEN holds value-of-github-token.
func progressHarness(t *testing.T) (*harness, *agentsv1alpha1.AgentRun) {
	t.Helper()
	h := newHarness(t, agentrunstest.Run("chatty"))
	h.r.ProgressPeriod = 10 * time.Second
	h.r.OutputTailBytes = 64
	h.podman.AddSecret("github-token")
	h.podman.AddSecret("gitlab-token")
	return h, h.reconcileUntil("chatty", agentsv1alpha1.PhaseRunning)
}

// publish runs a pass of the host's progress controller on the run, and
// returns the run as stored after it.
func (h *harness) publish(name string) (*agentsv1alpha1.AgentRun, ctrl.Result) {
	h.t.Helper()
	key := client.ObjectKey{Namespace: "team", Name: name}
	res, err := h.r.progressReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: key})
	if err != nil {
		h.t.Fatalf("progress pass: %v", err)
	}
	run := &agentsv1alpha1.AgentRun{}
	if err := h.r.Get(context.Background(), key, run); err != nil {
		h.t.Fatal(err)
	}
	return run, res
}

func TestRunningOutputIsPublishedMaskedEachPeriodWhenItChanged(t *testing.T) {
	h, run := progressHarness(t)
	container := run.Status.ContainerName
	if err := h.podman.Print(container, "cloning with value-of-github-token\n"); err != nil {
		t.Fatal(err)
	}

	run, res := h.publish("chatty")
	if run.Status.Output != "" || h.podman.Calls("Logs") != 0 {
		t.Fatalf("output read before a period passed since the start: %q, %d logs calls", run.Status.Output, h.podman.Calls("Logs"))
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 10*time.Second {
		t.Fatalf("next pass in %s; want it when the period is over", res.RequeueAfter)
	}

	h.clock.Step(10 * time.Second)
	run, _ = h.publish("chatty")
	if want := "cloning with ***\n"; run.Status.Output != want || run.Status.Phase != agentsv1alpha1.PhaseRunning {
		t.Fatalf("after a period: %s with output %q; want Running with %q", run.Status.Phase, run.Status.Output, want)
	}

	// Unchanged output is not written again.
	version := run.ResourceVersion
	h.clock.Step(10 * time.Second)
	run, _ = h.publish("chatty")
	if run.ResourceVersion != version {
		t.Errorf("status written again with the output unchanged")
	}

	// New output waits for the period.
	if err := h.podman.Print(container, "tests pass\n"); err != nil {
		t.Fatal(err)
	}
	logs := h.podman.Calls("Logs")
	h.clock.Step(5 * time.Second)
	run, _ = h.publish("chatty")
	if h.podman.Calls("Logs") != logs || run.Status.Output != "cloning with ***\n" {
		t.Fatalf("output read %d times within the period; status %q", h.podman.Calls("Logs")-logs, run.Status.Output)
	}
	h.clock.Step(5 * time.Second)
	run, _ = h.publish("chatty")
	if want := "cloning with ***\ntests pass\n"; run.Status.Output != want {
		t.Fatalf("output %q, want %q", run.Status.Output, want)
	}

	if err := h.podman.Exit(container, 0, "done value-of-gitlab-token\n"); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("chatty", agentsv1alpha1.PhaseSucceeded)
	if want := "cloning with ***\ntests pass\ndone ***\n"; run.Status.Output != want {
		t.Errorf("final output %q, want %q", run.Status.Output, want)
	}
	// The final output is masked with the values progress read.
	if n := h.podman.Calls("SecretValues"); n != 1 {
		t.Errorf("the secret values were read %d times for one container; want once", n)
	}
}

func TestRunningOutputStaysOnTheHostWhenProgressOrCaptureIsOff(t *testing.T) {
	for name, edit := range map[string]func(*AgentRunReconciler){
		"--progress-period=0":    func(r *AgentRunReconciler) { r.ProgressPeriod = 0 },
		"--capture-output=false": func(r *AgentRunReconciler) { r.DiscardOutput = true },
	} {
		t.Run(name, func(t *testing.T) {
			h, run := progressHarness(t)
			edit(h.r)
			if h.r.progressReconciler() != nil {
				t.Fatal("the host would run a progress controller")
			}
			if err := h.podman.Print(run.Status.ContainerName, "working\n"); err != nil {
				t.Fatal(err)
			}
			h.clock.Step(time.Minute)
			run, _, _ = h.reconcile("chatty")
			if run.Status.Output != "" || h.podman.Calls("Logs") != 0 {
				t.Errorf("output %q with %d logs calls; want none while running", run.Status.Output, h.podman.Calls("Logs"))
			}
		})
	}
}

func TestProgressForgetsARunThatStoppedRunning(t *testing.T) {
	h, run := progressHarness(t)
	h.clock.Step(10 * time.Second)
	h.publish("chatty")
	key := client.ObjectKeyFromObject(run)
	if h.r.progress.of(key, run.Status.ContainerID).redactor == nil {
		t.Fatal("no secret values held after a read")
	}
	if err := h.podman.Exit(run.Status.ContainerName, 0, "done\n"); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("chatty", agentsv1alpha1.PhaseSucceeded)
	// The AgentRun controller forgot it with its finished pass. A progress
	// pass still in flight then may have put it back: the progress pass of
	// the finished run drops it again.
	h.r.progress.put(key, progressRead{containerID: run.Status.ContainerID, at: h.clock.Now()})
	if _, res := h.publish("chatty"); res.RequeueAfter != 0 {
		t.Errorf("a finished run is looked at again in %s", res.RequeueAfter)
	}
	if _, held := h.r.progress.byRun[key]; held {
		t.Error("what was read of a finished run, secret values included, is still held")
	}
}
