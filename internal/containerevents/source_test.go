package containerevents_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containerevents"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/containers/runtimetest"
)

// The tests run in a synctest bubble: the Source's retry pause and the
// fake engine's timestamps follow the bubble's clock, and synctest.Wait
// returns once every goroutine has done all it can, so nothing here sleeps
// to synchronise.

const (
	image = "localhost/agentrun-test:latest"
	host  = "host-a"
	retry = 5 * time.Second
)

// follower is a Source over a fake engine, feeding a controller's queue.
type follower struct {
	t       *testing.T
	engine  *fake.Runtime
	source  *containerevents.Source
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	started int // containers created so far, for unique names
}

// start runs a Source until the test ends; call it inside a bubble.
func start(t *testing.T) *follower {
	return startLogging(t, testr.New(t))
}

func startLogging(t *testing.T, logger logr.Logger) *follower {
	return startOn(t, logger, func(e *fake.Runtime) containers.Runtime { return e })
}

// startSilent runs a Source over an engine whose event stream says nothing.
func startSilent(t *testing.T) *follower {
	return startOn(t, testr.New(t), func(e *fake.Runtime) containers.Runtime { return runtimetest.SilentEvents(e) })
}

// startOn runs a Source over the engine wrap makes of a fake one.
func startOn(t *testing.T, logger logr.Logger, wrap func(*fake.Runtime) containers.Runtime) *follower {
	f := &follower{
		t:      t,
		engine: fake.New(image),
		queue:  workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]()),
	}
	f.source = containerevents.NewSource(wrap(f.engine), host, retry)
	ctx, cancel := context.WithCancel(log.IntoContext(context.Background(), logger))
	if err := f.source.Requests().Start(ctx, f.queue); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- f.source.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v after its context ended, want nil", err)
		}
		f.queue.ShutDown()
	})
	synctest.Wait()
	return f
}

// run starts a container for the run namespace/name on a host, as the
// controller labels them.
func (f *follower) run(onHost, namespace, name string) string {
	f.t.Helper()
	f.started++
	labels := map[string]string{agentsv1alpha1.LabelHost: onHost}
	if name != "" {
		labels[agentsv1alpha1.LabelNamespace], labels[agentsv1alpha1.LabelName] = namespace, name
	}
	id, err := f.engine.Create(context.Background(), containers.Spec{Name: fmt.Sprintf("c-%d", f.started), Image: image, Labels: labels})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.engine.Start(context.Background(), id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *follower) exit(id string, code int32) {
	f.t.Helper()
	if err := f.engine.Exit(id, code, ""); err != nil {
		f.t.Fatal(err)
	}
}

// requests takes every request waiting in the queue, as a controller's
// workers would, once the Source has handled all it has been sent.
func (f *follower) requests() []string {
	synctest.Wait()
	var out []string
	for f.queue.Len() > 0 {
		req, _ := f.queue.Get()
		out = append(out, req.String())
		f.queue.Done(req)
		f.queue.Forget(req)
	}
	return out
}

func request(namespace, name string) string {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}.String()
}

func (f *follower) wantExit(id string, code int32, at time.Time) {
	f.t.Helper()
	got, ok := f.source.Exited(id)
	if !ok || got.Code != code || !got.At.Equal(at) {
		f.t.Errorf("Exited(%s) = %d, %v, %v; want %d at %v", id, got.Code, got.At, ok, code, at)
	}
}

func (f *follower) wantNoExit(id string) {
	f.t.Helper()
	if got, ok := f.source.Exited(id); ok {
		f.t.Errorf("Exited(%s) = %d at %v, want nothing remembered", id, got.Code, got.At)
	}
}

func TestDiedEventIsRememberedAndRequestsTheRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		id := f.run(host, "team-a", "review")
		f.requests() // the launch is the reconciler's own doing

		time.Sleep(time.Minute)
		diedAt := time.Now()
		f.exit(id, 3)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests after the exit = %v, want the run's", got)
		}
		f.wantExit(id, 3, diedAt)
	})
}

func TestEventsThatChangeNoRunStatusRequestNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		id := f.run(host, "team-a", "review")
		if got := f.requests(); len(got) != 0 {
			t.Errorf("create and start requested %v, want nothing", got)
		}
		f.wantNoExit(id)

		other := f.run("host-b", "team-a", "elsewhere")
		f.exit(other, 1)
		unlabelled := f.run(host, "", "")
		f.exit(unlabelled, 1)
		if got := f.requests(); len(got) != 0 {
			t.Errorf("exits of another host's container and of one of no run requested %v, want nothing", got)
		}
		f.wantNoExit(other)
		f.wantNoExit(unlabelled)
	})
}

