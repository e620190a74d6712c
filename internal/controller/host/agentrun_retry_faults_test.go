package host

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// A retry that cannot launch at once (a secret removed since the first
// attempt, Podman failing the create, the failed container removed under
// it) must wait and then run, never end as ContainerLost: the run's result
// is not lost, only delayed. The four tests up to the restart's failed before
// the retry kept the failed attempt's container until the next one existed;
// the restart's passed already (the run's labels found the new container) and
// guards that path.

// retryingRun fails its first attempt on the harness's host and returns the
// first container's name once the retry is due.
func retryingRun(t *testing.T, h *harness, name string) string {
	t.Helper()
	run := h.reconcileUntil(name, agentsv1alpha1.PhaseRunning)
	first := run.Status.ContainerName
	if err := h.podman.Exit(first, 3, "try again\n"); err != nil {
		t.Fatal(err)
	}
	run, _, _ = h.reconcile(name)
	if reason := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason; reason != agentsv1alpha1.ReasonBackOff {
		t.Fatalf("after the first attempt failed: reason %s, want BackOff", reason)
	}
	h.clock.Step(5 * time.Millisecond)
	return first
}

// passesWhilePending runs a few passes and checks the run stays Pending for
// the given reason.
func passesWhilePending(t *testing.T, h *harness, name, reason string) {
	t.Helper()
	for i := range 3 {
		run, _, _ := h.reconcile(name)
		if got := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason; run.Status.Phase != agentsv1alpha1.PhasePending || got != reason {
			t.Fatalf("pass %d of the waiting retry: %s %s (%s), want Pending %s", i, run.Status.Phase, got, run.Status.Message, reason)
		}
		h.clock.Step(3 * time.Second)
	}
}

// secondAttemptSucceeds checks the run's next pass launches attempt 2, that
// the first attempt's container is gone by then, and that the run succeeds.
func secondAttemptSucceeds(t *testing.T, h *harness, name, first string) {
	t.Helper()
	run := h.reconcileUntil(name, agentsv1alpha1.PhaseRunning)
	if run.Status.Attempts != 2 || run.Status.ContainerName == first {
		t.Fatalf("want attempt 2 running, got %+v", run.Status)
	}
	if _, ok := h.podman.SpecOf(first); ok {
		t.Errorf("the failed attempt's container %s must go once the next one runs", first)
	}
	if err := h.podman.Exit(run.Status.ContainerName, 0, "ok\n"); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil(name, agentsv1alpha1.PhaseSucceeded)
	if run.Status.Attempts != 2 || *run.Status.ExitCode != 0 {
		t.Fatalf("the second attempt's result must stand: %+v", run.Status)
	}
	h.pass(name) // cleanup
	if left := h.podman.All(); len(left) != 0 {
		t.Errorf("containers left after the run finished: %+v", left)
	}
}

func TestRetryWaitsForASecretRemovedSinceTheFirstAttempt(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("needs-token", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.BackoffLimit = ptr.To[int32](2)
		r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": "token"}
	}))
	h.podman.AddSecret("token")
	first := retryingRun(t, h, "needs-token")
	h.podman.RemoveSecret("token")
	passesWhilePending(t, h, "needs-token", agentsv1alpha1.ReasonSecretNotFound)
	h.podman.AddSecret("token")
	secondAttemptSucceeds(t, h, "needs-token", first)
}

func TestRetryWaitsWhenPodmanFailsTheNextCreate(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("outage", func(r *agentsv1alpha1.AgentRun) { r.Spec.BackoffLimit = ptr.To[int32](2) }))
	first := retryingRun(t, h, "outage")
	h.podman.FailNext("Create", fmt.Errorf("connection refused: %w", containers.ErrUnavailable))
	run, _, err := h.reconcile("outage")
	if !errors.Is(err, containers.ErrUnavailable) || agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonPodmanUnavailable {
		t.Fatalf("the pass whose create met the outage: %v, %+v", err, run.Status)
	}
	secondAttemptSucceeds(t, h, "outage", first)
}

func TestRetryRunsWhenTheFailedContainerWasRemovedDuringBackOff(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("removed", func(r *agentsv1alpha1.AgentRun) { r.Spec.BackoffLimit = ptr.To[int32](2) }))
	first := retryingRun(t, h, "removed")
	// Its result is in status already; an operator's podman rm (or a
	// manager of an earlier version, which removed it before launching the
	// next attempt) takes nothing the run needs.
	if err := h.podman.Remove(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	secondAttemptSucceeds(t, h, "removed", first)
}

func TestFailedAttemptsContainerGoesWithTheRunWhenItsRemovalFailed(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("sticky", func(r *agentsv1alpha1.AgentRun) { r.Spec.BackoffLimit = ptr.To[int32](2) }))
	first := retryingRun(t, h, "sticky")
	h.podman.FailNext("Remove", errors.New("device or resource busy"))
	run := h.reconcileUntil("sticky", agentsv1alpha1.PhaseRunning)
	if run.Status.Attempts != 2 {
		t.Fatalf("a failed removal of the old container must not hold back the next attempt: %+v", run.Status)
	}
	if err := h.podman.Exit(run.Status.ContainerName, 0, "ok\n"); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("sticky", agentsv1alpha1.PhaseSucceeded)
	h.pass("sticky")
	if left := h.podman.All(); len(left) != 0 {
		t.Errorf("containers left after the run finished (the first was %s): %+v", first, left)
	}
}

