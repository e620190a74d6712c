// Package fake is an in-memory containers.Runtime for fast unit tests of the
// reconcile logic. Each Runtime keeps its own state; tests drive containers to
// exit with Exit, make the engine unreachable with SetUnavailable, and
// exercise event followers with BreakEventStreams and ReplayEvents.
//
// It runs the same contract as the Podman adapter
// (internal/containers/runtimetest), which keeps it true to Podman.
package fake

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"k8s.io/utils/clock"

	"github.com/agentrun/agentrun/internal/containers"
)

// Runtime is an in-memory container engine.
type Runtime struct {
	mu          sync.Mutex
	now         func() time.Time
	nextID      int
	containers  map[string]*entry // by ID
	images      map[string]bool
	secrets     map[string]string // name to value
	unavailable bool
	subscribers []*subscriber
	// watchers follow inventory changes (InventoryChanges).
	watchers []*subscriber
	history  []containers.Event // every event emitted, for ReplayEvents
	replay   bool
	calls    map[string]int
	// failNext holds, by method, errors the next calls return instead of
	// acting (FailNext).
	failNext map[string][]error
	// lateNext holds errors the next starts return after starting
	// (StartLate).
	lateNext []error
	// changed is closed, and replaced, whenever a container's state changes
	// or the engine goes down, to wake Wait calls.
	changed chan struct{}
}

type entry struct {
	c      containers.Container
	spec   containers.Spec
	output string
	// chunks are the output as written, with when, for StreamLogs.
	chunks []chunk
	// changed is closed, and replaced, when output is written or the
	// container exits or goes: StreamLogs followers wait on it.
	changed chan struct{}
}

type chunk struct {
	at   time.Time
	text string
}

// write appends to the container's output. Past spec.LogMaxBytes the log
// starts afresh with text, as conmon truncates a k8s-file log that reached
// its size.
func (e *entry) write(at time.Time, text string) {
	if text == "" {
		return
	}
	if limit := e.spec.LogMaxBytes; limit > 0 && int64(len(e.output)+len(text)) > limit {
		e.output = ""
	}
	e.output += text
	e.chunks = append(e.chunks, chunk{at, text})
}

// touch wakes the container's StreamLogs followers.
func (e *entry) touch() {
	close(e.changed)
	e.changed = make(chan struct{})
}

type subscriber struct {
	labels map[string]string
	ch     chan containers.Event
	errs   chan error
}

var _ containers.Runtime = &Runtime{}

// New returns an empty engine that has the given images.
func New(images ...string) *Runtime {
	r := &Runtime{
		now:        time.Now,
		containers: map[string]*entry{},
		images:     map[string]bool{},
		secrets:    map[string]string{},
		calls:      map[string]int{},
		failNext:   map[string][]error{},
		changed:    make(chan struct{}),
	}
	for _, img := range images {
		r.images[img] = true
	}
	return r
}

// SetClock makes the engine stamp containers and events with c's time.
func (r *Runtime) SetClock(c clock.PassiveClock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = c.Now
}

// AddSecret makes a secret exist.
func (r *Runtime) AddSecret(name string) { r.SetSecret(name, "value-of-"+name) }

// SetSecret makes a secret exist with the given value. Like Podman, the
// engine reports no event for it.
func (r *Runtime) SetSecret(name, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets[name] = value
}

// RemoveSecret makes a secret not exist, as podman secret rm does.
func (r *Runtime) RemoveSecret(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.secrets, name)
}

// FailNext makes the next call of method (Create, Remove, ...) fail with err
// without acting: a fault in the middle of a pass, where SetUnavailable
// would fail the whole pass.
func (r *Runtime) FailNext(method string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNext[method] = append(r.failNext[method], err)
}

// StartLate makes the next Start start the container and then fail with
// err: a start whose answer came after the caller's deadline (Podman, CPU
// starved, starts it anyway).
func (r *Runtime) StartLate(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lateNext = append(r.lateNext, err)
}

// AddImage makes an image present, and reports it to inventory watchers.
func (r *Runtime) AddImage(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images[name] = true
	for _, w := range r.watchers {
		select {
		case w.ch <- containers.Event{Action: "tag", Name: name}:
		default: // one pending change says enough
		}
	}
}

// SetUnavailable makes every call fail with containers.ErrUnavailable, and
// ends the open event streams with it, as a stopped service does.
func (r *Runtime) SetUnavailable(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unavailable = down
	if down {
		r.breakStreams(fmt.Errorf("fake engine: %w", containers.ErrUnavailable))
		r.wake()
	}
}

