// Package runtimetest is the behaviour every containers.Runtime must show, as
// one table of subtests run against the real engine (internal/podman) and the
// in-memory fake (internal/containers/fake). The controller's unit tests
// trust the fake to behave like Podman; running the same table against both
// is what keeps that trust earned. When they disagree, Podman is the truth
// and the fake is what gets fixed.
//
// A Harness supplies what differs between engines. The one real design
// choice is how a container's process comes to exit with a given code and
// output: on Podman a container runs a real program, while the fake has no
// programs and is told when a container exits (fake.Runtime.Exit). Teaching
// the fake to interpret a few shell commands would make it a second engine
// to keep in step with the first, so instead the harness has one hook,
// RunToExit, that each engine implements in its own way: Podman's gives the
// container a command that prints the output and exits with the code; the
// fake's creates, starts and calls Exit. Containers that must keep running
// get the command "sleep 300", which the fake ignores: its containers run
// until they are stopped.
package runtimetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentrun/agentrun/internal/containers"
)

// Harness adapts one engine to the contract.
type Harness struct {
	// New returns a runtime whose engine answers. The subtests run in
	// parallel, each with its own runtime; they may share the engine behind
	// them, as the contract gives every container a unique name and label.
	New func(t *testing.T) containers.Runtime
	// Image names an image present on every runtime New returns.
	Image string
	// AddSecret makes a secret with that value exist on r's engine until
	// the test ends.
	AddSecret func(t *testing.T, r containers.Runtime, name, value string)
	// RunToExit creates and starts a container from spec (whose Command it
	// may replace) whose process writes output to stdout and exits with
	// code; it returns the container's ID, possibly before the exit.
	RunToExit func(t *testing.T, r containers.Runtime, spec containers.Spec, code int32, output string) string
	// Running creates and starts a container from spec (whose Command it
	// may replace) whose process runs until stopped, and returns its ID
	// once that process runs: a container's init sets up its signal
	// handling as it starts, and a SIGTERM that comes before is lost (the
	// stop then ends in a SIGKILL after its grace period).
	Running func(t *testing.T, r containers.Runtime, spec containers.Spec) string
	// Unavailable returns a runtime whose engine does not answer.
	Unavailable func(t *testing.T) containers.Runtime
}

// CreateAndStart creates and starts a container from spec, for harnesses.
func CreateAndStart(t *testing.T, r containers.Runtime, spec containers.Spec) string {
	t.Helper()
	id, err := r.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create(%s) = %v", spec.Name, err)
	}
	if err := r.Start(t.Context(), id); err != nil {
		t.Fatalf("Start(%s) = %v", spec.Name, err)
	}
	return id
}

// Contract runs every behaviour against the harness's engine.
func Contract(t *testing.T, h Harness) {
	for _, b := range behaviours {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			b.check(newCase(t, h))
		})
	}
}

// patience bounds each wait for something the engine does asynchronously
// (a process exiting, an event arriving); Podman on a busy machine is slow.
const patience = 60 * time.Second

// clockSkew is how far the engine's timestamps may stray from the test's
// clock: Podman stamps events and states on its own, perhaps rounding.
const clockSkew = 5 * time.Second

// uniqueKey labels every container a case creates, so that cases sharing an
// engine (and other users of it) never see each other's containers.
const uniqueKey = "agentrun-contract"

// tc is one subtest's view of the engine.
type tc struct {
	*testing.T
	h      Harness
	r      containers.Runtime
	ctx    context.Context
	suffix string
	// label is the unique label: List and Events by it see this case only.
	label map[string]string
}

func newCase(t *testing.T, h Harness) *tc {
	suffix := strconv.FormatUint(rand.Uint64(), 36)
	return &tc{T: t, h: h, r: h.New(t), ctx: t.Context(), suffix: suffix, label: map[string]string{uniqueKey: suffix}}
}

// spec returns a long-running container's spec with a unique name and the
// case's label.
func (c *tc) spec(role string) containers.Spec {
	return containers.Spec{
		Name:    "agentrun-contract-" + c.suffix + "-" + role,
		Image:   c.h.Image,
		Command: []string{"sleep", "300"},
		Labels:  map[string]string{uniqueKey: c.suffix, "role": role},
	}
}

// removeAtEnd removes a container (by name, so that it works even when
// Create failed half-way) when the test ends.
func (c *tc) removeAtEnd(name string) {
	c.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := c.r.Remove(ctx, name); err != nil {
			c.Logf("cleanup: removing %s: %v", name, err)
		}
	})
}

