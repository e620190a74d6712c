package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// fleetHarness is the fleet's two controllers over a fake API server.
type fleetHarness struct {
	t         *testing.T
	c         client.Client
	clock     *clocktesting.FakeClock
	placement *PlacementReconciler
	lifecycle *HostLifecycleReconciler
	budgets   *BudgetReconciler
}

// get reads the object at key into obj, failing the test when it is gone: a
// check of what the fleet wrote must not pass on an object it deleted.
func (f *fleetHarness) get(key client.ObjectKey, obj client.Object) {
	f.t.Helper()
	if err := f.c.Get(context.Background(), key, obj); err != nil {
		f.t.Fatalf("getting %s: %v", key, err)
	}
}

func newFleetHarness(t *testing.T, objs ...client.Object) *fleetHarness {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{agentsv1alpha1.AddToScheme, coordinationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c := fakeclient.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&agentsv1alpha1.AgentRun{}, &agentsv1alpha1.PodmanHost{}, &agentsv1alpha1.AgentRunBudget{}).
		WithIndex(&agentsv1alpha1.AgentRun{}, agentruns.QueueIndex, agentruns.QueueKeys).Build()
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	recorder := events.NewFakeRecorder(100)
	return &fleetHarness{
		t: t, c: c, clock: clock,
		placement: &PlacementReconciler{Client: c, Recorder: recorder, assumed: map[types.NamespacedName]string{}, Clock: clock,
			RecheckPeriod: ctrl.Result{RequeueAfter: time.Minute}},
		budgets: &BudgetReconciler{Client: c, Reader: c, Clock: clock},
		lifecycle: &HostLifecycleReconciler{Client: c, Reader: c, Recorder: recorder, LeaseNamespace: "agentrun-system",
			GracePeriod: 40 * time.Second, Clock: clock},
	}
}

func readyHost(name string, capacity int32, secrets ...string) *agentsv1alpha1.PodmanHost {
	return &agentsv1alpha1.PodmanHost{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"name": name}},
		Status: agentsv1alpha1.PodmanHostStatus{
			Conditions:   []metav1.Condition{{Type: agentsv1alpha1.HostConditionReady, Status: metav1.ConditionTrue, Reason: agentsv1alpha1.ReasonHostReady}},
			Capacity:     capacity,
			Secrets:      secrets,
			Images:       []string{agentrunstest.Image},
			DefaultImage: agentrunstest.Image,
		},
	}
}

func unplacedRun(name string) *agentsv1alpha1.AgentRun {
	run := agentrunstest.Run(name)
	run.Spec.HostName = ""
	run.UID = types.UID("uid-" + name)
	return run
}

func (f *fleetHarness) place(name string) *agentsv1alpha1.AgentRun {
	f.t.Helper()
	key := types.NamespacedName{Namespace: "team", Name: name}
	if _, err := f.placement.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		f.t.Fatalf("placing %s: %v", name, err)
	}
	run := &agentsv1alpha1.AgentRun{}
	if err := f.c.Get(context.Background(), key, run); err != nil {
		f.t.Fatal(err)
	}
	return run
}

func TestPlacementGoesToTheHostWithTheSecrets(t *testing.T) {
	f := newFleetHarness(t, readyHost("a", 4), readyHost("b", 4, "github-token", "gitlab-token"), unplacedRun("r"))
	if run := f.place("r"); run.Status.Host != "b" || agentrunstest.Condition(run, agentsv1alpha1.ConditionScheduled).Status != metav1.ConditionTrue {
		t.Fatalf("placed on %q, Scheduled %+v; want b", run.Status.Host, agentrunstest.Condition(run, agentsv1alpha1.ConditionScheduled))
	}
}