// BreakEventStreams ends every open event stream as a broken connection
// does: err arrives on its error channel, then both channels close. Streams
// opened afterwards work.
func (r *Runtime) BreakEventStreams(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.breakStreams(err)
}

func (r *Runtime) breakStreams(err error) {
	for _, s := range slices.Concat(r.subscribers, r.watchers) {
		r.endStream(s, err)
	}
}

// ReplayEvents makes every event stream opened from now on start with the
// engine's earlier events for the containers it follows, as Podman 4.3 may
// when a stream opens; a follower then sees, say, a died event twice.
func (r *Runtime) ReplayEvents(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replay = on
}

// Exit ends a running container with the given code, after it printed
// output, as if its process exited, and emits a died event.
func (r *Runtime) Exit(nameOrID string, code int32, output string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.find(nameOrID)
	if e == nil {
		return fmt.Errorf("container %s: %w", nameOrID, containers.ErrNotFound)
	}
	e.c.State, e.c.ExitCode, e.c.FinishedAt = containers.StateExited, code, r.now()
	e.write(r.now(), output)
	e.touch()
	r.emit(e, "died")
	return nil
}

// Print adds output to a container, as if its process printed it.
func (r *Runtime) Print(nameOrID, output string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.find(nameOrID)
	if e == nil {
		return fmt.Errorf("container %s: %w", nameOrID, containers.ErrNotFound)
	}
	e.write(r.now(), output)
	e.touch()
	return nil
}

// SpecOf returns the spec a container was created with.
func (r *Runtime) SpecOf(nameOrID string) (containers.Spec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.find(nameOrID); e != nil {
		return e.spec, true
	}
	return containers.Spec{}, false
}

// Calls returns how many times a method was called.
func (r *Runtime) Calls(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[method]
}

// All returns every container the engine holds.
func (r *Runtime) All() []containers.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []containers.Container
	for _, e := range r.containers {
		out = append(out, e.view())
	}
	return out
}

// view is the container as a caller gets it: a copy, as from a real engine,
// so that a caller's changes never reach the engine's state.
func (e *entry) view() containers.Container {
	c := e.c
	c.Labels = maps.Clone(c.Labels)
	return c
}

// enter records a call and reports whether the engine is reachable; the
// caller must hold mu.
func (r *Runtime) enter(method string) error {
	r.calls[method]++
	if r.unavailable {
		return fmt.Errorf("fake engine: %w", containers.ErrUnavailable)
	}
	if errs := r.failNext[method]; len(errs) > 0 {
		r.failNext[method] = errs[1:]
		return errs[0]
	}
	return nil
}

func (r *Runtime) find(nameOrID string) *entry {
	if e, ok := r.containers[nameOrID]; ok {
		return e
	}
	for _, e := range r.containers {
		if e.c.Name == nameOrID {
			return e
		}
	}
	return nil
}

// wake ends the current round of Wait calls' sleep; the caller must hold mu.
func (r *Runtime) wake() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Runtime) emit(e *entry, action string) {
	r.wake()
	ev := containers.Event{ContainerID: e.c.ID, Name: e.c.Name, Action: action, Labels: maps.Clone(e.c.Labels), Time: r.now(), ExitCode: e.c.ExitCode}
	r.history = append(r.history, ev)
	for _, s := range r.subscribers {
		if hasLabels(e.c.Labels, s.labels) {
			out := ev
			out.Labels = maps.Clone(ev.Labels) // each follower gets its own
			select {
			case s.ch <- out:
			default: // a slow test subscriber loses events, as a real stream may
			}
		}
	}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (r *Runtime) Ping(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enter("Ping")
}

func (r *Runtime) ImageExists(_ context.Context, image string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("ImageExists"); err != nil {
		return false, err
	}
	return r.images[image], nil
}

func (r *Runtime) SecretExists(_ context.Context, name string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("SecretExists"); err != nil {
		return false, err
	}
	_, ok := r.secrets[name]
	return ok, nil
}

func (r *Runtime) SecretValues(_ context.Context, id string, secretEnv map[string]string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("SecretValues"); err != nil {
		return nil, err
	}
	if r.find(id) == nil {
		return nil, fmt.Errorf("container %s: %w", id, containers.ErrNotFound)
	}
	var values []string
	for _, name := range secretEnv {
		if v, ok := r.secrets[name]; ok {
			values = append(values, v)
		}
	}
	return values, nil
}

func (r *Runtime) SecretValue(_ context.Context, name string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("SecretValue"); err != nil {
		return "", err
	}
	v, ok := r.secrets[name]
	if !ok {
		return "", fmt.Errorf("secret %s: %w", name, containers.ErrNotFound)
	}
	return v, nil
}

func (r *Runtime) Create(_ context.Context, spec containers.Spec) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Create"); err != nil {
		return "", err
	}
	if r.find(spec.Name) != nil {
		return "", fmt.Errorf("container name %s: %w", spec.Name, containers.ErrAlreadyExists)
	}
	if !r.images[spec.Image] {
		return "", fmt.Errorf("image %s: %w", spec.Image, containers.ErrImageNotFound)
	}
	for _, secret := range spec.SecretEnv {
		if _, ok := r.secrets[secret]; !ok {
			return "", fmt.Errorf("secret %s: %w", secret, containers.ErrNotFound)
		}
	}
	r.nextID++
	id := fmt.Sprintf("%064x", r.nextID)
	e := &entry{spec: spec, changed: make(chan struct{}), c: containers.Container{
		ID: id, Name: spec.Name, Labels: maps.Clone(spec.Labels), State: containers.StateCreated, CreatedAt: r.now(),
	}}
	r.containers[id] = e
	r.emit(e, "create")
	return id, nil
}

