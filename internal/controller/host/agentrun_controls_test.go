package host

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/policy"
)

func TestDeadlineStopsTheContainer(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("slow", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Timeout = &metav1.Duration{Duration: 20 * time.Millisecond}
	}))
	h.reconcileUntil("slow", agentsv1alpha1.PhaseRunning)
	h.clock.Step(30 * time.Millisecond)
	run := h.reconcileUntil("slow", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed); c.Reason != agentsv1alpha1.ReasonDeadlineExceeded {
		t.Fatalf("Failed = %+v, want DeadlineExceeded", c)
	}
	if h.podman.Calls("Stop") != 1 || run.Status.ExitCode == nil || run.Status.CompletionTime == nil || run.Status.Duration == "" {
		t.Fatalf("want the container stopped and its result recorded: stops=%d status=%+v", h.podman.Calls("Stop"), run.Status)
	}
}

func TestCancelStopsARunningRun(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("stop-me", nil))
	run := h.reconcileUntil("stop-me", agentsv1alpha1.PhaseRunning)
	patch := client.MergeFrom(run.DeepCopy())
	run.Spec.Cancel = true
	if err := h.r.Patch(context.Background(), run, patch); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("stop-me", agentsv1alpha1.PhaseCancelled)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed); c.Status != metav1.ConditionTrue || c.Reason != agentsv1alpha1.ReasonCancelled {
		t.Fatalf("Failed = %+v, want True with reason Cancelled", c)
	}
	if h.podman.Calls("Stop") != 1 || *run.Status.ExitCode != 143 {
		t.Fatalf("want the container stopped, got %d stops, status %+v", h.podman.Calls("Stop"), run.Status)
	}
}

func TestCancelBeforeStartNeedsNoContainer(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("never", func(r *agentsv1alpha1.AgentRun) { r.Spec.Cancel = true }))
	run := h.reconcileUntil("never", agentsv1alpha1.PhaseCancelled)
	if h.podman.Calls("Create") != 0 || run.Status.CompletionTime == nil {
		t.Fatalf("a run cancelled before it started must not start: %+v", run.Status)
	}
}

func TestRetrySucceedsOnSecondAttempt(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("flaky", func(r *agentsv1alpha1.AgentRun) { r.Spec.BackoffLimit = ptr.To[int32](2) }))
	run := h.reconcileUntil("flaky", agentsv1alpha1.PhaseRunning)
	first := run.Status.ContainerName
	if err := h.podman.Exit(first, 3, "try again\n"); err != nil {
		t.Fatal(err)
	}
	run, _, _ = h.reconcile("flaky")
	if run.Status.Phase != agentsv1alpha1.PhasePending || agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonBackOff {
		t.Fatalf("between attempts the run must be Pending with reason BackOff: %s %+v", run.Status.Phase, agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted))
	}
	h.clock.Step(5 * time.Millisecond)
	run = h.reconcileUntil("flaky", agentsv1alpha1.PhaseRunning)
	if run.Status.Attempts != 2 || run.Status.ContainerName == first || !strings.HasSuffix(run.Status.ContainerName, "-2") {
		t.Fatalf("want attempt 2 in a new container, got %+v", run.Status)
	}
	if _, ok := h.podman.SpecOf(first); ok {
		t.Errorf("the failed attempt's container should be removed")
	}
	if err := h.podman.Exit(run.Status.ContainerName, 0, "ok\n"); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("flaky", agentsv1alpha1.PhaseSucceeded)
	if *run.Status.ExitCode != 0 || run.Status.Attempts != 2 || run.Status.Output != "ok\n" {
		t.Fatalf("the last attempt's result must stand: %+v", run.Status)
	}
}

func TestRetriesExhausted(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("bad", func(r *agentsv1alpha1.AgentRun) { r.Spec.BackoffLimit = ptr.To[int32](1) }))
	for attempt := 1; attempt <= 2; attempt++ {
		run := h.reconcileUntil("bad", agentsv1alpha1.PhaseRunning)
		if err := h.podman.Exit(run.Status.ContainerName, 2, "no\n"); err != nil {
			t.Fatal(err)
		}
		h.pass("bad")
		h.clock.Step(5 * time.Millisecond)
	}
	run := h.reconcileUntil("bad", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed); c.Reason != agentsv1alpha1.ReasonBackoffLimitExceeded || run.Status.Attempts != 2 {
		t.Fatalf("Failed = %+v after %d attempts", c, run.Status.Attempts)
	}
}

func TestTTLDeletesFinishedRun(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("short-lived", func(r *agentsv1alpha1.AgentRun) { r.Spec.TTLSecondsAfterFinished = ptr.To[int32](0) }))
	run := h.reconcileUntil("short-lived", agentsv1alpha1.PhaseRunning)
	if err := h.podman.Exit(run.Status.ContainerName, 0, ""); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("short-lived", agentsv1alpha1.PhaseSucceeded)
	for range 3 {
		h.pass("short-lived")
	}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{}); err == nil {
		t.Fatalf("the run should be deleted once its TTL expired")
	}
	if len(h.podman.All()) != 0 {
		t.Fatalf("its container should be gone too")
	}
}