func TestReplayedDiedEventIsHarmless(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		f.engine.ReplayEvents(true)
		id := f.run(host, "team-a", "review")
		diedAt := time.Now()
		f.exit(id, 3)
		want := []string{request("team-a", "review")}
		if got := f.requests(); !slices.Equal(got, want) {
			t.Fatalf("requests after the exit = %v, want %v", got, want)
		}

		// The new stream starts with the container's create, start and
		// died events again.
		time.Sleep(time.Minute)
		f.engine.BreakEventStreams(errors.New("connection reset"))
		time.Sleep(retry)
		if got := f.requests(); !slices.Equal(got, want) {
			t.Errorf("requests after the replay = %v, want the same run's once more: %v", got, want)
		}
		f.wantExit(id, 3, diedAt)
		if calls := f.engine.Calls("Events"); calls != 2 {
			t.Errorf("the Source opened %d event streams, want 2", calls)
		}
	})
}

func TestRemoveEventForgetsTheExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		id := f.run(host, "team-a", "review")
		f.exit(id, 0)
		f.requests()
		if err := f.engine.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests after the remove = %v, want the run's, which lost its container", got)
		}
		f.wantNoExit(id)
	})
}

func TestBrokenStreamReconnectsAfterTheRetryPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		f.engine.BreakEventStreams(errors.New("connection reset"))
		time.Sleep(retry - time.Millisecond)
		synctest.Wait()
		if calls := f.engine.Calls("Events"); calls != 1 {
			t.Fatalf("the Source reconnected before its retry period: %d streams", calls)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if calls := f.engine.Calls("Events"); calls != 2 {
			t.Fatalf("the Source opened %d streams a retry period after the break, want 2", calls)
		}
		id := f.run(host, "team-a", "review")
		f.exit(id, 4)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests after reconnecting = %v, want the run's", got)
		}
		f.wantExit(id, 4, time.Now())
		// Recorded and removed, as the reconciler does: the reconnects
		// below have no missed exit to catch up on.
		if err := f.engine.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		f.requests()

		// While the engine is down, each attempt fails and the Source keeps
		// trying, once a period; the first stream after it returns delivers.
		f.engine.SetUnavailable(true)
		time.Sleep(3 * retry)
		synctest.Wait()
		if calls := f.engine.Calls("Events"); calls != 5 {
			t.Errorf("after three retry periods down, the Source opened %d streams, want 5", calls)
		}
		f.engine.SetUnavailable(false)
		time.Sleep(retry)
		synctest.Wait()
		id = f.run(host, "team-a", "again")
		f.exit(id, 5)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "again")}) {
			t.Errorf("requests once the engine is back = %v, want the run's", got)
		}
		f.wantExit(id, 5, time.Now())
	})
}

func TestEvictionDropsTheOldestHalf(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		// One past the Source's bound of 4096 remembered exits.
		const exits = 4097
		ids := make([]string, exits)
		for i := range ids {
			ids[i] = f.run(host, "team-a", fmt.Sprintf("run-%d", i))
			time.Sleep(time.Millisecond) // every exit at its own time
			f.exit(ids[i], int32(i%200))
			if i%16 == 0 {
				f.requests() // a follower that falls far behind loses events
			}
		}
		f.requests()
		for i, id := range ids {
			_, ok := f.source.Exited(id)
			switch {
			case i < exits/2 && ok:
				t.Fatalf("exit %d of %d is still remembered; the oldest half should be gone", i, exits)
			case i > exits/2 && !ok:
				t.Fatalf("exit %d of %d was forgotten; the newest should be kept", i, exits)
			}
		}
		f.wantExit(ids[exits-1], (exits-1)%200, time.Now())
	})
}

func TestReconnectsLogWhyTheStreamEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var reasons []string
		logger := funcr.NewJSON(func(obj string) {
			var line struct {
				Msg   string `json:"msg"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(obj), &line); err != nil {
				t.Errorf("log line %s: %v", obj, err)
			}
			if strings.Contains(line.Msg, "reconnecting") {
				mu.Lock()
				defer mu.Unlock()
				reasons = append(reasons, line.Error)
			}
		}, funcr.Options{})
		f := startLogging(t, logger)

		// Every failed attempt should say why; an operator reading the log
		// of an engine that stays down for a while should never see an
		// empty reason.
		f.engine.SetUnavailable(true)
		time.Sleep(20 * retry)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(reasons) < 20 {
			t.Fatalf("%d reconnects logged, want at least 20", len(reasons))
		}
		for i, reason := range reasons {
			if !strings.Contains(reason, containers.ErrUnavailable.Error()) {
				t.Fatalf("reconnect %d logged the reason %q, want the engine's error", i, reason)
			}
		}
	})
}

// An exit while the stream was down (a restarted Podman 5 service replays no
// earlier events) is requested as soon as the stream is back, not a resync
// period later.
func TestExitWhileTheStreamWasDownIsRequestedOnReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := start(t)
		exited := f.run(host, "team-a", "missed")
		f.run(host, "team-a", "still-running")
		f.requests()

		f.engine.BreakEventStreams(errors.New("connection reset"))
		synctest.Wait()
		f.exit(exited, 0)
		if got := f.requests(); len(got) != 0 {
			t.Fatalf("requests with no stream open = %v, want none", got)
		}
		time.Sleep(retry)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "missed")}) {
			t.Errorf("requests once the stream is back = %v, want the exited container's run only", got)
		}
	})
}

func TestAnAwaitedExitRequestsTheRunWithoutEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startSilent(t)
		id := f.run(host, "team-a", "review")
		run := types.NamespacedName{Namespace: "team-a", Name: "review"}
		f.source.Await(id, run)
		f.source.Await(id, run) // every pass that sees it running asks
		time.Sleep(time.Hour)
		if got := f.requests(); len(got) != 0 {
			t.Fatalf("requests while the container runs = %v, want none", got)
		}
		exitedAt := time.Now()
		f.exit(id, 3)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests after the exit = %v, want the run's once", got)
		}
		// The pass needs no inspect: the wait's answer is remembered, at
		// the time it came.
		f.wantExit(id, 3, exitedAt)
		if calls := f.engine.Calls("Wait"); calls != 1 {
			t.Errorf("the Source made %d waits on one container, want 1", calls)
		}

		// Once it has ended, a later pass's Await (a container stopped by
		// a deadline, say) waits again and answers at once.
		f.source.Await(id, run)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests after awaiting an exited container = %v, want the run's", got)
		}
	})
}

func TestAWaitEndedByARemovalRemembersNoExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startSilent(t)
		id := f.run(host, "team-a", "review")
		f.source.Await(id, types.NamespacedName{Namespace: "team-a", Name: "review"})
		synctest.Wait()
		// Podman answers 137 for a container removed under a wait, as for
		// one killed: the pass inspects, and finds it gone.
		if err := f.engine.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests after the removal = %v, want the run's", got)
		}
		f.wantNoExit(id)
	})
}

func TestAFailedWaitRequestsTheRunAfterAPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startSilent(t)
		id := f.run(host, "team-a", "review")
		f.source.Await(id, types.NamespacedName{Namespace: "team-a", Name: "review"})
		synctest.Wait()
		f.engine.SetUnavailable(true)
		if got := f.requests(); len(got) != 0 {
			t.Errorf("requests right after the wait failed = %v, want none before the retry period", got)
		}
		time.Sleep(retry)
		if got := f.requests(); !slices.Equal(got, []string{request("team-a", "review")}) {
			t.Errorf("requests a retry period after the wait failed = %v, want the run's", got)
		}
	})
}

func TestWaitsBeginWithTheSourceAndEndWithIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		engine := fake.New(image)
		source := containerevents.NewSource(runtimetest.SilentEvents(engine), host, retry)
		queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		defer queue.ShutDown()
		id, err := engine.Create(context.Background(), containers.Spec{Name: "c", Image: image})
		if err != nil {
			t.Fatal(err)
		}
		if err := engine.Start(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		// The reconciler may see a container running before the manager
		// has started the Source.
		source.Await(id, types.NamespacedName{Namespace: "team-a", Name: "review"})
		synctest.Wait()
		if calls := engine.Calls("Wait"); calls != 0 {
			t.Fatalf("%d waits began before the Source started, want 0", calls)
		}
		ctx, cancel := context.WithCancel(t.Context())
		if err := source.Requests().Start(ctx, queue); err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- source.Start(ctx) }()
		synctest.Wait()
		if calls := engine.Calls("Wait"); calls != 1 {
			t.Fatalf("%d waits once the Source started, want 1", calls)
		}
		// A stopping manager ends its waits, and Start returns only then.
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start = %v, want nil", err)
		}
		if queue.Len() != 0 {
			t.Errorf("a wait ended by the manager's stop requested a pass")
		}
	})
}

// The host learned of an exit when the first of the died event and the wait
// told it: Podman answers the wait only once its cleanup of the container is
// done, later than the event, and the time the host's own work at the run's
// end is measured from stays the event's arrival.
func TestAnExitIsSeenWhenTheFirstToTellArrives(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startOn(t, testr.New(t), func(e *fake.Runtime) containers.Runtime { return lateWait{e} })
		id := f.run(host, "team-a", "review")
		f.source.Await(id, types.NamespacedName{Namespace: "team-a", Name: "review"})
		time.Sleep(time.Minute)
		diedAt := time.Now()
		f.exit(id, 3)
		time.Sleep(2 * cleanup)
		synctest.Wait()
		got, ok := f.source.Exited(id)
		if !ok || !got.Seen.Equal(diedAt) {
			t.Errorf("Exited(%s) = %+v, %v; want it seen at the died event's arrival, %v", id, got, ok, diedAt)
		}
		if !got.At.After(diedAt) {
			t.Errorf("Exited(%s).At = %v; the wait, answering after the event, was not heard: the test does not test what it says", id, got.At)
		}
	})
}

// cleanup is how long after a container's end lateWait answers.
const cleanup = time.Second

// lateWait answers a wait cleanup after the container ended, as Podman does
// once its cleanup of the container is done.
type lateWait struct{ *fake.Runtime }

func (l lateWait) Wait(ctx context.Context, id string) (int32, error) {
	code, err := l.Runtime.Wait(ctx, id)
	time.Sleep(cleanup)
	return code, err
}
