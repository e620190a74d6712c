package notify

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
)

func run(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func TestQueueServesNamespacesInTurn(t *testing.T) {
	q := NewQueue(clocktesting.NewFakeClock(time.Now()))
	for _, name := range []string{"a1", "a2", "a3", "a4"} {
		q.Add(run("busy", name))
	}
	q.Add(run("quiet", "q1"))
	q.Add(run("other", "o1"))
	q.Add(run("quiet", "q2"))
	q.Add(run("busy", "a1")) // pending already: not queued twice

	want := []types.NamespacedName{
		run("busy", "a1"), run("quiet", "q1"), run("other", "o1"),
		run("busy", "a2"), run("quiet", "q2"), run("busy", "a3"), run("busy", "a4"),
	}
	for i, w := range want {
		got, ok := q.Next(context.Background())
		if !ok || got != w {
			t.Fatalf("turn %d: %v, want %v", i, got, w)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, ok := q.Next(ctx); ok {
		t.Errorf("an empty queue handed out %v", got)
	}
}

func TestQueueRetriesAfterTheWait(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	q := NewQueue(clk)
	q.Add(run("ns", "r"))
	r, _ := q.Next(context.Background())
	q.Retry(context.Background(), r, time.Minute)
	q.Add(r) // its pass comes again while it waits: no second try
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	if _, ok := q.take(); ok {
		t.Fatal("a run waiting for its retry was handed out")
	}
	clk.Step(time.Minute)
	if got, ok := q.Next(context.Background()); !ok || got != r {
		t.Fatalf("after the wait: %v, %v", got, ok)
	}
	q.Done(r)
	q.Add(r)
	if got, ok := q.take(); !ok || got != r {
		t.Errorf("a run done and added again is queued anew: %v, %v", got, ok)
	}
}