func TestCapacityHoldsRunsInCreationOrder(t *testing.T) {
	older := agentrunstest.PlainRun("older", nil)
	older.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Minute))
	newer := agentrunstest.PlainRun("newer", nil)
	newer.CreationTimestamp = metav1.NewTime(time.Now())
	newer.UID = "ffff0000-0000-0000-0000-000000000000"
	h := newHarness(t, older, newer)
	h.r.MaxConcurrentRuns = 1

	// The newer run is reconciled first, yet the older one gets the slot.
	run, _, _ := h.reconcile("newer")
	if run.Status.Host != "" || agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonWaitingForCapacity {
		t.Fatalf("newer: %+v", run.Status)
	}
	olderRun := h.reconcileUntil("older", agentsv1alpha1.PhaseRunning)
	run, _, _ = h.reconcile("newer")
	if run.Status.Phase != agentsv1alpha1.PhasePending || run.Status.Host != "" {
		t.Fatalf("a full host must not claim or start the newer run: %+v", run.Status)
	}
	if err := h.podman.Exit(olderRun.Status.ContainerName, 0, ""); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("older", agentsv1alpha1.PhaseSucceeded)
	h.reconcileUntil("newer", agentsv1alpha1.PhaseRunning)
}

func TestPolicyHardensEveryContainer(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("hard", nil))
	run := h.reconcileUntil("hard", agentsv1alpha1.PhaseRunning)
	spec, _ := h.podman.SpecOf(run.Status.ContainerName)
	if !spec.NoNewPrivileges || strings.Join(spec.CapDrop, ",") != "ALL" || strings.Join(spec.CapAdd, ",") != strings.Join(policy.DefaultCapabilities, ",") ||
		spec.PidsLimit != 100 || spec.MemoryBytes != 512<<20 || spec.NanoCPUs != 1e9 {
		t.Fatalf("container spec not hardened: %+v", spec)
	}
}

func TestPolicyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(*agentsv1alpha1.AgentRun)
		reason string
		names  string
	}{
		{"volume-outside", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/var/lib/secret:/data"} }, agentsv1alpha1.ReasonVolumeNotAllowed, "/var/lib/secret"},
		{"volume-over-etc", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/srv/x:/etc/ssl"} }, agentsv1alpha1.ReasonVolumeNotAllowed, "/etc/ssl"},
		{"image", func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = "docker.io/library/alpine:3" }, agentsv1alpha1.ReasonImageNotAllowed, "docker.io/library/alpine:3"},
		{"memory", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Memory = "2g" }, agentsv1alpha1.ReasonResourcesNotAllowed, "memory"},
		{"cpus", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.CPUs = "8" }, agentsv1alpha1.ReasonResourcesNotAllowed, "cpus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, agentrunstest.PlainRun(tc.name, tc.edit))
			run := h.reconcileUntil(tc.name, agentsv1alpha1.PhaseFailed)
			c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed)
			if c.Reason != tc.reason || !strings.Contains(c.Message, tc.names) {
				t.Fatalf("Failed = %+v, want %s naming %q", c, tc.reason, tc.names)
			}
			if h.podman.Calls("Create") != 0 {
				t.Fatalf("a refused run must not get a container")
			}
		})
	}
}

func TestAgentResultGoesToStatus(t *testing.T) {
	for _, tc := range []struct {
		name      string
		output    string
		wantPhase agentsv1alpha1.AgentRunPhase
	}{
		{"ok", "thinking\n" + `{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"All good","session_id":"s-1","total_cost_usd":0.0421}` + "\n", agentsv1alpha1.PhaseSucceeded},
		{"agent-error", `{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":1,"result":"API key invalid","session_id":"s-2","total_cost_usd":0}`, agentsv1alpha1.PhaseFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, agentrunstest.PlainRun(tc.name, nil))
			h.r.OutputTailBytes = 4096
			run := h.reconcileUntil(tc.name, agentsv1alpha1.PhaseRunning)
			if err := h.podman.Exit(run.Status.ContainerName, 0, tc.output); err != nil {
				t.Fatal(err)
			}
			run = h.reconcileUntil(tc.name, tc.wantPhase)
			r := run.Status.AgentResult
			if r == nil || r.SessionID == "" || r.NumTurns == 0 {
				t.Fatalf("agent result not recorded: %+v", r)
			}
			if tc.wantPhase == agentsv1alpha1.PhaseFailed {
				if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed); c.Reason != agentsv1alpha1.ReasonAgentError || !strings.Contains(c.Message, "API key invalid") {
					t.Fatalf("Failed = %+v", c)
				}
			} else if r.Result != "All good" || r.CostUSD != "0.0421" || r.NumTurns != 3 || r.IsError {
				t.Fatalf("agent result = %+v", r)
			}
		})
	}
}