func TestPlacementSaysWhyNoHostFitsAndPlacesOnceOneDoes(t *testing.T) {
	a := readyHost("a", 4, "github-token")
	f := newFleetHarness(t, a, unplacedRun("r"))
	run := f.place("r")
	if run.Status.Host != "" || run.Status.Phase != agentsv1alpha1.PhasePending || !strings.Contains(run.Status.Message, "a: secret(s) gitlab-token") ||
		agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonUnschedulable {
		t.Fatalf("status = %+v; want Pending, Unschedulable, naming host a's missing secret", run.Status)
	}
	a.Status.Secrets = append(a.Status.Secrets, "gitlab-token")
	if err := f.c.Status().Update(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if run := f.place("r"); run.Status.Host != "a" {
		t.Fatalf("placed on %q once a has the secret; want a", run.Status.Host)
	}
}

func TestPlacementSendsARunWithEgressOnlyWhereTheHostPermitsItsNames(t *testing.T) {
	old, a := readyHost("old", 4, "github-token", "gitlab-token"), readyHost("a", 4, "github-token", "gitlab-token")
	a.Status.Egress = &agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy, Default: []string{"api.anthropic.com"}, Permitted: []string{"github.com"}}
	r := unplacedRun("r")
	r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{"github.com", "registry.npmjs.org"}}
	f := newFleetHarness(t, old, a, r)
	run := f.place("r")
	if run.Status.Host != "" || agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason != agentsv1alpha1.ReasonUnschedulable ||
		!strings.Contains(run.Status.Message, "a: egress to registry.npmjs.org not permitted") ||
		!strings.Contains(run.Status.Message, "old: an egress proxy") {
		t.Fatalf("status = %+v; want Unschedulable, naming the name host a does not permit and host old's missing proxy", run.Status)
	}
	a.Status.Egress.Permitted = append(a.Status.Egress.Permitted, "*.npmjs.org")
	if err := f.c.Status().Update(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if run := f.place("r"); run.Status.Host != "a" {
		t.Fatalf("placed on %q once a permits every name; want a", run.Status.Host)
	}
}

func TestPlacementSpreadsByLoadAndCountsItsOwnPlacements(t *testing.T) {
	objs := []client.Object{readyHost("a", 4, "github-token", "gitlab-token"), readyHost("b", 4, "github-token", "gitlab-token")}
	names := []string{"r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}
	for _, n := range names {
		objs = append(objs, unplacedRun(n))
	}
	f := newFleetHarness(t, objs...)
	count := map[string]int{}
	for _, n := range names {
		count[f.place(n).Status.Host]++
	}
	// Eight slots: four runs each, the ninth waits.
	if count["a"] != 4 || count["b"] != 4 || count[""] != 1 {
		t.Fatalf("placements = %v; want 4 on each host and one waiting for a slot", count)
	}
}

func lease(host string, renewed time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "agentrun-system", Name: host},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(host), RenewTime: &metav1.MicroTime{Time: renewed}},
	}
}

func TestLostHostsRunsAreFailedOverOrFailed(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	running := unplacedRun("running")
	running.Status = agentsv1alpha1.AgentRunStatus{Host: "a", Phase: agentsv1alpha1.PhaseRunning, Attempts: 1, ContainerName: "c1", ContainerID: "id1"}
	pinned := agentrunstest.Run("pinned")
	pinned.Spec.HostName = "a"
	pinned.UID = "uid-pinned"
	pinned.Status = agentsv1alpha1.AgentRunStatus{Host: "a", Phase: agentsv1alpha1.PhaseRunning, Attempts: 1, ContainerName: "c2"}
	f := newFleetHarness(t, readyHost("a", 4), lease("a", now.Add(-10*time.Second)), running, pinned)

	res, err := f.lifecycle.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "a"}})
	if err != nil || res.RequeueAfter <= 0 || res.RequeueAfter > 41*time.Second {
		t.Fatalf("a fresh heartbeat: %+v, %v; want a look again when it would be overdue", res, err)
	}
	f.clock.Step(41 * time.Second)
	if _, err := f.lifecycle.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	host := &agentsv1alpha1.PodmanHost{}
	f.get(types.NamespacedName{Name: "a"}, host)
	if c := meta.FindStatusCondition(host.Status.Conditions, agentsv1alpha1.HostConditionReady); c == nil || c.Reason != agentsv1alpha1.ReasonHeartbeatLost {
		t.Fatalf("host Ready = %+v; want False, HeartbeatLost", c)
	}
	got := &agentsv1alpha1.AgentRun{}
	f.get(client.ObjectKeyFromObject(running), got)
	if got.Status.Host != "" || got.Status.ContainerName != "" || got.Status.DisruptedAttempts != 1 || got.Status.Attempts != 1 ||
		got.Status.Phase != agentsv1alpha1.PhasePending || agentrunstest.Condition(got, agentsv1alpha1.ConditionHostLost).Status != metav1.ConditionTrue {
		t.Fatalf("unpinned run after its host was lost: %+v", got.Status)
	}
	if !awaitsPlacement(got) {
		t.Fatal("the unpinned run must wait to be placed again")
	}
	f.get(client.ObjectKeyFromObject(pinned), got)
	if got.Status.Phase != agentsv1alpha1.PhaseFailed || agentrunstest.Condition(got, agentsv1alpha1.ConditionFinished).Reason != agentsv1alpha1.ReasonHostLost {
		t.Fatalf("pinned run after its host was lost: %+v", got.Status)
	}
}