func (c *tc) create(s containers.Spec) string {
	c.Helper()
	c.removeAtEnd(s.Name)
	id, err := c.r.Create(c.ctx, s)
	if err != nil {
		c.Fatalf("Create(%s) = %v", s.Name, err)
	}
	return id
}

func (c *tc) running(s containers.Spec) string {
	c.Helper()
	c.removeAtEnd(s.Name)
	return c.h.Running(c.T, c.r, s)
}

// exited runs a container to its exit and returns it as inspected then.
func (c *tc) exited(s containers.Spec, code int32, output string) containers.Container {
	c.Helper()
	c.removeAtEnd(s.Name)
	id := c.h.RunToExit(c.T, c.r, s, code, output)
	return c.waitExited(id)
}

func (c *tc) waitExited(id string) containers.Container {
	c.Helper()
	deadline := time.Now().Add(patience)
	for {
		got := c.inspect(id)
		if got.State == containers.StateExited {
			return got
		}
		if time.Now().After(deadline) {
			c.Fatalf("container %s is still %s after %s", id, got.State, patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *tc) inspect(nameOrID string) containers.Container {
	c.Helper()
	got, err := c.r.Inspect(c.ctx, nameOrID)
	if err != nil {
		c.Fatalf("Inspect(%s) = %v", nameOrID, err)
	}
	return got
}

func (c *tc) list(labels map[string]string) map[string]containers.Container {
	c.Helper()
	list, err := c.r.List(c.ctx, labels)
	if err != nil {
		c.Fatalf("List(%v) = %v", labels, err)
	}
	byID := map[string]containers.Container{}
	for _, l := range list {
		byID[l.ID] = l
	}
	if len(byID) != len(list) {
		c.Errorf("List(%v) returned a container twice: %+v", labels, list)
	}
	return byID
}

func (c *tc) logs(id string, maxBytes int) string {
	c.Helper()
	out, err := c.r.Logs(c.ctx, id, maxBytes)
	if err != nil {
		c.Fatalf("Logs(%s, %d) = %v", id, maxBytes, err)
	}
	return out
}

// hasLabels tells whether have carries every label of want (an engine may add
// its own, or the image's).
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// near tells whether an engine's timestamp falls within [from, to], give or
// take the clock skew.
func near(at, from, to time.Time) bool {
	return !at.Before(from.Add(-clockSkew)) && !at.After(to.Add(clockSkew))
}

func labelsWith(base map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for bk, bv := range base {
		out[bk] = bv
	}
	return out
}

var behaviours = []struct {
	name  string
	check func(c *tc)
}{
	{"CreateThenInspectShowsACreatedContainer", createThenInspect},
	{"CreateWithATakenNameIsAlreadyExists", createTwice},
	{"CreateWithAMissingImageIsNotFound", createMissingImage},
	{"CreateWithAMissingSecretIsNotFound", createMissingSecret},
	{"StartRunsTheContainer", startRuns},
	{"StartsThatOverlapOrWereAbandonedLeaveTheContainerRunning", startsOverlap},
	{"AnExitIsSeenByEventsAndInspect", exitSeenByEventsAndInspect},
	{"LogsReturnAtMostMaxBytesOfTheEnd", logsKeepTheEnd},
	{"StreamLogsSendsTheOutputItsTailAndFollowsUntilTheContainerStops", streamLogs},
	{"StopEndsARunningContainerAndIgnoresOthers", stopEnds},
	{"WaitReturnsWhenTheContainerEnds", waitEnds},
	{"RemoveDeletesInAnyStateAndIgnoresMissing", removeInAnyState},
	{"ListSelectsByEveryLabelInAnyState", listByLabels},
	{"AMissingContainerIsNotFound", missingContainer},
	{"ImageExists", imageExists},
	{"SecretExists", secretExists},
	{"SecretValuesGivesAnExitedContainersSecretValues", secretValues},
	{"SecretValueReadsASecretAndLeavesNothingBehind", secretValue},
	{"EveryCallOnAnUnavailableEngineIsUnavailable", unavailable},
}

// secretValues: the values of an exited container's env secrets come back,
// for masking its output, and those of secrets it does not use do not. An
// exited one, as the controller asks: Podman 4.3.1 puts env secrets into a
// container's environment (where its runtime reads them back) only when it
// starts.
func secretValues(c *tc) {
	used, unused := "agentrun-contract-used-"+c.suffix, "agentrun-contract-unused-"+c.suffix
	c.h.AddSecret(c.T, c.r, used, "used-value-"+c.suffix)
	c.h.AddSecret(c.T, c.r, unused, "unused-value-"+c.suffix)
	s := c.spec("secrets")
	s.SecretEnv = map[string]string{"TOKEN": used}
	id := c.exited(s, 0, "").ID
	values, err := c.r.SecretValues(c.ctx, id, s.SecretEnv)
	if err != nil {
		c.Fatalf("SecretValues = %v", err)
	}
	if len(values) != 1 || values[0] != "used-value-"+c.suffix {
		c.Errorf("SecretValues = %d values, want exactly the used secret's value", len(values))
	}
}

func secretValue(c *tc) {
	name := "agentrun-contract-key-" + c.suffix
	c.h.AddSecret(c.T, c.r, name, "key-value-"+c.suffix)
	value, err := c.r.SecretValue(c.ctx, name)
	if err != nil || value != "key-value-"+c.suffix {
		c.Fatalf("SecretValue = %d bytes, %v; want the secret's value", len(value), err)
	}
	// Other reads (other cases, other suites) may run beside this one:
	// only containers made to read this secret count.
	left, err := c.r.List(c.ctx, map[string]string{containers.LabelSecretRead: name})
	if err != nil {
		c.Fatal(err)
	}
	for _, ctr := range left {
		c.Errorf("SecretValue left container %s behind", ctr.Name)
	}
	if _, err := c.r.SecretValue(c.ctx, "agentrun-contract-absent-"+c.suffix); !errors.Is(err, containers.ErrNotFound) {
		c.Errorf("SecretValue of a missing secret = %v, want ErrNotFound", err)
	}
}

func createThenInspect(c *tc) {
	secret, secretValue := "agentrun-contract-"+c.suffix, "secret-value-"+c.suffix
	c.h.AddSecret(c.T, c.r, secret, secretValue)
	plainValue := "plain-value-" + c.suffix
	s := c.spec("full")
	s.Workdir = "/data"
	s.Env = map[string]string{"PLAIN": plainValue}
	s.SecretEnv = map[string]string{"TOKEN": secret}
	s.Mounts = []containers.Mount{{Source: c.TempDir(), Destination: "/data", Options: []string{"ro"}}}
	s.MemoryBytes, s.NanoCPUs, s.PidsLimit = 64<<20, 500_000_000, 64
	s.Network = "none"
	s.NoNewPrivileges = true
	s.CapDrop, s.CapAdd = []string{"ALL"}, []string{"CHOWN"}

	before := time.Now()
	id := c.create(s)
	after := time.Now()
	if id == "" {
		c.Fatal("Create returned an empty ID")
	}
	for _, key := range []string{id, s.Name} {
		got := c.inspect(key)
		if got.ID != id || got.Name != s.Name || !hasLabels(got.Labels, s.Labels) {
			c.Errorf("Inspect(%s) = ID %s, name %s, labels %v; want %s, %s, %v", key, got.ID, got.Name, got.Labels, id, s.Name, s.Labels)
		}
		if got.State != containers.StateCreated || got.ExitCode != 0 {
			c.Errorf("Inspect(%s): state %s, exit code %d; want created, 0", key, got.State, got.ExitCode)
		}
		if !near(got.CreatedAt, before, after) || !got.StartedAt.IsZero() || !got.FinishedAt.IsZero() {
			c.Errorf("Inspect(%s): created %v (want between %v and %v), started %v, finished %v (want zero)", key, got.CreatedAt, before, after, got.StartedAt, got.FinishedAt)
		}
		// The controller must never hold a container's environment: the
		// engine may show secrets' values in it.
		if seen := fmt.Sprintf("%+v", got); strings.Contains(seen, secretValue) || strings.Contains(seen, plainValue) {
			c.Errorf("Inspect(%s) carries the environment: %s", key, seen)
		}
	}
	listed := c.list(c.label)
	if l, ok := listed[id]; !ok || l.State != containers.StateCreated || l.Name != s.Name {
		c.Errorf("List = %+v, want %s created", listed, id)
	}
	if seen := fmt.Sprintf("%+v", listed); strings.Contains(seen, secretValue) || strings.Contains(seen, plainValue) {
		c.Errorf("List carries the environment: %s", seen)
	}

	// What a caller gets is its own: changing it changes nothing stored.
	got := c.inspect(id)
	got.Labels["role"] = "changed"
	listed[id].Labels["role"] = "changed"
	if again := c.inspect(id); again.Labels["role"] != "full" {
		c.Errorf("a caller's change to Inspect's labels reached the engine: %v", again.Labels)
	}
}

func createTwice(c *tc) {
	s := c.spec("first")
	id := c.create(s)
	second := s
	second.Command = []string{"true"}
	second.Labels = labelsWith(c.label, "role", "second")
	if _, err := c.r.Create(c.ctx, second); !errors.Is(err, containers.ErrAlreadyExists) {
		c.Fatalf("second Create(%s) = %v, want ErrAlreadyExists", s.Name, err)
	}
	if got := c.inspect(s.Name); got.ID != id || got.Labels["role"] != "first" {
		c.Errorf("after a second Create, %s = %+v; want the first container untouched", s.Name, got)
	}
	if listed := c.list(c.label); len(listed) != 1 {
		c.Errorf("List = %+v, want only the first container", listed)
	}
}

func createMissingImage(c *tc) {
	s := c.spec("noimage")
	s.Image = "localhost/agentrun-absent-" + c.suffix + ":1"
	c.removeAtEnd(s.Name)
	_, err := c.r.Create(c.ctx, s)
	if !errors.Is(err, containers.ErrImageNotFound) || !errors.Is(err, containers.ErrNotFound) || !strings.Contains(err.Error(), s.Image) {
		c.Fatalf("Create with a missing image = %v, want ErrImageNotFound (an ErrNotFound) naming %s", err, s.Image)
	}
	if _, err := c.r.Inspect(c.ctx, s.Name); !errors.Is(err, containers.ErrNotFound) {
		c.Errorf("after a failed Create, Inspect(%s) = %v, want ErrNotFound", s.Name, err)
	}
}

func createMissingSecret(c *tc) {
	s := c.spec("nosecret")
	s.SecretEnv = map[string]string{"TOKEN": "agentrun-absent-" + c.suffix}
	c.removeAtEnd(s.Name)
	if _, err := c.r.Create(c.ctx, s); !errors.Is(err, containers.ErrNotFound) || errors.Is(err, containers.ErrImageNotFound) {
		c.Fatalf("Create with a missing secret = %v, want ErrNotFound, not ErrImageNotFound", err)
	}
	if _, err := c.r.Inspect(c.ctx, s.Name); !errors.Is(err, containers.ErrNotFound) {
		c.Errorf("after a failed Create, Inspect(%s) = %v, want ErrNotFound", s.Name, err)
	}
}

func startRuns(c *tc) {
	id := c.create(c.spec("started"))
	before := time.Now()
	if err := c.r.Start(c.ctx, id); err != nil {
		c.Fatalf("Start = %v", err)
	}
	after := time.Now()
	got := c.inspect(id)
	if got.State != containers.StateRunning {
		c.Errorf("state after Start = %s, want running", got.State)
	}
	if !near(got.StartedAt, before, after) || got.StartedAt.Before(got.CreatedAt) || !got.FinishedAt.IsZero() {
		c.Errorf("after Start: created %v, started %v (want between %v and %v), finished %v (want zero)", got.CreatedAt, got.StartedAt, before, after, got.FinishedAt)
	}
	if l := c.list(c.label)[id]; l.State != containers.StateRunning {
		c.Errorf("List shows %s, want running", l.State)
	}
}

// startsOverlap: a start sent again while an earlier one is under way, or
// after one whose caller gave up on it, leaves the container running, and a
// start that failed says so only when the container did not start: the
// host's launch retries a start that timed out on a saturated host, and
// takes a failed start for a started container when Inspect then says
// running. What must never happen is a start killing the container another
// start ran (a run ended Failed with exit code 137 under that load).
func startsOverlap(c *tc) {
	id := c.create(c.spec("started-twice"))
	abandoned, cancel := context.WithTimeout(c.ctx, time.Millisecond)
	_ = c.r.Start(abandoned, id)
	cancel()
	errs := make(chan error, 3)
	for range cap(errs) {
		go func() { errs <- c.r.Start(c.ctx, id) }()
	}
	var failed []error
	for range cap(errs) {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	// Long enough for a container killed by a failed start to be seen
	// exited.
	time.Sleep(2 * time.Second)
	got := c.inspect(id)
	if got.State != containers.StateRunning {
		c.Errorf("after overlapping starts (failed: %v): %s, exit code %d; want running", failed, got.State, got.ExitCode)
	}
	if len(failed) > 0 {
		c.Logf("starts that failed, the container running: %v", failed)
	}
}

// stream reads one Events subscription.
type stream struct {
	c      *tc
	events <-chan containers.Event
	errs   <-chan error
	cancel context.CancelFunc
}

func (c *tc) follow(labels map[string]string) *stream {
	ctx, cancel := context.WithCancel(c.ctx)
	c.Cleanup(cancel)
	events, errs := c.r.Events(ctx, labels)
	return &stream{c: c, events: events, errs: errs, cancel: cancel}
}

// next returns the next event, failing the test if the stream fails or
// nothing comes in time.
func (s *stream) next(timeout time.Duration) (containers.Event, bool) {
	s.c.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			s.c.Fatalf("the event stream closed early: %v", <-s.errs)
		}
		return e, true
	case err := <-s.errs:
		s.c.Fatalf("the event stream failed: %v", err)
	case <-time.After(timeout):
	}
	return containers.Event{}, false
}

// until reads events until want returns true for one, failing the test if
// none does in time.
func (s *stream) until(what string, want func(containers.Event) bool) containers.Event {
	s.c.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		if e, ok := s.next(time.Until(deadline)); ok && want(e) {
			return e
		}
	}
	s.c.Fatalf("no %s event within %s", what, patience)
	return containers.Event{}
}

// awaitLive returns once the stream delivers events: an engine may answer a
// subscription before it starts following (Podman's file reader does), and
// events in that gap are never sent. It creates labelled probes until one's
// create event arrives.
func (s *stream) awaitLive() {
	s.c.Helper()
	for i := 0; ; i++ {
		// Any event will do: the label is the test's own, so it can only
		// be a probe's.
		s.c.create(s.c.spec("probe" + strconv.Itoa(i)))
		if _, ok := s.next(2 * time.Second); ok {
			return
		}
		if i == 20 {
			s.c.Fatal("the event stream delivered nothing for 20 probes")
		}
	}
}

func exitSeenByEventsAndInspect(c *tc) {
	events := c.follow(c.label)
	events.awaitLive()

	// A container without the label dies first; its events must not come.
	unlabelled := c.spec("unlabelled")
	unlabelled.Labels = map[string]string{uniqueKey + "-other": c.suffix}
	other := c.exited(unlabelled, 0, "")

	s := c.spec("exits")
	before := time.Now()
	c.removeAtEnd(s.Name)
	id := c.h.RunToExit(c.T, c.r, s, 3, "bye\n")
	var actions []string
	died := events.until("died", func(e containers.Event) bool {
		if e.ContainerID == other.ID {
			c.Errorf("an event of a container without the label came: %+v", e)
		}
		if e.ContainerID != id {
			return false
		}
		actions = append(actions, e.Action)
		return e.Action == "died"
	})
	after := time.Now()
	if died.ExitCode != 3 || died.Name != s.Name || !hasLabels(died.Labels, c.label) || !near(died.Time, before, after) {
		c.Errorf("died event = %+v; want exit code 3, name %s, labels %v, a time between %v and %v", died, s.Name, c.label, before, after)
	}
	if i, j := slices.Index(actions, "create"), slices.Index(actions, "start"); i < 0 || j < i {
		c.Errorf("events before died: %v; want create, then start", actions)
	}

	got := c.waitExited(id)
	// Podman stamps StartedAt once runc's start has returned, so a process
	// that ends at once can show a FinishedAt a little before it (23 ms seen
	// on a loaded machine); beyond the clock skew it would be wrong.
	if got.ExitCode != 3 || !near(got.FinishedAt, before, after) || got.FinishedAt.Before(got.StartedAt.Add(-clockSkew)) {
		c.Errorf("Inspect after the exit = %+v; want exit code 3, finished between %v and %v, after it started", got, before, after)
	}

	// Removing a running container kills it: it dies (by SIGKILL) before
	// it goes, and a follower sees both.
	killed := c.running(c.spec("killed"))
	if err := c.r.Remove(c.ctx, killed); err != nil {
		c.Fatalf("Remove of a running container = %v", err)
	}
	var ends []containers.Event
	events.until("remove", func(e containers.Event) bool {
		if e.ContainerID == killed && (e.Action == "died" || e.Action == "remove") {
			ends = append(ends, e)
		}
		return e.ContainerID == killed && e.Action == "remove"
	})
	if len(ends) != 2 || ends[0].Action != "died" || ends[0].ExitCode != 137 {
		c.Errorf("removing a running container gave %+v; want died with 137, then remove", ends)
	}

	// Cancelling the subscription ends it quietly.
	events.cancel()
	deadline := time.After(patience)
	for evs, errs := events.events, events.errs; evs != nil || errs != nil; {
		select {
		case _, ok := <-evs:
			if !ok {
				evs = nil
			}
		case err, ok := <-errs:
			if ok {
				c.Errorf("the stream failed after its context ended: %v", err)
			}
			errs = nil
		case <-deadline:
			c.Fatal("the stream's channels stayed open after its context ended")
		}
	}
}

func logsKeepTheEnd(c *tc) {
	const lastLine = "last é line" // no newline: a process need not end with one
	const output = "first line\nsecond line\n" + lastLine
	id := c.exited(c.spec("logs"), 0, output).ID
	for _, maxBytes := range []int{1 << 20, len(output)} {
		if got := c.logs(id, maxBytes); got != output {
			c.Errorf("Logs(%d) = %q, want the whole output %q", maxBytes, got, output)
		}
	}
	// Smaller windows: the last line whole when it fits; a cut inside
	// "é" or inside a line; nothing at all.
	for _, maxBytes := range []int{len(lastLine) + 1, len(lastLine), len(" line") + 1, 3, 0} {
		got := c.logs(id, maxBytes)
		switch {
		case len(got) > maxBytes || !strings.HasSuffix(output, got):
			c.Errorf("Logs(%d) = %q, want at most %d bytes of the end of %q", maxBytes, got, maxBytes, output)
		case !utf8.ValidString(got):
			c.Errorf("Logs(%d) = %q, want whole characters", maxBytes, got)
		case maxBytes >= len(lastLine) && !strings.HasSuffix(got, lastLine):
			c.Errorf("Logs(%d) = %q, want the whole last line %q, which fits", maxBytes, got, lastLine)
		case maxBytes > 0 && got == "":
			c.Errorf("Logs(%d) is empty", maxBytes)
		}
	}
}

func streamLogs(c *tc) {
	const output = "first line\nsecond line\nthird line\n"
	id := c.exited(c.spec("stream"), 0, output).ID
	for _, tt := range []struct {
		opts containers.LogOptions
		want string
	}{
		{containers.LogOptions{TailLines: -1}, output},
		{containers.LogOptions{TailLines: 1}, "third line\n"},
		{containers.LogOptions{TailLines: -1, Follow: true}, output},
		{containers.LogOptions{TailLines: -1, Since: time.Now().Add(time.Hour)}, ""},
	} {
		var b strings.Builder
		if err := c.r.StreamLogs(c.ctx, id, tt.opts, &b); err != nil {
			c.Errorf("StreamLogs(%+v) = %v", tt.opts, err)
		} else if b.String() != tt.want {
			c.Errorf("StreamLogs(%+v) sent %q, want %q", tt.opts, b.String(), tt.want)
		}
	}

	// Following a running container lasts until it stops.
	running := c.running(c.spec("followed"))
	done := make(chan error, 1)
	go func() {
		done <- c.r.StreamLogs(c.ctx, running, containers.LogOptions{TailLines: -1, Follow: true}, io.Discard)
	}()
	select {
	case err := <-done:
		c.Fatalf("StreamLogs with Follow returned while the container ran: %v", err)
	case <-time.After(time.Second):
	}
	if err := c.r.Stop(c.ctx, running, time.Second); err != nil {
		c.Fatalf("Stop = %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			c.Errorf("StreamLogs with Follow ended with %v when the container stopped", err)
		}
	case <-time.After(patience):
		c.Fatal("StreamLogs with Follow went on after the container stopped")
	}
}

func stopEnds(c *tc) {
	id := c.running(c.spec("stopped"))
	before := time.Now()
	if err := c.r.Stop(c.ctx, id, 10*time.Second); err != nil {
		c.Fatalf("Stop of a running container = %v", err)
	}
	after := time.Now()
	got := c.inspect(id)
	// The process obeyed SIGTERM: 128+15.
	if got.State != containers.StateExited || got.ExitCode != 143 || !near(got.FinishedAt, before, after) {
		c.Errorf("after Stop: %+v; want exited with 143, finished between %v and %v", got, before, after)
	}
	if err := c.r.Stop(c.ctx, id, time.Second); err != nil {
		c.Errorf("Stop of a stopped container = %v, want nil", err)
	}
	if again := c.inspect(id); again.State != got.State || again.ExitCode != got.ExitCode || !again.FinishedAt.Equal(got.FinishedAt) {
		c.Errorf("a second Stop changed the container: %+v, then %+v", got, again)
	}

	created := c.create(c.spec("never-started"))
	if err := c.r.Stop(c.ctx, created, time.Second); err != nil {
		c.Errorf("Stop of a container never started = %v, want nil", err)
	}
	if got := c.inspect(created); got.State != containers.StateCreated {
		c.Errorf("after Stop, a container never started is %s, want still created", got.State)
	}
}

// waitEnds: a wait held on a running container returns its exit code once
// it ends (stopped, exited or removed), and a wait whose context ends
// returns then.
func waitEnds(c *tc) {
	waiting := func(id string) <-chan error {
		done := make(chan error, 1)
		go func() {
			code, err := c.r.Wait(c.ctx, id)
			if err == nil && code != 143 && code != 137 {
				err = fmt.Errorf("exit code %d, want 143 (stopped) or 137 (removed)", code)
			}
			done <- err
		}()
		return done
	}
	// blocked checks that a wait has not returned while its container runs
	// (and gives it time to reach the engine).
	blocked := func(done <-chan error) {
		select {
		case err := <-done:
			c.Fatalf("Wait on a running container returned before it ended: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	// Each way a running container ends ends a wait held on it.
	for _, end := range []struct {
		how string
		do  func(id string) error
	}{
		{"stop", func(id string) error { return c.r.Stop(c.ctx, id, 10*time.Second) }},
		{"removal", func(id string) error { return c.r.Remove(c.ctx, id) }},
	} {
		id := c.running(c.spec("wait-" + end.how))
		done := waiting(id)
		blocked(done)
		if err := end.do(id); err != nil {
			c.Fatalf("%s = %v", end.how, err)
		}
		select {
		case err := <-done:
			if err != nil {
				c.Errorf("Wait ended by a %s: %v", end.how, err)
			}
		case <-time.After(patience):
			c.Errorf("Wait did not return within %s of the container's %s", patience, end.how)
		}
	}

	exited := c.exited(c.spec("wait-exited"), 3, "")
	if code, err := c.r.Wait(c.ctx, exited.ID); err != nil || code != 3 {
		c.Errorf("Wait on an exited container = %d, %v; want 3", code, err)
	}

	running := c.running(c.spec("wait-cancelled"))
	ctx, cancel := context.WithTimeout(c.ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := c.r.Wait(ctx, running); err == nil {
		c.Errorf("Wait on a running container whose context ended = nil error")
	} else if errors.Is(err, containers.ErrUnavailable) {
		c.Errorf("Wait whose context ended = %v; the caller ended it, the engine did answer", err)
	}
}

func removeInAnyState(c *tc) {
	ids := []string{
		c.create(c.spec("created")),
		c.running(c.spec("running")),
		c.exited(c.spec("exited"), 1, "").ID,
	}
	for _, id := range ids {
		if err := c.r.Remove(c.ctx, id); err != nil {
			c.Errorf("Remove(%s) = %v", id, err)
		}
		if _, err := c.r.Inspect(c.ctx, id); !errors.Is(err, containers.ErrNotFound) {
			c.Errorf("Inspect after Remove = %v, want ErrNotFound", err)
		}
		if err := c.r.Remove(c.ctx, id); err != nil {
			c.Errorf("Remove of a removed container = %v, want nil", err)
		}
	}
	if listed := c.list(c.label); len(listed) != 0 {
		c.Errorf("List after Remove = %+v, want none", listed)
	}
	if err := c.r.Remove(c.ctx, "agentrun-contract-absent-"+c.suffix); err != nil {
		c.Errorf("Remove of a name never used = %v, want nil", err)
	}
}

func listByLabels(c *tc) {
	pick := func(role, v string) containers.Spec {
		s := c.spec(role)
		s.Labels["pick"] = v
		return s
	}
	created := c.create(pick("created", "yes"))
	running := c.running(pick("running", "yes"))
	exited := c.exited(pick("exited", "yes"), 2, "").ID
	other := c.create(pick("other", "no"))

	got := c.list(labelsWith(c.label, "pick", "yes"))
	want := map[string]containers.State{created: containers.StateCreated, running: containers.StateRunning, exited: containers.StateExited}
	if len(got) != len(want) {
		c.Errorf("List(pick=yes) = %+v, want exactly %v", got, want)
	}
	for id, state := range want {
		l, ok := got[id]
		if !ok || l.State != state || !hasLabels(l.Labels, map[string]string{"pick": "yes"}) || !strings.HasPrefix(l.Name, "agentrun-contract-"+c.suffix) {
			c.Errorf("List(pick=yes)[%s] = %+v (listed: %v), want %s", id, l, ok, state)
		}
	}
	if l := got[exited]; l.ExitCode != 2 || l.FinishedAt.IsZero() {
		c.Errorf("List shows the exited container as %+v, want exit code 2 and a finish time", l)
	}
	if _, ok := c.list(c.label)[other]; !ok || len(c.list(c.label)) != 4 {
		c.Errorf("List(by the test's label) = %+v, want all four", c.list(c.label))
	}
	if none := c.list(labelsWith(c.label, "pick", "absent")); len(none) != 0 {
		c.Errorf("List(pick=absent) = %+v, want none", none)
	}
}

func missingContainer(c *tc) {
	name := "agentrun-contract-absent-" + c.suffix
	id := strings.Repeat("0", 56) + fmt.Sprintf("%08x", rand.Uint32())
	for _, key := range []string{name, id} {
		if _, err := c.r.Inspect(c.ctx, key); !errors.Is(err, containers.ErrNotFound) {
			c.Errorf("Inspect(%s) = %v, want ErrNotFound", key, err)
		}
		if err := c.r.Start(c.ctx, key); !errors.Is(err, containers.ErrNotFound) {
			c.Errorf("Start(%s) = %v, want ErrNotFound", key, err)
		}
		if err := c.r.Stop(c.ctx, key, time.Second); !errors.Is(err, containers.ErrNotFound) {
			c.Errorf("Stop(%s) = %v, want ErrNotFound", key, err)
		}
		if _, err := c.r.Logs(c.ctx, key, 100); !errors.Is(err, containers.ErrNotFound) {
			c.Errorf("Logs(%s) = %v, want ErrNotFound", key, err)
		}
		if _, err := c.r.Wait(c.ctx, key); !errors.Is(err, containers.ErrNotFound) {
			c.Errorf("Wait(%s) = %v, want ErrNotFound", key, err)
		}
	}
}

func imageExists(c *tc) {
	if ok, err := c.r.ImageExists(c.ctx, c.h.Image); err != nil || !ok {
		c.Errorf("ImageExists(%s) = %v, %v; want true", c.h.Image, ok, err)
	}
	absent := "localhost/agentrun-absent-" + c.suffix + ":1"
	if ok, err := c.r.ImageExists(c.ctx, absent); err != nil || ok {
		c.Errorf("ImageExists(%s) = %v, %v; want false", absent, ok, err)
	}
}

func secretExists(c *tc) {
	name := "agentrun-contract-" + c.suffix
	c.h.AddSecret(c.T, c.r, name, "value-"+c.suffix)
	if ok, err := c.r.SecretExists(c.ctx, name); err != nil || !ok {
		c.Errorf("SecretExists(%s) = %v, %v; want true", name, ok, err)
	}
	if ok, err := c.r.SecretExists(c.ctx, name+"-absent"); err != nil || ok {
		c.Errorf("SecretExists(%s-absent) = %v, %v; want false", name, ok, err)
	}
}

func unavailable(c *tc) {
	r := c.h.Unavailable(c.T)
	ctx, cancel := context.WithTimeout(c.ctx, patience)
	defer cancel()
	s := c.spec("unreachable")
	calls := map[string]func() error{
		"Ping":         func() error { return r.Ping(ctx) },
		"ImageExists":  func() error { _, err := r.ImageExists(ctx, c.h.Image); return err },
		"SecretExists": func() error { _, err := r.SecretExists(ctx, "any"); return err },
		"Create":       func() error { _, err := r.Create(ctx, s); return err },
		"Start":        func() error { return r.Start(ctx, s.Name) },
		"Inspect":      func() error { _, err := r.Inspect(ctx, s.Name); return err },
		"List":         func() error { _, err := r.List(ctx, c.label); return err },
		"Stop":         func() error { return r.Stop(ctx, s.Name, time.Second) },
		"Remove":       func() error { return r.Remove(ctx, s.Name) },
		"Logs":         func() error { _, err := r.Logs(ctx, s.Name, 100); return err },
		"Wait":         func() error { _, err := r.Wait(ctx, s.Name); return err },
		"SecretValues": func() error { _, err := r.SecretValues(ctx, s.Name, map[string]string{"T": "any"}); return err },
		"Events": func() error {
			events, errs := r.Events(ctx, c.label)
			select {
			case err := <-errs:
				if _, open := <-events; open {
					return errors.New("the event channel stayed open after the error")
				}
				return err
			case <-ctx.Done():
				return errors.New("no error from the event stream")
			}
		},
	}
	for method, call := range calls {
		if err := call(); !errors.Is(err, containers.ErrUnavailable) {
			c.Errorf("%s on an unavailable engine = %v, want ErrUnavailable", method, err)
		}
	}
}
