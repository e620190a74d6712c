package agentruns

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// checker is a DoneChecker done when its channel closes.
type checker chan struct{}

func (c checker) Name() string          { return "checker" }
func (c checker) Done() <-chan struct{} { return c }

func closed(t *testing.T, ch <-chan struct{}) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

func TestBothSyncedIsDoneOnceBothAre(t *testing.T) {
	a, b := make(checker), make(checker)
	d := bothSynced(a, b, make(chan struct{}))
	close(b)
	select {
	case <-d.Done():
		t.Fatal("done with one of two checkers done")
	case <-time.After(100 * time.Millisecond):
	}
	close(a)
	if !closed(t, d.Done()) {
		t.Fatal("not done with both checkers done")
	}
}

// A cache stopped before its informers synced: the wait for them ends
// (it would wait for ever), and it does not say they synced.
func TestBothSyncedStopsWaitingAsTheCacheStops(t *testing.T) {
	never := make(checker)
	stopped := make(chan struct{})
	d := &bothDone{done: make(chan struct{})}
	returned := make(chan struct{})
	go func() {
		d.wait(never, never, stopped)
		close(returned)
	}()
	close(stopped)
	if !closed(t, returned) {
		t.Fatal("still waiting for informers after the cache stopped")
	}
	select {
	case <-d.Done():
		t.Fatal("done though no informer synced")
	default:
	}
}

// runsCache lists its runs, to a limit as a cache does, and has no other
// use.
type runsCache struct {
	cache.Cache
	names []string
}

func (c runsCache) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	runs := list.(*agentsv1alpha1.AgentRunList)
	limit := (&client.ListOptions{}).ApplyOptions(opts).Limit
	for _, name := range c.names {
		if limit > 0 && int64(len(runs.Items)) == limit {
			break
		}
		runs.Items = append(runs.Items, agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	return nil
}

func TestAHostsRunsListWholeAndToALimit(t *testing.T) {
	c := &hostRuns{Cache: runsCache{names: []string{"placed-1", "placed-2"}}, pinned: runsCache{names: []string{"pinned-1", "pinned-2"}}}
	for _, tc := range []struct {
		opts []client.ListOption
		want int
	}{{nil, 4}, {[]client.ListOption{client.Limit(3)}, 3}, {[]client.ListOption{client.Limit(1)}, 1}, {[]client.ListOption{client.Limit(10)}, 4}} {
		var runs agentsv1alpha1.AgentRunList
		if err := c.List(context.Background(), &runs, tc.opts...); err != nil {
			t.Fatal(err)
		}
		if len(runs.Items) != tc.want {
			t.Errorf("list with %v: %d runs, want %d", tc.opts, len(runs.Items), tc.want)
		}
	}
}
