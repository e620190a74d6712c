package containers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
)

// hung is an engine whose inspect and stop never answer, as a wedged Podman
// service behaves: they return only when their context ends.
type hung struct{ *fake.Runtime }

func (hung) Inspect(ctx context.Context, _ string) (containers.Container, error) {
	<-ctx.Done()
	return containers.Container{}, ctx.Err()
}

func (hung) Stop(ctx context.Context, _ string, _ time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestCallTimeoutTurnsAHungCallIntoUnavailable(t *testing.T) {
	rt := containers.WithCallTimeout(hung{fake.New()}, 50*time.Millisecond)
	_, err := rt.Inspect(context.Background(), "x")
	if !errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("Inspect on a hung engine = %v, want ErrUnavailable", err)
	}
	// A stop gets its grace period on top of the call's own bound.
	started := time.Now()
	if err := rt.Stop(context.Background(), "x", 100*time.Millisecond); !errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("Stop on a hung engine = %v, want ErrUnavailable", err)
	}
	if waited := time.Since(started); waited < 150*time.Millisecond {
		t.Errorf("Stop gave up after %s, before its grace period and bound (150ms)", waited)
	}
}

func TestCallTimeoutLeavesAnswersAndTheCallersDeadlineAlone(t *testing.T) {
	podman := fake.New("img")
	rt := containers.WithCallTimeout(podman, time.Minute)
	if _, err := rt.Inspect(context.Background(), "absent"); !errors.Is(err, containers.ErrNotFound) || errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("a quick not-found answer must pass through unchanged: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := containers.WithCallTimeout(hung{podman}, time.Minute).Inspect(ctx, "x"); errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("a call the caller cancelled is not the engine's fault: %v", err)
	}
	events, _ := rt.Events(context.Background(), nil)
	if events == nil {
		t.Fatal("the event stream must pass through")
	}
}