// A manager that dies after creating the next attempt's container and before
// its status write leaves the status naming the failed attempt. The manager
// that follows (no memory of the launch) must adopt the new container, not
// create another or fail the run.
func TestRestartAfterTheRetryWasCreatedAdoptsIt(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("crash", func(r *agentsv1alpha1.AgentRun) { r.Spec.BackoffLimit = ptr.To[int32](2) }))
	first := retryingRun(t, h, "crash")

	dying := &AgentRunReconciler{Recorder: h.r.Recorder, HostConfig: h.r.HostConfig,
		Client: interceptor.NewClient(h.r.Client.(client.WithWatch), interceptor.Funcs{
			SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
				return errors.New("the manager was killed before this write")
			},
		})}
	if _, err := dying.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "team", Name: "crash"}}); err == nil {
		t.Fatal("the dying manager's status write must fail")
	}
	if h.podman.Calls("Create") != 2 {
		t.Fatalf("the dying manager should have created attempt 2: %d creates", h.podman.Calls("Create"))
	}

	h.r = &AgentRunReconciler{Client: h.r.Client, Recorder: h.r.Recorder, HostConfig: h.r.HostConfig}
	run := h.reconcileUntil("crash", agentsv1alpha1.PhaseRunning)
	if all := h.podman.All(); run.Status.Attempts != 2 || len(all) != 1 || all[0].Name != run.Status.ContainerName {
		t.Fatalf("the next manager must adopt attempt 2's container, the only one: status %+v, containers %+v", run.Status, all)
	}
	if _, ok := h.podman.SpecOf(first); ok {
		t.Errorf("the failed attempt's container %s must go once the next one runs", first)
	}
}

func TestDisruptedAttemptsDoNotCountAgainstBackoffLimit(t *testing.T) {
	run := agentrunstest.Run("moved")
	run.Spec.BackoffLimit = ptr.To(int32(1))
	run.Status = agentsv1alpha1.AgentRunStatus{Host: agentrunstest.Host, Phase: agentsv1alpha1.PhasePending, Attempts: 1, DisruptedAttempts: 1}
	h := newHarness(t, run)
	h.podman.AddSecret("github-token")
	h.podman.AddSecret("gitlab-token")
	got := h.reconcileUntil("moved", agentsv1alpha1.PhaseRunning)
	if got.Status.Attempts != 2 || !strings.HasSuffix(got.Status.ContainerName, "-2") {
		t.Fatalf("after a disruption the next container is attempt 2: %+v", got.Status)
	}
	if err := h.podman.Exit(got.Status.ContainerName, 3, "boom"); err != nil {
		t.Fatal(err)
	}
	h.r.RetryBackoff, h.r.MaxRetryBackoff = time.Hour, time.Hour
	got, _, err := h.reconcile("moved")
	if err != nil || agentrunstest.Condition(got, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonBackOff {
		t.Fatalf("backoffLimit 1 and one real failure: the run must retry, not fail: %+v, %v", got.Status, err)
	}
}

// A start call that timed out while Podman started the container anyway
// (a saturated host) is not a failed start: the run runs from that pass on,
// without a PodmanUnavailable warning, a backoff, or a second start. Without
// the look after the failed start, the pass fails and the run shows
// PodmanUnavailable until a later pass inspects the container.
func TestAStartThatTimedOutButStartedTheContainerRuns(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("late-start", nil))
	h.pass("late-start") // the claim
	h.podman.StartLate(fmt.Errorf("start did not answer within 2m0s: %w", containers.ErrUnavailable))
	run, _, err := h.reconcile("late-start")
	if err != nil || run.Status.Phase != agentsv1alpha1.PhaseRunning || run.Status.StartTime == nil {
		t.Fatalf("the pass whose start answered late: %v, %s (%s)", err, run.Status.Phase, run.Status.Message)
	}
	if n := h.podman.Calls("Start"); n != 1 {
		t.Errorf("%d start calls, want 1: a started container is not started again", n)
	}
	for _, e := range h.events() {
		if strings.Contains(e, agentsv1alpha1.ReasonPodmanUnavailable) {
			t.Errorf("event %q: Podman answered, late", e)
		}
	}
	if err := h.podman.Exit(run.Status.ContainerName, 0, "ok\n"); err != nil {
		t.Fatal(err)
	}
	if run = h.reconcileUntil("late-start", agentsv1alpha1.PhaseSucceeded); run.Status.Attempts != 1 {
		t.Fatalf("one attempt, want: %+v", run.Status)
	}
}

// A start that failed and left the container created fails the pass as
// before: the run waits for Podman and the next pass starts it.
func TestAStartThatFailedIsRetried(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("failed-start", nil))
	h.pass("failed-start") // the claim
	h.podman.FailNext("Start", fmt.Errorf("connection refused: %w", containers.ErrUnavailable))
	run, _, err := h.reconcile("failed-start")
	if !errors.Is(err, containers.ErrUnavailable) || run.Status.Phase == agentsv1alpha1.PhaseRunning {
		t.Fatalf("the pass whose start failed: %v, %s", err, run.Status.Phase)
	}
	run = h.reconcileUntil("failed-start", agentsv1alpha1.PhaseRunning)
	if n := h.podman.Calls("Start"); n != 2 || run.Status.Attempts != 1 {
		t.Fatalf("%d start calls and %d attempts, want 2 and 1", n, run.Status.Attempts)
	}
}
