package notify

import (
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Queue holds the runs whose callbacks wait for a delivery worker: a queue
// per namespace, served in turn, so that one namespace's many callbacks, or
// its slow receivers, delay another namespace's by one turn per worker at
// most. A run is in it once however often it is added, from its first Add
// to its Done, while it waits, is delivered, or waits for a retry.
type Queue struct {
	clock clock.Clock

	mu sync.Mutex
	// byNamespace are the runs ready for a try, first come first.
	byNamespace map[string][]types.NamespacedName
	// turns are the namespaces with ready runs; the first is served next.
	turns []string
	// pending are the runs added and not done.
	pending map[types.NamespacedName]bool
	// ready holds a token while runs are ready, to wake a worker.
	ready chan struct{}
}

// NewQueue is an empty queue whose retries wait on clk.
func NewQueue(clk clock.Clock) *Queue {
	return &Queue{
		clock:       clk,
		byNamespace: map[string][]types.NamespacedName{},
		pending:     map[types.NamespacedName]bool{},
		ready:       make(chan struct{}, 1),
	}
}

// Add queues run for a try, unless it is pending already, and tells
// whether it did.
func (q *Queue) Add(run types.NamespacedName) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending[run] {
		return false
	}
	q.pending[run] = true
	q.push(run)
	return true
}

// Retry queues a pending run again after wait, or drops it if ctx ends.
func (q *Queue) Retry(ctx context.Context, run types.NamespacedName, wait time.Duration) {
	go func() {
		select {
		case <-q.clock.After(wait):
		case <-ctx.Done():
			q.Done(run)
			return
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		q.push(run)
	}()
}

// Done ends run's time in the queue; a later Add queues it anew.
func (q *Queue) Done(run types.NamespacedName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, run)
}

// Next waits for a ready run and takes it from the queue: the first of the
// namespace whose turn it is. It returns false once ctx ends.
func (q *Queue) Next(ctx context.Context) (types.NamespacedName, bool) {
	for {
		if run, ok := q.take(); ok {
			return run, true
		}
		select {
		case <-q.ready:
		case <-ctx.Done():
			return types.NamespacedName{}, false
		}
	}
}

// push appends run to its namespace's queue; q.mu is held.
func (q *Queue) push(run types.NamespacedName) {
	if len(q.byNamespace[run.Namespace]) == 0 {
		q.turns = append(q.turns, run.Namespace)
	}
	q.byNamespace[run.Namespace] = append(q.byNamespace[run.Namespace], run)
	q.signal()
}

// take removes the next ready run; its namespace's next turn comes after
// every other namespace's.
func (q *Queue) take() (types.NamespacedName, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.turns) == 0 {
		return types.NamespacedName{}, false
	}
	ns := q.turns[0]
	q.turns = slices.Delete(q.turns, 0, 1)
	runs := q.byNamespace[ns]
	run := runs[0]
	if len(runs) == 1 {
		delete(q.byNamespace, ns)
	} else {
		q.byNamespace[ns] = runs[1:]
		q.turns = append(q.turns, ns)
	}
	if len(q.turns) > 0 {
		q.signal() // for the next idle worker
	}
	return run, true
}

// signal wakes one waiting worker; a token already there does.
func (q *Queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
