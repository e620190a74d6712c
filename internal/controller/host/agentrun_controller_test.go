package host

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/policy"
)

// harness is one reconciler over a fake API server, a fake Podman and a fake
// clock.
type harness struct {
	t        *testing.T
	r        *AgentRunReconciler
	podman   *fake.Runtime
	clock    *clocktesting.FakeClock
	recorder *events.FakeRecorder
	// listed counts the objects the reconciler's List calls returned.
	listed atomic.Int64
}

func newHarness(t *testing.T, objs ...client.Object) *harness {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	h := &harness{t: t, podman: fake.New(agentrunstest.Image), clock: clock, recorder: events.NewFakeRecorder(100)}
	c := fakeclient.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&agentsv1alpha1.AgentRun{}).
		WithIndex(&agentsv1alpha1.AgentRun{}, agentruns.QueueIndex, agentruns.QueueKeys).
		WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			err := c.List(ctx, list, opts...)
			h.listed.Add(int64(meta.LenList(list)))
			return err
		}}).Build()
	h.podman.SetClock(clock)
	h.r = &AgentRunReconciler{
		Client:    c,
		APIReader: c,
		Recorder:  h.recorder,
		HostConfig: HostConfig{
			Runtime:         h.podman,
			Host:            agentrunstest.Host,
			Defaults:        Defaults{Image: agentrunstest.Image, Command: []string{"agent", "--json"}},
			OutputTailBytes: 16,
			StopGracePeriod: time.Second,
			ResyncPeriod:    time.Minute,
			RecheckPeriod:   3 * time.Second,
			DefaultTimeout:  time.Hour,
			RetryBackoff:    time.Millisecond,
			MaxRetryBackoff: time.Millisecond,
			Policy: policy.Policy{
				AllowedVolumePaths:    []string{"/srv"},
				BlockedContainerPaths: []string{"/proc", "/etc"},
				AllowedImages:         []string{"localhost/*"},
				DefaultMemoryBytes:    512 << 20,
				MaxMemoryBytes:        1 << 30,
				DefaultNanoCPUs:       1e9,
				MaxNanoCPUs:           2e9,
				PidsLimit:             100,
				Capabilities:          policy.DefaultCapabilities,
				ResolveHostPath:       func(p string) (string, error) { return p, nil },
			},
			// The harness's runs are about everything but egress:
			// agentrun_egress_test.go proxies them.
			Egress: agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressOpen},
			Clock:  clock,
		},
	}
	h.r.egress = egressRuns{host: agentrunstest.Host, recorder: h.recorder, clock: clock}
	return h
}

// reconcile runs one pass and returns the run as stored afterwards.
func (h *harness) reconcile(name string) (*agentsv1alpha1.AgentRun, ctrl.Result, error) {
	h.t.Helper()
	key := client.ObjectKey{Namespace: "team", Name: name}
	res, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key})
	run := &agentsv1alpha1.AgentRun{}
	if getErr := h.r.Get(context.Background(), key, run); getErr != nil {
		return nil, res, err
	}
	return run, res, err
}

// pass runs one pass whose outcome the test reads elsewhere (the fake Podman,
// the stored run), failing the test if the pass returns an error.
func (h *harness) pass(name string) {
	h.t.Helper()
	if _, _, err := h.reconcile(name); err != nil {
		h.t.Fatalf("reconcile %s: %v", name, err)
	}
}

// reconcileUntil runs passes until the run reaches phase, failing after a few.
func (h *harness) reconcileUntil(name string, phase agentsv1alpha1.AgentRunPhase) *agentsv1alpha1.AgentRun {
	h.t.Helper()
	for range 5 {
		run, _, err := h.reconcile(name)
		if err != nil {
			h.t.Fatalf("reconcile: %v", err)
		}
		if run.Status.Phase == phase {
			return run
		}
	}
	h.t.Fatalf("run %s never reached phase %s", name, phase)
	return nil
}