func TestPinnedRunsMayWaitForTheirLostHost(t *testing.T) {
	pinned := agentrunstest.Run("pinned")
	pinned.Spec.HostName = "a"
	pinned.Status = agentsv1alpha1.AgentRunStatus{Host: "a", Phase: agentsv1alpha1.PhaseRunning, Attempts: 1, ContainerName: "c2"}
	f := newFleetHarness(t, readyHost("a", 4), pinned)
	f.lifecycle.PinnedRunsWait = true
	f.clock.Step(time.Hour) // no Lease at all: counted from the host's creation
	if _, err := f.lifecycleAt("a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.lifecycleAt("a", 41*time.Second); err != nil {
		t.Fatal(err)
	}
	got := &agentsv1alpha1.AgentRun{}
	f.get(client.ObjectKeyFromObject(pinned), got)
	if got.Status.Phase != agentsv1alpha1.PhaseRunning || agentrunstest.Condition(got, agentsv1alpha1.ConditionHostLost).Status != metav1.ConditionTrue {
		t.Fatalf("pinned run waiting for its lost host: %+v", got.Status)
	}
}

func TestDeletingALostHostReleasesItsFinishedRuns(t *testing.T) {
	done := agentrunstest.Run("done")
	done.Spec.HostName = "gone"
	done.Finalizers = []string{agentruns.Finalizer}
	done.Status = agentsv1alpha1.AgentRunStatus{Host: "gone", Phase: agentsv1alpha1.PhaseFailed}
	elsewhere := unplacedRun("elsewhere")
	elsewhere.Finalizers = []string{agentruns.Finalizer}
	elsewhere.Status = agentsv1alpha1.AgentRunStatus{Host: "other", Phase: agentsv1alpha1.PhaseSucceeded}
	f := newFleetHarness(t, done, elsewhere)
	if _, err := f.lifecycle.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	got := &agentsv1alpha1.AgentRun{}
	f.get(client.ObjectKeyFromObject(done), got)
	if len(got.Finalizers) != 0 {
		t.Fatalf("the finished run of a deleted host keeps its finalizer: %v", got.Finalizers)
	}
	f.get(client.ObjectKeyFromObject(elsewhere), got)
	if len(got.Finalizers) != 1 {
		t.Fatal("another host's run lost its finalizer")
	}
}

// lifecycleAt moves the clock on by step and runs one lifecycle pass for
// host, returning its Ready condition's reason afterwards.
func (f *fleetHarness) lifecycleAt(host string, step time.Duration) (string, error) {
	f.t.Helper()
	f.clock.Step(step)
	_, err := f.lifecycle.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: host}})
	got := &agentsv1alpha1.PodmanHost{}
	if getErr := f.c.Get(context.Background(), types.NamespacedName{Name: host}, got); getErr != nil {
		f.t.Fatal(getErr)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, agentsv1alpha1.HostConditionReady); c != nil {
		return c.Reason, err
	}
	return "", err
}

// unreachable is an API server that does not answer.
type unreachable struct{ client.Reader }

func (unreachable) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
}

