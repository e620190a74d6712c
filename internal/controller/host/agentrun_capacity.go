package host

import (
	"context"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
)

// queue lists the unfinished runs that stand in this host's line: those it
// holds and those pinned to it. Unpinned runs join it once the fleet places
// them here.
func (r *AgentRunReconciler) queue(ctx context.Context) ([]agentsv1alpha1.AgentRun, error) {
	return agentruns.InLine(ctx, r.Client, r.Host)
}

// running counts the unfinished runs this host holds, for its PodmanHost.
func (r *AgentRunReconciler) running(ctx context.Context) (int, error) {
	line, err := r.queue(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range line {
		if line[i].Status.Host == r.Host {
			n++
		}
	}
	return n, nil
}

// slotTracker holds the slots this process has handed out, by run: a run
// keeps its slot from the moment it is cleared to launch until it finishes
// or goes, so a launch counts before its Running status comes back through
// the watch, and concurrent reconciles cannot hand out one slot twice. Slots
// are keyed by name, so a run that disappears can give its slot back on the
// not-found pass; the UID tells a recreated run of the same name apart.
type slotTracker struct {
	mu   sync.Mutex
	held map[types.NamespacedName]types.UID
}

// lineUp tells whether run is among the first in line for the capacity
// slots, counting the slots held and the runs of this host already running,
// and takes a slot for it when take is set, all under one lock.
func (s *slotTracker) lineUp(run *agentsv1alpha1.AgentRun, line []agentsv1alpha1.AgentRun, host string, capacity int, take bool) bool {
	key := client.ObjectKeyFromObject(run)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[key] == run.UID && run.UID != "" {
		return true
	}
	queue, busy := s.standing(line, host, run, types.NamespacedName{})
	if slices.Index(queue, run) >= capacity-busy {
		return false
	}
	if take {
		if s.held == nil {
			s.held = map[types.NamespacedName]types.UID{}
		}
		s.held[key] = run.UID
	}
	return true
}

// firstInLine are the runs that the free slots go to now: as many as are
// free, at least one, first in line. released is a run whose slot was just
// given back, which the line, read from a cache that may not show its end
// yet, must not count.
func (s *slotTracker) firstInLine(line []agentsv1alpha1.AgentRun, host string, capacity int, released types.NamespacedName) []*agentsv1alpha1.AgentRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	queue, busy := s.standing(line, host, nil, released)
	return queue[:min(len(queue), max(capacity-busy, 1))]
}

// standing sorts, in creation order, the runs of line that wait only for a
// slot (run first, from the caller's fresher copy, when given), and counts
// the busy slots: those held and those of runs an earlier process of this
// host launched. The caller holds s.mu.
func (s *slotTracker) standing(line []agentsv1alpha1.AgentRun, host string, run *agentsv1alpha1.AgentRun, released types.NamespacedName) (queue []*agentsv1alpha1.AgentRun, busy int) {
	busy = len(s.held)
	if run != nil {
		queue = append(queue, run)
	}
	for i := range line {
		other := &line[i]
		switch {
		case run != nil && other.UID == run.UID, s.held[client.ObjectKeyFromObject(other)] == other.UID,
			client.ObjectKeyFromObject(other) == released:
			// run stands in line from the caller's fresher copy; held slots
			// are counted already; a released run has ended.
		case other.Status.Phase.IsFinished() || !other.DeletionTimestamp.IsZero():
		case other.Status.Host == host && other.Status.Phase == agentsv1alpha1.PhaseRunning:
			busy++ // launched by an earlier process of this host
		case !readyToStart(other):
			// A run waiting for a secret, an image or its retry time does
			// not hold back the runs behind it.
		default:
			queue = append(queue, other)
		}
	}
	slices.SortFunc(queue, agentruns.ByCreation)
	return queue, busy
}

// release frees the slot of the run with this name, and tells whether it
// held one.
func (s *slotTracker) release(key types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, held := s.held[key]
	delete(s.held, key)
	return held
}

// releaseReplaced frees the slot held under run's name by another run: that
// one is gone, though no pass saw it go (deleted after its finalizer was
// removed by hand, and a run of the same name created before the next pass).
func (s *slotTracker) releaseReplaced(run *agentsv1alpha1.AgentRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := client.ObjectKeyFromObject(run)
	if uid, held := s.held[key]; held && uid != run.UID {
		delete(s.held, key)
	}
}

// launchHints remembers the last attempt this process created a container
// for, by run name (with the UID, so a recreated run starts afresh).
type launchHints struct {
	mu   sync.Mutex
	last map[types.NamespacedName]launchHint
}

type launchHint struct {
	uid     types.UID
	attempt int32
}

func (l *launchHints) made(run *agentsv1alpha1.AgentRun, attempt int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[types.NamespacedName]launchHint{}
	}
	l.last[client.ObjectKeyFromObject(run)] = launchHint{run.UID, attempt}
}

// launched tells whether this process created the container of attempt.
func (l *launchHints) launched(run *agentsv1alpha1.AgentRun, attempt int32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.last[client.ObjectKeyFromObject(run)]
	return ok && h.uid == run.UID && h.attempt >= attempt
}

func (l *launchHints) forget(key types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.last, key)
}

// hasSlot tells whether run would get a slot now, without taking one: a host
// claims an unpinned run only then.
func (r *AgentRunReconciler) hasSlot(ctx context.Context, run *agentsv1alpha1.AgentRun) (bool, error) {
	return r.lineUp(ctx, run, false)
}

// reserveSlot tells whether run may start now and, if so, hands it a slot.
// With MaxConcurrentRuns slots, the runs waiting on this host and the
// unclaimed ones it could take get free slots in creation order.
func (r *AgentRunReconciler) reserveSlot(ctx context.Context, run *agentsv1alpha1.AgentRun) (bool, error) {
	return r.lineUp(ctx, run, true)
}

func (r *AgentRunReconciler) lineUp(ctx context.Context, run *agentsv1alpha1.AgentRun, take bool) (bool, error) {
	if r.MaxConcurrentRuns <= 0 {
		return true, nil
	}
	line, err := r.queue(ctx)
	if err != nil {
		return false, err
	}
	return r.slots.lineUp(run, line, r.Host, r.MaxConcurrentRuns, take), nil
}

// releaseSlot frees the slot of the run with this name and, when it held one,
// wakes the runs the free slots go to at once rather than at their next
// recheck: as many as are free, not the whole line, each of whose passes
// would read the line again only to wait.
func (r *AgentRunReconciler) releaseSlot(ctx context.Context, key types.NamespacedName) {
	if !r.slots.release(key) || r.wake == nil {
		return
	}
	line, err := r.queue(ctx)
	if err != nil {
		return // they recheck on their own
	}
	for _, w := range r.slots.firstInLine(line, r.Host, r.MaxConcurrentRuns, key) {
		select {
		case r.wake <- event.TypedGenericEvent[*agentsv1alpha1.AgentRun]{Object: w}:
		default: // the queue is full of wake-ups already
		}
	}
}

// readyToStart tells whether a pending run waits only for a slot.
func readyToStart(run *agentsv1alpha1.AgentRun) bool {
	switch agentruns.StateOf(&run.Status).Reason {
	case agentsv1alpha1.ReasonSecretNotFound, agentsv1alpha1.ReasonImageNotFound, agentsv1alpha1.ReasonBackOff, agentsv1alpha1.ReasonWaitingForSession:
		return false
	}
	return true
}