func (r *Runtime) Start(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Start"); err != nil {
		return err
	}
	e := r.find(id)
	if e == nil {
		return fmt.Errorf("container %s: %w", id, containers.ErrNotFound)
	}
	e.c.State, e.c.StartedAt = containers.StateRunning, r.now()
	r.emit(e, "start")
	if len(r.lateNext) > 0 {
		err := r.lateNext[0]
		r.lateNext = r.lateNext[1:]
		return err
	}
	return nil
}

func (r *Runtime) Inspect(_ context.Context, nameOrID string) (containers.Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Inspect"); err != nil {
		return containers.Container{}, err
	}
	e := r.find(nameOrID)
	if e == nil {
		return containers.Container{}, fmt.Errorf("container %s: %w", nameOrID, containers.ErrNotFound)
	}
	return e.view(), nil
}

func (r *Runtime) List(_ context.Context, labels map[string]string) ([]containers.Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("List"); err != nil {
		return nil, err
	}
	var out []containers.Container
	for _, e := range r.containers {
		if hasLabels(e.c.Labels, labels) {
			out = append(out, e.view())
		}
	}
	return out, nil
}

func (r *Runtime) Stop(_ context.Context, id string, _ time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Stop"); err != nil {
		return err
	}
	e := r.find(id)
	if e == nil {
		return fmt.Errorf("container %s: %w", id, containers.ErrNotFound)
	}
	if e.c.State == containers.StateRunning {
		e.c.State, e.c.ExitCode, e.c.FinishedAt = containers.StateExited, 143, r.now()
		e.touch()
		r.emit(e, "died")
	}
	return nil
}

// Wait returns once the container has exited, or has been removed (with the
// code it had: 137 when the removal killed it, as with Podman).
func (r *Runtime) Wait(ctx context.Context, id string) (int32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Wait"); err != nil {
		return 0, err
	}
	e := r.find(id)
	if e == nil {
		return 0, fmt.Errorf("container %s: %w", id, containers.ErrNotFound)
	}
	for e.c.State != containers.StateExited && r.containers[e.c.ID] == e {
		if r.unavailable {
			return 0, fmt.Errorf("fake engine: %w", containers.ErrUnavailable)
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
			r.mu.Lock()
		case <-ctx.Done():
			r.mu.Lock()
			return 0, ctx.Err()
		}
	}
	return e.c.ExitCode, nil
}

func (r *Runtime) Remove(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Remove"); err != nil {
		return err
	}
	if e := r.find(id); e != nil {
		if e.c.State == containers.StateRunning {
			// Podman kills a running container it is told to remove: it
			// dies by SIGKILL before it goes.
			e.c.State, e.c.ExitCode, e.c.FinishedAt = containers.StateExited, 137, r.now()
			r.emit(e, "died")
		}
		delete(r.containers, e.c.ID)
		e.touch()
		r.emit(e, "remove")
	}
	return nil
}