// A fleet that could not see the hosts' heartbeats (it has just started,
// after a crash or the API server's outage; its reads failed) must not take
// the renewals it missed for lost hosts. Before, every host whose Lease was
// older than the grace period when the fleet came back was declared lost at
// once, and all their runs failed over or, pinned, failed.
func TestAFleetThatWasBlindGivesEachHostAFullGracePeriod(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	f := newFleetHarness(t, readyHost("stale", 4), lease("stale", now.Add(-time.Hour)),
		readyHost("fresh", 4), lease("fresh", now))

	if reason, err := f.lifecycleAt("stale", 0); err != nil || reason != agentsv1alpha1.ReasonHostReady {
		t.Fatalf("a Lease an hour old, at the fleet's first look: Ready reason %s, %v; want still HostReady", reason, err)
	}
	if reason, _ := f.lifecycleAt("stale", 41*time.Second); reason != agentsv1alpha1.ReasonHeartbeatLost {
		t.Fatalf("no renewal for a grace period after the fleet's first look: Ready reason %s, want HeartbeatLost", reason)
	}

	// fresh: seen at +41 s, renewed at 0. Its Lease cannot be read for a
	// while; when it can again, the host gets a grace period from then.
	if reason, _ := f.lifecycleAt("fresh", 0); reason != agentsv1alpha1.ReasonHostReady {
		t.Fatalf("fresh: %s", reason)
	}
	reader := f.lifecycle.Reader
	f.lifecycle.Reader = unreachable{}
	if _, err := f.lifecycleAt("fresh", 10*time.Second); err == nil {
		t.Fatal("a pass that cannot read the Lease must fail")
	}
	f.lifecycle.Reader = reader
	if reason, err := f.lifecycleAt("fresh", 30*time.Second); err != nil || reason != agentsv1alpha1.ReasonHostReady {
		t.Fatalf("the first read after the outage, 81 s after the last renewal: Ready reason %s, %v; want HostReady", reason, err)
	}
	if reason, _ := f.lifecycleAt("fresh", 41*time.Second); reason != agentsv1alpha1.ReasonHeartbeatLost {
		t.Fatalf("no renewal for a grace period after the outage: Ready reason %s, want HeartbeatLost", reason)
	}
}

// A host may create an attempt's container and die before its status says
// so. The attempt the run moves on with must not be that one: two hosts
// would then each run a container of attempt 1 (before, the next host
// launched the same attempt number).
func TestARunLostBeforeItsLaunchWasRecordedMovesOnToTheNextAttempt(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for name, status := range map[string]agentsv1alpha1.AgentRunStatus{
		"placed":     {Host: "a", Phase: agentsv1alpha1.PhasePending},
		"backed-off": {Host: "a", Phase: agentsv1alpha1.PhasePending, Attempts: 1, ContainerName: "c1", ExitCode: ptr.To[int32](3)},
	} {
		t.Run(name, func(t *testing.T) {
			run := unplacedRun(name)
			run.Status = status
			if name == "backed-off" {
				agentruns.ApplyState(&run.Status, 1, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonBackOff, Message: "retry soon"})
			}
			f := newFleetHarness(t, readyHost("a", 4), lease("a", now), run)
			if _, err := f.lifecycleAt("a", 0); err != nil {
				t.Fatal(err)
			}
			if reason, _ := f.lifecycleAt("a", 41*time.Second); reason != agentsv1alpha1.ReasonHeartbeatLost {
				t.Fatalf("host a: %s", reason)
			}
			got := &agentsv1alpha1.AgentRun{}
			f.get(client.ObjectKeyFromObject(run), got)
			if got.Status.Host != "" || got.Status.Attempts != status.Attempts+1 || got.Status.DisruptedAttempts != 1 {
				t.Fatalf("after its host was lost: attempts %d (disrupted %d), want %d (1), so that the next host launches attempt %d",
					got.Status.Attempts, got.Status.DisruptedAttempts, status.Attempts+1, status.Attempts+2)
			}
		})
	}
}