func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestReconcileLaunchesAndRecordsSuccess(t *testing.T) {
	h := newHarness(t, agentrunstest.Run("ok"))
	h.podman.AddSecret("github-token")
	h.podman.AddSecret("gitlab-token")

	run := h.reconcileUntil("ok", agentsv1alpha1.PhaseRunning)
	if run.Status.Host != agentrunstest.Host || run.Status.Attempts != 1 || run.Status.ContainerID == "" || run.Status.StartTime == nil {
		t.Fatalf("running status incomplete: %+v", run.Status)
	}
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted); c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 {
		t.Fatalf("Started condition = %+v", c)
	}
	spec, _ := h.podman.SpecOf(run.Status.ContainerName)
	if got := strings.Join(spec.Command, " "); got != "agent --json Review the open PRs" {
		t.Errorf("command = %q, want the default command with the prompt last", got)
	}
	if spec.Env[agentsv1alpha1.PromptEnvVar] != "Review the open PRs" || spec.Env["LOG_LEVEL"] != "debug" {
		t.Errorf("env = %v", spec.Env)
	}
	if spec.SecretEnv["GH_TOKEN"] != "github-token" || spec.SecretEnv["GITLAB_TOKEN"] != "gitlab-token" {
		t.Errorf("secret env = %v", spec.SecretEnv)
	}
	if _, ok := spec.Env["GH_TOKEN"]; ok {
		t.Errorf("a secret variable must reach Podman as a secret reference, not a plain value")
	}

	h.pass("ok")
	h.pass("ok")

	if err := h.podman.Exit(run.Status.ContainerName, 0, "thinking...\nall 3 PRs look good\n"); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("ok", agentsv1alpha1.PhaseSucceeded)
	if *run.Status.ExitCode != 0 || run.Status.CompletionTime == nil {
		t.Fatalf("finished status incomplete: %+v", run.Status)
	}
	if run.Status.Output != "3 PRs look good\n" {
		t.Errorf("output = %q, want the last 16 bytes", run.Status.Output)
	}
	for _, ct := range []string{agentsv1alpha1.ConditionSucceeded, agentsv1alpha1.ConditionFinished} {
		if c := agentrunstest.Condition(run, ct); c.Status != metav1.ConditionTrue {
			t.Errorf("%s = %+v, want True", ct, c)
		}
	}
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed); c.Status != metav1.ConditionFalse {
		t.Errorf("Failed = %+v, want False", c)
	}

	// The pass after the result is stored removes the container and the
	// finalizer; after that a finished run costs no Podman call.
	run, _, _ = h.reconcile("ok")
	if len(h.podman.All()) != 0 || len(run.Finalizers) != 0 {
		t.Fatalf("container or finalizer left: %v, %v", h.podman.All(), run.Finalizers)
	}
	calls := h.podman.Calls("List") + h.podman.Calls("Inspect") + h.podman.Calls("Remove")
	h.pass("ok")
	if after := h.podman.Calls("List") + h.podman.Calls("Inspect") + h.podman.Calls("Remove"); after != calls {
		t.Errorf("a finished run made %d more Podman calls", after-calls)
	}

	got := strings.Join(h.events(), "\n")
	for _, want := range []string{"Normal Launched", "Normal Completed"} {
		if strings.Count(got, want) != 1 {
			t.Errorf("events %q should hold %q once", got, want)
		}
	}
}

func TestReconcileWaitsForMissingSecret(t *testing.T) {
	h := newHarness(t, agentrunstest.Run("wait"))
	h.podman.AddSecret("github-token")

	var run *agentsv1alpha1.AgentRun
	var res ctrl.Result
	for range 3 {
		run, res, _ = h.reconcile("wait")
	}
	if run.Status.Phase != agentsv1alpha1.PhasePending {
		t.Fatalf("phase = %s, want Pending", run.Status.Phase)
	}
	c := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted)
	if c.Reason != agentsv1alpha1.ReasonSecretNotFound || !strings.Contains(c.Message, "gitlab-token") ||
		!strings.Contains(c.Message, "podman secret create 'gitlab-token' -") || strings.Contains(c.Message, "github-token") {
		t.Fatalf("Started = %+v, want SecretNotFound naming only gitlab-token with the fix", c)
	}
	if res.RequeueAfter != 3*time.Second {
		t.Errorf("requeue after %s, want the recheck period", res.RequeueAfter)
	}
	if len(h.podman.All()) != 0 {
		t.Fatalf("a container was created without its secret")
	}
	evs := strings.Join(h.events(), "\n")
	if strings.Count(evs, "Warning SecretNotFound") != 1 {
		t.Errorf("want one SecretNotFound warning, got %q", evs)
	}

	h.podman.AddSecret("gitlab-token")
	h.reconcileUntil("wait", agentsv1alpha1.PhaseRunning)
}

func TestReconcileReportsMissingImage(t *testing.T) {
	run := agentrunstest.Run("img")
	run.Spec.Podman.SecretsEnv = nil
	run.Spec.Image = "localhost/nope:1"
	h := newHarness(t, run)
	for range 3 {
		run, _, _ = h.reconcile("img")
	}
	c := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted)
	if run.Status.Phase != agentsv1alpha1.PhasePending || c.Reason != agentsv1alpha1.ReasonImageNotFound || !strings.Contains(c.Message, "localhost/nope:1") {
		t.Fatalf("status = %s %+v, want Pending ImageNotFound naming the image", run.Status.Phase, c)
	}
}

func TestReconcileRecordsFailure(t *testing.T) {
	run := agentrunstest.Run("fail")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	run = h.reconcileUntil("fail", agentsv1alpha1.PhaseRunning)
	if err := h.podman.Exit(run.Status.ContainerName, 3, "boom\n"); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("fail", agentsv1alpha1.PhaseFailed)
	if *run.Status.ExitCode != 3 || agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed).Reason != agentsv1alpha1.ReasonExitedNonZero {
		t.Fatalf("status = %+v", run.Status)
	}
	if !strings.Contains(strings.Join(h.events(), "\n"), "Warning ExitedNonZero") {
		t.Errorf("want a Warning event for the failure")
	}
}

