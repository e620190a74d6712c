package hostagent

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
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
)

const image = "localhost/agent:1"

func newAgent(t *testing.T, objs ...client.Object) (*Agent, *fake.Runtime, *clocktesting.FakeClock, *events.FakeRecorder) {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{agentsv1alpha1.AddToScheme, coordinationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c := fakeclient.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&agentsv1alpha1.AgentRun{}, &agentsv1alpha1.PodmanHost{}).Build()
	rt := fake.New(image)
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	recorder := events.NewFakeRecorder(20)
	a := &Agent{
		Client: c, Reader: c, Recorder: recorder, Runtime: rt,
		Host: "h1", Labels: map[string]string{"gpu": "true"}, LeaseNamespace: "agentrun-system",
		Capacity: 4, DefaultImage: image, HeartbeatPeriod: 10 * time.Second, GracePeriod: 40 * time.Second,
		Egress:  &agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy, Default: []string{"api.anthropic.com"}, Permitted: []string{"*.github.com"}},
		Policy:  &agentsv1alpha1.HostPolicy{AllowedImages: []string{"localhost/*"}, AllowedVolumePaths: []string{"/srv"}, KeepsSessions: true},
		Running: func(context.Context) (int, error) { return 2, nil },
		Clock:   clock,
	}
	return a, rt, clock, recorder
}

func TestBeatPublishesTheHostAndItsHeartbeat(t *testing.T) {
	a, rt, _, _ := newAgent(t)
	rt.SetSecret("github-token", "s3cret-value")
	if err := a.Admission(); !IsNotFenced(err) {
		t.Fatalf("a host must not launch runs before its first fencing pass: %v", err)
	}
	a.beat(context.Background())
	if err := a.Admission(); err != nil {
		t.Fatalf("after a heartbeat and a fencing pass the host launches runs: %v", err)
	}
	host := &agentsv1alpha1.PodmanHost{}
	if err := a.Reader.Get(context.Background(), types.NamespacedName{Name: "h1"}, host); err != nil {
		t.Fatal(err)
	}
	st := host.Status
	ready := meta.FindStatusCondition(st.Conditions, agentsv1alpha1.HostConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue || host.Labels["gpu"] != "true" || st.Capacity != 4 || st.Running != 2 ||
		st.PodmanVersion != "fake" || strings.Join(st.Secrets, ",") != "github-token" || strings.Join(st.Images, ",") != image ||
		st.DefaultImage != image || st.LastHeartbeatTime == nil ||
		st.Egress == nil || st.Egress.Mode != agentsv1alpha1.EgressProxy || strings.Join(st.Egress.Default, ",") != "api.anthropic.com" ||
		strings.Join(st.Egress.Permitted, ",") != "*.github.com" ||
		st.Policy == nil || strings.Join(st.Policy.AllowedImages, ",") != "localhost/*" || strings.Join(st.Policy.AllowedVolumePaths, ",") != "/srv" || !st.Policy.KeepsSessions {
		t.Fatalf("PodmanHost = %+v %+v", host.Labels, st)
	}
	lease := &coordinationv1.Lease{}
	if err := a.Reader.Get(context.Background(), types.NamespacedName{Namespace: "agentrun-system", Name: "h1"}, lease); err != nil || lease.Spec.RenewTime == nil {
		t.Fatalf("Lease = %+v, %v", lease.Spec, err)
	}
}

func TestBeatRenewsTheLeaseAndWritesStatusOnlyOnChange(t *testing.T) {
	a, rt, clock, _ := newAgent(t)
	a.beat(context.Background())
	host := &agentsv1alpha1.PodmanHost{}
	mustGet(t, a.Reader, types.NamespacedName{Name: "h1"}, host)
	written := host.ResourceVersion

	clock.Step(10 * time.Second)
	a.beat(context.Background())
	lease := &coordinationv1.Lease{}
	mustGet(t, a.Reader, types.NamespacedName{Namespace: "agentrun-system", Name: "h1"}, lease)
	if !lease.Spec.RenewTime.Time.Equal(clock.Now()) {
		t.Fatalf("Lease renewed at %v, want %v", lease.Spec.RenewTime, clock.Now())
	}
	mustGet(t, a.Reader, types.NamespacedName{Name: "h1"}, host)
	if host.ResourceVersion != written {
		t.Fatal("an unchanged status was written again")
	}
	rt.AddSecret("new-secret")
	clock.Step(10 * time.Second)
	a.beat(context.Background())
	mustGet(t, a.Reader, types.NamespacedName{Name: "h1"}, host)
	if !strings.Contains(strings.Join(host.Status.Secrets, ","), "new-secret") {
		t.Fatalf("a new secret must show at the next heartbeat: %v", host.Status.Secrets)
	}
}

func TestFencingRemovesContainersOfRunsGivenToOtherHosts(t *testing.T) {
	mine := run("mine", "uid-mine", "h1", 1)
	moved := run("moved", "uid-moved", "h2", 2)
	a, rt, clock, recorder := newAgent(t, mine, moved)
	for _, r := range []*agentsv1alpha1.AgentRun{mine, moved} {
		launch(t, rt, r, 1)
	}
	gone := run("gone", "uid-gone", "h1", 1)
	launch(t, rt, gone, 1)

	a.beat(context.Background())
	left := names(rt.All())
	if left != "mine-1" {
		t.Fatalf("containers left after fencing: %s; want only mine-1", left)
	}
	note := strings.Join(drain(recorder), "\n")
	if !strings.Contains(note, "moved-1") || !strings.Contains(note, "given to host h2") || !strings.Contains(note, "no longer exists") {
		t.Fatalf("events: %s", note)
	}

	// Cut off past the grace period: no launch until fenced again.
	launch(t, rt, moved, 1)
	clock.Step(a.GracePeriod + time.Second)
	a.renewOnce(context.Background())
	if err := a.Admission(); !IsNotFenced(err) {
		t.Fatalf("a host back from a gap longer than the grace period must fence first: %v", err)
	}
	a.report(context.Background())
	if err := a.Admission(); err != nil || names(rt.All()) != "mine-1" {
		t.Fatalf("after coming back: admission %v, containers %s", err, names(rt.All()))
	}
}

func TestAHostWhosePodmanIsDownSaysSo(t *testing.T) {
	a, rt, _, _ := newAgent(t)
	rt.SetUnavailable(true)
	a.beat(context.Background())
	if err := a.Admission(); !errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("admission = %v; want Podman unavailable", err)
	}
	host := &agentsv1alpha1.PodmanHost{}
	mustGet(t, a.Reader, types.NamespacedName{Name: "h1"}, host)
	if c := meta.FindStatusCondition(host.Status.Conditions, agentsv1alpha1.HostConditionReady); c == nil || c.Reason != agentsv1alpha1.ReasonPodmanUnavailable {
		t.Fatalf("Ready = %+v", c)
	}
}