func (r *Runtime) Logs(_ context.Context, id string, maxBytes int) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Logs"); err != nil {
		return "", err
	}
	e := r.find(id)
	if e == nil {
		return "", fmt.Errorf("container %s: %w", id, containers.ErrNotFound)
	}
	out := e.output
	if len(out) > maxBytes {
		// Podman's cut starts at a whole character (and sometimes a line);
		// this models the first part, which is what callers can rely on.
		out = out[len(out)-max(maxBytes, 0):]
		for len(out) > 0 && !utf8.RuneStart(out[0]) {
			out = out[1:]
		}
	}
	return out, nil
}

// StreamLogs sends the output chunk by chunk, as Podman sends it frame by
// frame; with Follow, it waits for more until the container is no longer
// running (or is removed).
func (r *Runtime) StreamLogs(ctx context.Context, id string, opts containers.LogOptions, w io.Writer) error {
	r.mu.Lock()
	if err := r.enter("StreamLogs"); err != nil {
		r.mu.Unlock()
		return err
	}
	e := r.find(id)
	if e == nil {
		r.mu.Unlock()
		return fmt.Errorf("container %s: %w", id, containers.ErrNotFound)
	}
	var first strings.Builder
	for _, c := range e.chunks {
		if !c.at.Before(opts.Since) {
			first.WriteString(c.text)
		}
	}
	pending, sent := []string{lastLines(first.String(), opts.TailLines)}, len(e.chunks)
	for {
		done := !opts.Follow || e.c.State != containers.StateRunning && e.c.State != containers.StateCreated || r.containers[e.c.ID] != e
		changed := e.changed
		r.mu.Unlock()
		for _, text := range pending {
			if _, err := io.WriteString(w, text); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		pending = nil
		for _, c := range e.chunks[sent:] {
			pending = append(pending, c.text)
		}
		sent = len(e.chunks)
	}
}

// lastLines is the last n lines of s (all of them when n is negative).
func lastLines(s string, n int) string {
	if n < 0 {
		return s
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

func (r *Runtime) Events(ctx context.Context, labels map[string]string) (<-chan containers.Event, <-chan error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := make(chan error, 1)
	if err := r.enter("Events"); err != nil {
		errs <- err
		close(errs)
		ch := make(chan containers.Event)
		close(ch)
		return ch, errs
	}
	var replay []containers.Event
	if r.replay {
		for _, ev := range r.history {
			if hasLabels(ev.Labels, labels) {
				replay = append(replay, ev)
			}
		}
	}
	s := &subscriber{labels: labels, ch: make(chan containers.Event, 64+len(replay)), errs: errs}
	for _, ev := range replay {
		ev.Labels = maps.Clone(ev.Labels)
		s.ch <- ev
	}
	r.subscribers = append(r.subscribers, s)
	// As Podman's stream does, both channels close when ctx ends, so that a
	// caller ranging over the events is not left waiting.
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.endStream(s, nil)
	})
	return s.ch, errs
}

// Inventory reports "fake" as the version and the secrets and images, sorted.
func (r *Runtime) Inventory(context.Context) (containers.Inventory, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enter("Inventory"); err != nil {
		return containers.Inventory{}, err
	}
	return containers.Inventory{
		Version: "fake",
		Secrets: slices.Sorted(maps.Keys(r.secrets)),
		Images:  slices.Sorted(maps.Keys(r.images)),
	}, nil
}

// InventoryChanges reports AddImage calls; secrets, as with Podman, go
// unreported.
func (r *Runtime) InventoryChanges(ctx context.Context) (<-chan struct{}, <-chan error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out, errs := make(chan struct{}), make(chan error, 1)
	if err := r.enter("InventoryChanges"); err != nil {
		errs <- err
		close(errs)
		close(out)
		return out, errs
	}
	w := &subscriber{ch: make(chan containers.Event, 1), errs: make(chan error, 1)}
	r.watchers = append(r.watchers, w)
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.endStream(w, nil)
	})
	go func() {
		defer close(errs)
		defer close(out)
		for range w.ch {
			select {
			case out <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if err, ok := <-w.errs; ok {
			errs <- err
		}
	}()
	return out, errs
}

// endStream closes a subscriber's channels, first sending err if there is
// one; the caller must hold mu.
func (r *Runtime) endStream(s *subscriber, err error) {
	if i := slices.Index(r.watchers, s); i >= 0 {
		r.watchers = slices.Delete(r.watchers, i, i+1)
	} else if i = slices.Index(r.subscribers, s); i >= 0 {
		r.subscribers = slices.Delete(r.subscribers, i, i+1)
	} else {
		return // ended already
	}
	if err != nil {
		s.errs <- err
	}
	close(s.ch)
	close(s.errs)
}
