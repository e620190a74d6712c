// Package containerevents follows a host's container events and turns them into
// reconcile requests for the AgentRuns the containers belong to, remembering
// what died events said of each exit. Beside the events, it holds one blocking
// wait per running container, so an exit reaches its run promptly even when
// Podman's event log lags.
package containerevents

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/source"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// Source turns the container engine's events for one host's containers into
// reconcile requests for their AgentRuns, so a container's exit is seen within
// a fraction of a second instead of at the next resync. It is a manager
// Runnable: add it with mgr.Add, and watch Requests() in the controller.
type Source struct {
	runtime containers.Runtime
	host    string
	// retryPeriod is the pause before reconnecting a broken event stream.
	retryPeriod time.Duration
	events      chan event.TypedGenericEvent[*agentsv1alpha1.AgentRun]

	mu    sync.Mutex
	exits map[string]Exit // by container ID, from died events and waits
	// waits are the containers awaited, by ID, with their runs. Those
	// added before Start begin when it does.
	waits map[string]types.NamespacedName
	// ctx is Start's while it runs: waits end with it.
	ctx     context.Context
	waiting sync.WaitGroup
}

// Exit is what a died event or a wait said of a container's end.
type Exit struct {
	Code int32
	// At is when the container ended: the died event's time stamp, or
	// when the wait answered.
	At time.Time
	// Seen is when this process learned of the end: the event's arrival
	// or the wait's answer. From Seen on, the rest of the delay until the
	// run's status says so is the host's own.
	Seen time.Time
}

// maxExits bounds the died events remembered; past it the oldest half is
// dropped, and those runs are inspected instead.
const maxExits = 4096

// Exited returns what Podman's died event, or the wait, said of a
// container, saving the reconciler an inspect call on the path from a
// container's exit to the run's status.
func (s *Source) Exited(containerID string) (Exit, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.exits[containerID]
	return e, ok
}

func (s *Source) remember(ev containers.Event) {
	switch ev.Action {
	case "died":
		s.exited(ev.ContainerID, Exit{Code: ev.ExitCode, At: ev.Time, Seen: time.Now()})
	case "remove":
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.exits, ev.ContainerID)
	}
}

func (s *Source) exited(containerID string, e Exit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.exits) >= maxExits {
		s.forgetOldest()
	}
	if known, ok := s.exits[containerID]; ok && known.Seen.Before(e.Seen) {
		e.Seen = known.Seen // the first to tell is when this process learned
	}
	s.exits[containerID] = e
}

// killed is the exit code of a process ended by SIGKILL, and what Podman's
// wait answers, with no error, for a container removed while waited on.
const killed = 128 + 9

func (s *Source) forgetOldest() {
	cutoff := make([]time.Time, 0, len(s.exits))
	for _, e := range s.exits {
		cutoff = append(cutoff, e.At)
	}
	slices.SortFunc(cutoff, time.Time.Compare)
	oldest := cutoff[len(cutoff)/2]
	for id, e := range s.exits {
		if !e.At.After(oldest) {
			delete(s.exits, id)
		}
	}
}

// NewSource follows the events of the containers labelled with host.
func NewSource(rt containers.Runtime, host string, retryPeriod time.Duration) *Source {
	return &Source{
		runtime:     rt,
		host:        host,
		retryPeriod: retryPeriod,
		events:      make(chan event.TypedGenericEvent[*agentsv1alpha1.AgentRun], 1024),
		exits:       map[string]Exit{},
		waits:       map[string]types.NamespacedName{},
	}
}

// Await holds a blocking wait on a container until it ends, then remembers
// its exit code (see Exited) and requests a pass of its run. Podman's died event is the second path to the same pass:
// whichever comes first wakes the run, and its pass records the exit, as
// every pass does, with a status write that conflicts rather than repeat
// one. Awaiting a container already awaited does nothing, so every pass that
// sees a container running may call it; after a manager restart, the first
// pass of each running run does.
func (s *Source) Await(containerID string, run types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.waits[containerID]; ok {
		return
	}
	s.waits[containerID] = run
	if s.ctx != nil {
		s.wait(s.ctx, containerID, run)
	}
}

// Awaiting tells whether a wait on the container is held now: the container
// runs, or has just ended and the wait's answer is on its way (a pass of its
// run follows it). A pass need not inspect such a container to know it has
// not ended.
func (s *Source) Awaiting(containerID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.waits[containerID]
	return ok && s.ctx != nil
}