// A host's grace period is the one it writes in its Lease, whatever the
// fleet's own default: a host that fences itself after 100 s is not declared
// lost after 40, and one that fences after 10 s is declared lost after 10,
// not left with its runs for 40.
func TestEachHostsGracePeriodIsItsLeases(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	slow, fast := lease("slow", now), lease("fast", now)
	slow.Spec.LeaseDurationSeconds = ptr.To(int32(100))
	fast.Spec.LeaseDurationSeconds = ptr.To(int32(10))
	f := newFleetHarness(t, readyHost("slow", 4), readyHost("fast", 4), slow, fast)
	for _, step := range []struct {
		host  string
		at    time.Duration // since the last renewal
		lost  bool
		label string
	}{
		{"fast", 0, false, "renewed just now"},
		{"slow", 0, false, "renewed just now"},
		{"fast", 11 * time.Second, true, "past its Lease's 10 s"},
		{"slow", 41 * time.Second, false, "past the fleet's default 40 s, within its Lease's 100 s"},
		{"slow", 101 * time.Second, true, "past its Lease's 100 s"},
	} {
		reason, err := f.lifecycleAt(step.host, now.Add(step.at).Sub(f.clock.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if lost := reason == agentsv1alpha1.ReasonHeartbeatLost; lost != step.lost {
			t.Errorf("host %s %s: Ready reason %q; lost %t, want %t", step.host, step.label, reason, lost, step.lost)
		}
	}
}

// A run created a moment before its host joined (right after make up, say)
// is placed within a heartbeat: it waits without a warning, and becomes
// Unschedulable, with a Warning event, only when no host could take it for
// that long.
func TestPlacementWarnsOnlyOnceNoHostCouldTakeARunForAHeartbeat(t *testing.T) {
	r := unplacedRun("r")
	f := newFleetHarness(t, r)
	r.CreationTimestamp = metav1.NewTime(f.clock.Now())
	if err := f.c.Update(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	recorded := f.placement.Recorder.(*events.FakeRecorder).Events
	run := f.place("r")
	if reason := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason; reason != agentsv1alpha1.ReasonWaitingForHost ||
		!strings.Contains(run.Status.Message, "no Podman host has joined the cluster") {
		t.Fatalf("a new run no host can take yet: %s %q; want WaitingForHost saying why", reason, run.Status.Message)
	}
	if len(recorded) != 0 {
		t.Fatalf("a new run no host can take yet was warned about: %s", <-recorded)
	}
	f.clock.Step(10 * time.Second)
	run = f.place("r")
	if reason := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason; reason != agentsv1alpha1.ReasonUnschedulable {
		t.Fatalf("no host for a heartbeat: %s; want Unschedulable", reason)
	}
	if len(recorded) != 1 || !strings.Contains(<-recorded, "Warning Unschedulable") {
		t.Fatal("no Warning event once no host could take the run for a heartbeat")
	}
}

// A host's heartbeat and its count of running runs change its PodmanHost
// often; neither changes where a waiting run can go, and neither wakes the
// waiting runs. What placement reads of a host does.
func TestPlacementWakesWaitingRunsOnlyWhenAHostChangesWhatPlacementReads(t *testing.T) {
	old := readyHost("a", 4, "github-token")
	changed := func(mutate func(h *agentsv1alpha1.PodmanHost)) bool {
		h := old.DeepCopy()
		mutate(h)
		return placementChanged().Update(event.UpdateEvent{ObjectOld: old, ObjectNew: h})
	}
	if changed(func(h *agentsv1alpha1.PodmanHost) {
		h.Status.Running = 3
		h.Status.LastHeartbeatTime = &metav1.Time{Time: time.Now()}
	}) {
		t.Error("a heartbeat and a new running count woke the waiting runs")
	}
	for what, mutate := range map[string]func(h *agentsv1alpha1.PodmanHost){
		"a secret":   func(h *agentsv1alpha1.PodmanHost) { h.Status.Secrets = append(h.Status.Secrets, "gitlab-token") },
		"Ready":      func(h *agentsv1alpha1.PodmanHost) { h.Status.Conditions[0].Status = metav1.ConditionFalse },
		"a label":    func(h *agentsv1alpha1.PodmanHost) { h.Labels = map[string]string{"gpu": "true"} },
		"capacity":   func(h *agentsv1alpha1.PodmanHost) { h.Status.Capacity = 8 },
		"a cordon":   func(h *agentsv1alpha1.PodmanHost) { h.Spec.Unschedulable = true },
		"its policy": func(h *agentsv1alpha1.PodmanHost) { h.Status.Policy = &agentsv1alpha1.HostPolicy{} },
	} {
		if !changed(mutate) {
			t.Errorf("a host that changed %s did not wake the waiting runs", what)
		}
	}
}

// placedRun is a run that host holds, running.
func placedRun(name, host string) *agentsv1alpha1.AgentRun {
	run := unplacedRun(name)
	run.Status = agentsv1alpha1.AgentRunStatus{Host: host, Phase: agentsv1alpha1.PhaseRunning, Attempts: 1}
	return run
}

// A run that every host able to run it would take but for a free slot is in
// line, not stuck: it waits as WaitingForCapacity, without the warning an
// Unschedulable run gets, however long the hosts stay full, and its status
// is not written again while they do.
func TestARunThatWaitsOnlyForASlotWaitsInLineWithoutAWarning(t *testing.T) {
	r := unplacedRun("r")
	f := newFleetHarness(t, readyHost("a", 1, "github-token", "gitlab-token"), placedRun("busy", "a"), r)
	recorded := f.placement.Recorder.(*events.FakeRecorder).Events
	run := f.place("r")
	if reason := agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason; reason != agentsv1alpha1.ReasonWaitingForCapacity ||
		!strings.Contains(run.Status.Message, "a: a free slot (all 1 in use)") {
		t.Fatalf("a run host a would take but for its one slot: %s %q; want WaitingForCapacity naming the slot", reason, run.Status.Message)
	}
	f.clock.Step(time.Minute)
	again := f.place("r")
	if reason := agentrunstest.Condition(again, agentsv1alpha1.ConditionStarted).Reason; reason != agentsv1alpha1.ReasonWaitingForCapacity {
		t.Fatalf("a minute later: %s; want WaitingForCapacity still", reason)
	}
	if again.ResourceVersion != run.ResourceVersion {
		t.Errorf("a waiting run's status was written again while nothing changed: %q", again.Status.Message)
	}
	if len(recorded) != 0 {
		t.Fatalf("a run waiting for a slot was warned about: %s", <-recorded)
	}
}

// A run that ends frees one slot: it wakes as many waiting runs as its host
// has free slots, the oldest first among those the host could run, not
// every waiting run (each woken run is a placement pass, and with thousands
// waiting, every run's end woke thousands). A run held by its budget waits
// for the budget, not for a slot.
func TestAFreedSlotWakesTheOldestRunsItsHostCanTake(t *testing.T) {
	base := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	var objs []client.Object
	waiting := func(name string, age int, mutate func(*agentsv1alpha1.AgentRun)) {
		run := unplacedRun(name)
		run.CreationTimestamp = metav1.NewTime(base.Add(-time.Duration(age) * time.Second))
		if mutate != nil {
			mutate(run)
		}
		objs = append(objs, run)
	}
	waiting("held-by-budget", 60, func(r *agentsv1alpha1.AgentRun) {
		agentruns.ApplyState(&r.Status, r.Generation, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonBudgetExceeded})
	})
	waiting("needs-a-secret", 50, func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Podman.SecretsEnv["OTHER_TOKEN"] = "other-token"
	})
	waiting("newest", 30, nil)
	waiting("oldest", 40, nil)
	waiting("middle", 35, nil)
	waiting("pinned-elsewhere", 45, func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = "b" })
	// Host a takes 3 runs and holds 1: 2 free slots.
	objs = append(objs, readyHost("a", 3, "github-token", "gitlab-token"), placedRun("busy", "a"))
	f := newFleetHarness(t, objs...)

	q := workqueue.NewTyped[reconcile.Request]()
	f.placement.wakeForFreedSlot(context.Background(), "a", q)
	var woken []string
	for q.Len() > 0 {
		req, _ := q.Get()
		woken = append(woken, req.Name)
		q.Done(req)
	}
	if strings.Join(woken, ",") != "oldest,middle" {
		t.Fatalf("woken = %v; want the two oldest runs host a can take: oldest, middle", woken)
	}
}