func TestReconcileSurvivesPodmanOutage(t *testing.T) {
	run := agentrunstest.Run("down")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	h.pass("down") // claim
	h.podman.SetUnavailable(true)
	run, _, err := h.reconcile("down")
	if err == nil {
		t.Fatalf("want an error so the pass is retried with backoff")
	}
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionPodmanAvailable); c.Status != metav1.ConditionFalse || c.Reason != agentsv1alpha1.ReasonPodmanUnavailable {
		t.Fatalf("PodmanAvailable = %+v", c)
	}
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted); c.Reason != agentsv1alpha1.ReasonPodmanUnavailable {
		t.Fatalf("Started = %+v", c)
	}
	h.podman.SetUnavailable(false)
	run = h.reconcileUntil("down", agentsv1alpha1.PhaseRunning)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionPodmanAvailable); c.Status != metav1.ConditionTrue {
		t.Fatalf("PodmanAvailable = %+v after recovery", c)
	}
}

func TestReconcileLeavesOtherHostsRunsAlone(t *testing.T) {
	pinned := agentrunstest.Run("pinned")
	pinned.Spec.HostName = "host-b"
	claimed := agentrunstest.Run("claimed")
	claimed.Status.Host = "host-b"
	unplaced := agentrunstest.Run("unplaced")
	unplaced.Spec.HostName = "" // the fleet's to place
	h := newHarness(t, pinned, claimed, unplaced)
	for _, name := range []string{"pinned", "claimed", "unplaced"} {
		run, _, err := h.reconcile(name)
		if err != nil || run.Status.Host == agentrunstest.Host || len(run.Finalizers) != 0 {
			t.Errorf("%s: touched a run of another host: %+v, %v", name, run.Status, err)
		}
	}
	if n := h.podman.Calls("Create") + h.podman.Calls("SecretExists"); n != 0 {
		t.Errorf("made %d Podman calls for other hosts' runs", n)
	}
}

func TestReconcileAdoptsContainerOfEarlierPass(t *testing.T) {
	run := agentrunstest.Run("adopt")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	h.pass("adopt") // claim
	// A manager that crashed after creating the container, before recording it.
	spec, err := containerSpec(run, h.r.Defaults, agentrunstest.Host, 1)
	if err != nil {
		t.Fatal(err)
	}
	id, err := h.podman.Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("adopt", agentsv1alpha1.PhaseRunning)
	if run.Status.ContainerID != id || len(h.podman.All()) != 1 {
		t.Fatalf("want the existing container %s adopted and no second one, got %s and %d containers", id, run.Status.ContainerID, len(h.podman.All()))
	}
}

func TestReconcileRecordsContainerLost(t *testing.T) {
	run := agentrunstest.Run("lost")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	run = h.reconcileUntil("lost", agentsv1alpha1.PhaseRunning)
	if err := h.podman.Remove(context.Background(), run.Status.ContainerID); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("lost", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed); c.Reason != agentsv1alpha1.ReasonContainerLost {
		t.Fatalf("Failed = %+v, want ContainerLost", c)
	}
}

func TestReconcileDeletionStopsAndRemovesContainer(t *testing.T) {
	run := agentrunstest.Run("del")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	run = h.reconcileUntil("del", agentsv1alpha1.PhaseRunning)
	if err := h.r.Delete(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.reconcile("del"); err != nil {
		t.Fatal(err)
	}
	if h.podman.Calls("Stop") != 1 || len(h.podman.All()) != 0 {
		t.Fatalf("want the running container stopped and removed, got %d stops and %v", h.podman.Calls("Stop"), h.podman.All())
	}
	err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{})
	if err == nil {
		t.Fatalf("the run should be gone once its finalizer is removed")
	}
}

func TestLongMessagesAreCutToTheirBounds(t *testing.T) {
	// A message built from a Podman error or an agent's text can be longer
	// than the API server takes: the status write, or the event, would be
	// refused whole.
	long := agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonLaunchFailed, Message: strings.Repeat("é", 5000)}
	status := agentsv1alpha1.AgentRunStatus{}
	agentruns.ApplyState(&status, 1, long)
	if n := len(status.Message); n > agentruns.MaxMessageBytes || n < agentruns.MaxMessageBytes-1 || !utf8.ValidString(status.Message) {
		t.Errorf("status.message is %d bytes (valid UTF-8: %v); want it cut to %d", n, utf8.ValidString(status.Message), agentruns.MaxMessageBytes)
	}
	h := newHarness(t)
	h.r.recordTransition(agentrunstest.PlainRun("long", nil), agentruns.State{}, long)
	events := h.events()
	if len(events) == 0 {
		t.Fatal("the transition recorded no event: nothing to check the size of")
	}
	for _, e := range events {
		if len(e) > agentruns.MaxEventNoteBytes+100 {
			t.Errorf("an event of %d bytes would be refused by the API server", len(e))
		}
	}
}