// wait runs one wait until the container ends or ctx does; the caller holds
// mu.
func (s *Source) wait(ctx context.Context, containerID string, run types.NamespacedName) {
	s.waiting.Add(1)
	go func() {
		defer s.waiting.Done()
		code, err := s.runtime.Wait(ctx, containerID)
		if err == nil && code != killed {
			// The exit is remembered as a died event's is, so that the
			// pass need not inspect the container: its time is when the
			// wait answered. That is later than the died event's stamp:
			// Podman stamps the event when it first finds the exit file,
			// and answers the wait once its cleanup of the container is
			// done (measured, 2026-12-06: 0.3 to 1.7 s later on Podman
			// 4.3, 0.13 to 0.7 s on 5, on a busy machine), so the died
			// event, delivered within the events file's 250 ms poll, is
			// what usually wakes the run first. A 137 may be a removal,
			// which the pass must tell from an exit (ContainerLost): it
			// inspects.
			now := time.Now()
			s.exited(containerID, Exit{Code: code, At: now, Seen: now})
		}
		s.mu.Lock()
		delete(s.waits, containerID)
		s.mu.Unlock()
		if ctx.Err() != nil {
			return // the manager stops: the next one awaits again
		}
		if err != nil && !errors.Is(err, containers.ErrNotFound) {
			// Podman did not answer: the pass that follows would only
			// await again, so it comes after a pause, as a reconnect does.
			log.FromContext(ctx).WithName("podman-wait").V(1).Info("Waiting for a container failed; looking again",
				"host", s.host, "agentrun", run, "container", containerID, "error", err, "after", s.retryPeriod)
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.retryPeriod):
			}
		}
		_ = s.request(ctx, run.Namespace, run.Name)
	}()
}

// startWaits begins the waits asked for before Start, and ends them all when
// ctx ends.
func (s *Source) startWaits(ctx context.Context) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = ctx
	for id, run := range s.waits {
		s.wait(ctx, id, run)
	}
	return func() {
		s.mu.Lock()
		s.ctx = nil
		s.mu.Unlock()
		s.waiting.Wait()
	}
}

// relevantActions are the events that change what a run's status says: an
// exit, and a container gone. The create and start events of a launch are the
// reconciler's own doing; reacting to them would only re-read a stale cache.
var relevantActions = map[string]bool{"died": true, "remove": true}

// Requests is the controller-runtime source the reconciler watches.
func (s *Source) Requests() source.Source {
	return source.Channel(s.events, &handler.TypedEnqueueRequestForObject[*agentsv1alpha1.AgentRun]{})
}

// Start follows the event stream, and runs the waits Await asks for, until
// ctx ends, reconnecting when the stream breaks (Podman restarted or
// unreachable). Exits missed while the stream was down are requested once it
// is back (see catchUp). It returns once every wait has ended.
func (s *Source) Start(ctx context.Context) error {
	defer s.startWaits(ctx)()
	logger := log.FromContext(ctx).WithName("podman-events")
	for reconnect := false; ; reconnect = true {
		err := s.follow(ctx, reconnect)
		if ctx.Err() != nil {
			return nil
		}
		logger.Info("Podman event stream ended; reconnecting", "host", s.host, "error", err, "after", s.retryPeriod)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.retryPeriod):
		}
	}
}

func (s *Source) follow(ctx context.Context, reconnect bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, errs := s.runtime.Events(ctx, map[string]string{agentsv1alpha1.LabelHost: s.host})
	if reconnect {
		s.catchUp(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case ev, ok := <-events:
			if !ok {
				// An engine that cannot answer sends its error and closes
				// both channels at once; wait for the error rather than
				// race it, or the log would say the stream ended for no
				// reason.
				select {
				case err := <-errs:
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			name, namespace := ev.Labels[agentsv1alpha1.LabelName], ev.Labels[agentsv1alpha1.LabelNamespace]
			if name == "" || namespace == "" || !relevantActions[ev.Action] {
				continue
			}
			s.remember(ev)
			if err := s.request(ctx, namespace, name); err != nil {
				return err
			}
		}
	}
}

// catchUp requests the runs of this host's containers that are no longer
// running, once a broken stream is open again: their died events may have
// come while it was down (a restarted Podman 5 service replays none), and
// the periodic resync would see them only a minute later. The stream is
// opened first, so no exit falls between the two.
func (s *Source) catchUp(ctx context.Context) {
	owned, err := s.runtime.List(ctx, map[string]string{agentsv1alpha1.LabelHost: s.host})
	if err != nil {
		return // the resync sees them
	}
	for _, c := range owned {
		name, namespace := c.Labels[agentsv1alpha1.LabelName], c.Labels[agentsv1alpha1.LabelNamespace]
		if c.State == containers.StateRunning || name == "" || namespace == "" {
			continue
		}
		if s.request(ctx, namespace, name) != nil {
			return
		}
	}
}

// request asks for a pass of the run namespace/name.
func (s *Source) request(ctx context.Context, namespace, name string) error {
	run := &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	select {
	case s.events <- event.TypedGenericEvent[*agentsv1alpha1.AgentRun]{Object: run}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