// beat is one heartbeat and one status pass, as Start's loops make them.
func (a *Agent) beat(ctx context.Context) {
	a.renewOnce(ctx)
	a.report(ctx)
}

func run(name, uid, host string, attempts int32) *agentsv1alpha1.AgentRun {
	return &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, UID: types.UID(uid)},
		Status:     agentsv1alpha1.AgentRunStatus{Host: host, Phase: agentsv1alpha1.PhaseRunning, Attempts: attempts},
	}
}

// launch starts a container of run's attempt on host h1, labelled as the
// reconciler labels it.
func launch(t *testing.T, rt *fake.Runtime, r *agentsv1alpha1.AgentRun, attempt int) {
	t.Helper()
	id, err := rt.Create(context.Background(), containers.Spec{
		Name: r.Name + "-" + string(rune('0'+attempt)), Image: image,
		Labels: map[string]string{
			agentsv1alpha1.LabelNamespace: r.Namespace, agentsv1alpha1.LabelName: r.Name, agentsv1alpha1.LabelUID: string(r.UID),
			agentsv1alpha1.LabelHost: "h1", agentsv1alpha1.LabelAttempt: string(rune('0' + attempt)),
		},
	})
	if err == nil {
		err = rt.Start(context.Background(), id)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func names(cs []containers.Container) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return strings.Join(out, ",")
}

func drain(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// The heartbeat does not wait for the leader lease: a manager restarted
// after a crash waits out its predecessor's lease (15 s) before it leads,
// and a heartbeat that waited too would let the fleet take a host that is
// back for a lost one.
func TestHeartbeatRunsWithoutTheLeaderLease(t *testing.T) {
	a, _, clock, _ := newAgent(t)
	hb := a.Heartbeat()
	if elected, ok := hb.(interface{ NeedLeaderElection() bool }); !ok || elected.NeedLeaderElection() {
		t.Fatal("the heartbeat must run whether or not this manager leads")
	}
	if _, ok := any(a).(interface{ NeedLeaderElection() bool }); ok {
		t.Fatal("the agent (PodmanHost, fencing) must wait for the leader lease")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- hb.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	renewedAt := func() time.Time {
		lease := &coordinationv1.Lease{}
		if err := a.Reader.Get(ctx, types.NamespacedName{Namespace: "agentrun-system", Name: "h1"}, lease); err != nil || lease.Spec.RenewTime == nil {
			return time.Time{}
		}
		return lease.Spec.RenewTime.Time
	}
	first := clock.Now()
	waitUntil(t, func() bool { return renewedAt().Equal(first) })
	waitUntil(t, clock.HasWaiters)
	clock.Step(a.HeartbeatPeriod)
	waitUntil(t, func() bool { return renewedAt().Equal(first.Add(a.HeartbeatPeriod)) })
}

// A standby manager of the same host renews the same Lease: the renewal
// that meets its write's conflict still counts, as the host is alive and
// this manager reached the API server.
func TestAConflictingRenewalByTheHostsOtherManagerCounts(t *testing.T) {
	a, _, clock, _ := newAgent(t)
	standby := &Agent{Client: a.Client, Reader: a.Reader, Host: a.Host, LeaseNamespace: a.LeaseNamespace, GracePeriod: a.GracePeriod}
	ctx := context.Background()
	if err := a.renew(ctx, clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := standby.renew(ctx, clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := a.renew(ctx, clock.Now()); err != nil {
		t.Fatalf("a renewal after the standby's: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// mustGet reads the object at key into obj, failing the test when it is gone.
func mustGet(t *testing.T, r client.Reader, key client.ObjectKey, obj client.Object) {
	t.Helper()
	if err := r.Get(context.Background(), key, obj); err != nil {
		t.Fatalf("getting %s: %v", key, err)
	}
}

// A run that finished on a host while it was cut off ran again elsewhere:
// fencing that container says, on the run, that the first attempt had
// finished and with which exit code, so the user can see it.
func TestFencingAFinishedContainerRecordsTheResultItDiscards(t *testing.T) {
	moved := run("moved", "uid-moved", "h2", 2)
	running := run("running", "uid-running", "h2", 2)
	a, rt, _, recorder := newAgent(t, moved, running)
	launch(t, rt, moved, 1)
	launch(t, rt, running, 1)
	for _, c := range rt.All() {
		if c.Name == "moved-1" {
			if err := rt.Exit(c.ID, 3, "done\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.beat(context.Background())
	notes := drain(recorder)
	var discarded []string
	for _, n := range notes {
		if strings.Contains(n, agentsv1alpha1.ReasonResultDiscarded) {
			discarded = append(discarded, n)
		}
	}
	if len(discarded) != 1 || !strings.Contains(discarded[0], "moved-1") || !strings.Contains(discarded[0], "exited 3") {
		t.Fatalf("ResultDiscarded events: %q; want one, for moved-1, with its exit code (all events: %q)", discarded, notes)
	}
}

// A host back from a gap past the grace period whose run came back to it as
// a later attempt (the fleet failed the run over and placed it here again)
// fences the old attempt's container and nothing of the current one: the
// run's container runs on, and the host keeps what it holds for the run
// (its slot, its egress proxy, its secret values), which Released would let
// go of.
func TestFencingAnOldAttemptLeavesTheRunsCurrentAttemptAlone(t *testing.T) {
	back := run("back", "uid-back", "h1", 2)
	moved := run("moved", "uid-moved", "h2", 1)
	a, rt, clock, _ := newAgent(t, back, moved)
	var released []string
	a.Released = func(key types.NamespacedName) { released = append(released, key.Name) }
	a.beat(context.Background())
	launch(t, rt, back, 1)
	launch(t, rt, back, 2)
	launch(t, rt, moved, 1)

	clock.Step(a.GracePeriod + time.Second)
	a.beat(context.Background())
	if left := names(rt.All()); left != "back-2" {
		t.Fatalf("containers left after fencing: %s; want only back-2, the run's current attempt", left)
	}
	if strings.Join(released, ",") != "moved" {
		t.Fatalf("runs released by fencing: %v; want only moved: back is still this host's", released)
	}
}
