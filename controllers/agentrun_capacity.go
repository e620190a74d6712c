package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// slotTracker holds the slots this process has handed out: a run keeps its
// slot from the moment it is cleared to launch until it finishes, so a launch
// counts before its Running status comes back through the watch, and
// concurrent reconciles cannot hand out one slot twice.
type slotTracker struct {
	mu    sync.Mutex
	taken map[types.UID]bool
	// launched is the last attempt this process created a container for,
	// by run, until the cache shows the run finished: a pass that reads an
	// older copy of the run does not try to launch that attempt again.
	launched map[types.UID]int32
}

func (s *slotTracker) markLaunched(uid types.UID, attempt int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.launched == nil {
		s.launched = map[types.UID]int32{}
	}
	s.launched[uid] = attempt
}

func (s *slotTracker) launchedAttempt(uid types.UID) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.launched[uid]
}

func (s *slotTracker) forget(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.launched, uid)
	delete(s.taken, uid)
}

func (s *slotTracker) release(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.taken[uid]
	delete(s.taken, uid)
	return held
}

func (s *slotTracker) holds(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.taken[uid]
}

// releaseSlot frees run's slot and, when it held one, wakes the runs first in
// line for it at once rather than at their next recheck.
func (r *AgentRunReconciler) releaseSlot(ctx context.Context, run *agentsv1alpha1.AgentRun) {
	if !r.slots.release(run.UID) || r.wake == nil {
		return
	}
	all := &agentsv1alpha1.AgentRunList{}
	if err := r.List(ctx, all); err != nil {
		return // they recheck on their own
	}
	var waiting []*agentsv1alpha1.AgentRun
	for i := range all.Items {
		other := &all.Items[i]
		if other.UID != run.UID && r.isOurs(other) && !other.Status.Phase.IsFinished() &&
			other.Status.Phase != agentsv1alpha1.PhaseRunning && readyToStart(other) {
			waiting = append(waiting, other)
		}
	}
	slices.SortFunc(waiting, byCreation)
	for _, w := range waiting[:min(len(waiting), r.MaxConcurrentRuns)] {
		select {
		case r.wake <- event.TypedGenericEvent[*agentsv1alpha1.AgentRun]{Object: w}:
		default: // the queue is full of wake-ups already
		}
	}
}

// reserveSlot tells whether run may start now and, if so, hands it a slot.
// With MaxConcurrentRuns slots, the runs waiting on this host and the
// unclaimed ones it could take get free slots in creation order.
func (r *AgentRunReconciler) reserveSlot(ctx context.Context, run *agentsv1alpha1.AgentRun) (bool, error) {
	return r.lineUp(ctx, run, true)
}

// hasSlot tells whether run would get a slot now, without taking one: a host
// claims an unpinned run only then.
func (r *AgentRunReconciler) hasSlot(ctx context.Context, run *agentsv1alpha1.AgentRun) (bool, error) {
	return r.lineUp(ctx, run, false)
}

// lineUp tells whether run is first in line for a free slot, and takes it
// when take is set, under one lock so concurrent passes never hand out a slot
// twice.
func (r *AgentRunReconciler) lineUp(ctx context.Context, run *agentsv1alpha1.AgentRun, take bool) (bool, error) {
	if r.MaxConcurrentRuns <= 0 {
		return true, nil
	}
	all := &agentsv1alpha1.AgentRunList{}
	if err := r.List(ctx, all); err != nil {
		return false, fmt.Errorf("listing AgentRuns to count this host's runs: %w", err)
	}
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	if r.slots.taken[run.UID] {
		return true, nil
	}
	free, first := r.freeSlots(all.Items, run)
	if !first || free <= 0 {
		return false, nil
	}
	if take {
		if r.slots.taken == nil {
			r.slots.taken = map[types.UID]bool{}
		}
		r.slots.taken[run.UID] = true
	}
	return true, nil
}

// freeSlots counts the slots left and tells whether run is among the first
// runs in line for them. The caller holds slots.mu.
func (r *AgentRunReconciler) freeSlots(items []agentsv1alpha1.AgentRun, run *agentsv1alpha1.AgentRun) (free int, first bool) {
	busy := len(r.slots.taken)
	var queue []*agentsv1alpha1.AgentRun
	for i := range items {
		other := &items[i]
		switch {
		case other.UID == run.UID || r.slots.taken[other.UID]:
			// run is added below from the caller's fresher copy; taken
			// slots are counted already.
		case other.Status.Phase.IsFinished() || !r.isOurs(other) || !other.DeletionTimestamp.IsZero():
		case other.Status.Host == r.Host && other.Status.Phase == agentsv1alpha1.PhaseRunning:
			busy++ // launched by an earlier process of this host
		case !readyToStart(other):
			// A run waiting for a secret, an image or its retry time does
			// not hold back the runs behind it.
		default:
			queue = append(queue, other)
		}
	}
	queue = append(queue, run)
	slices.SortFunc(queue, byCreation)
	free = r.MaxConcurrentRuns - busy
	return free, slices.Index(queue, run) < free
}

// readyToStart tells whether a pending run waits only for a slot.
func readyToStart(run *agentsv1alpha1.AgentRun) bool {
	switch stateOf(&run.Status).reason {
	case agentsv1alpha1.ReasonSecretNotFound, agentsv1alpha1.ReasonImageNotFound, agentsv1alpha1.ReasonBackOff:
		return false
	}
	return true
}

func byCreation(a, b *agentsv1alpha1.AgentRun) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}
