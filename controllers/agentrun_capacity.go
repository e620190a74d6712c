package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// slotTracker remembers the runs this process launched until the cache shows
// them finished, so that a launch is counted before its Running status comes
// back through the watch.
type slotTracker struct {
	mu       sync.Mutex
	launched map[types.UID]bool
}

func (s *slotTracker) take(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.launched == nil {
		s.launched = map[types.UID]bool{}
	}
	s.launched[uid] = true
}

func (s *slotTracker) release(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.launched, uid)
}

func (s *slotTracker) holds(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.launched[uid]
}

// hasSlot tells whether run may start (or be claimed) now. With
// MaxConcurrentRuns free slots at most, the runs waiting on this host, and the
// unclaimed ones it could take, get them in creation order.
func (r *AgentRunReconciler) hasSlot(ctx context.Context, run *agentsv1alpha1.AgentRun) (bool, error) {
	if r.MaxConcurrentRuns <= 0 {
		return true, nil
	}
	all := &agentsv1alpha1.AgentRunList{}
	if err := r.List(ctx, all); err != nil {
		return false, fmt.Errorf("listing AgentRuns to count this host's runs: %w", err)
	}
	busy := 0
	var queue []*agentsv1alpha1.AgentRun
	for i := range all.Items {
		other := &all.Items[i]
		if other.UID == run.UID {
			continue // counted from the caller's fresher copy below
		}
		switch {
		case other.Status.Phase.IsFinished() || !r.isOurs(other) || !other.DeletionTimestamp.IsZero():
		case other.Status.Host == r.Host && (other.Status.Phase == agentsv1alpha1.PhaseRunning || r.slots.holds(other.UID)):
			busy++
		case !readyToStart(other):
			// A run waiting for a secret, an image or its retry time does
			// not hold back the runs behind it.
		default:
			queue = append(queue, other)
		}
	}
	queue = append(queue, run)
	slices.SortFunc(queue, byCreation)
	return slices.Index(queue, run) < r.MaxConcurrentRuns-busy, nil
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
