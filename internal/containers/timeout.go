package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// WithCallTimeout bounds every call to rt but the streams and Wait: a call that
// takes longer than d (a stop, d beyond its grace period) fails with
// ErrUnavailable. A hung Podman service then marks the host's runs
// PodmanUnavailable and frees the reconcile worker, instead of holding every
// worker for ever.
func WithCallTimeout(rt Runtime, d time.Duration) Runtime {
	return bounded{rt: rt, d: d}
}

type bounded struct {
	rt Runtime
	d  time.Duration
}

// call runs f under the deadline and turns its expiry into ErrUnavailable,
// naming what did not answer in time.
func call[T any](ctx context.Context, d time.Duration, what string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := f(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%s did not answer within %s: %w (%w)", what, d, ErrUnavailable, err)
	}
	return v, err
}

func noValue(f func(context.Context) error) func(context.Context) (struct{}, error) {
	return func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) }
}

func (b bounded) Ping(ctx context.Context) error {
	_, err := call(ctx, b.d, "ping", noValue(b.rt.Ping))
	return err
}

func (b bounded) ImageExists(ctx context.Context, image string) (bool, error) {
	return call(ctx, b.d, "image lookup", func(ctx context.Context) (bool, error) { return b.rt.ImageExists(ctx, image) })
}

func (b bounded) SecretExists(ctx context.Context, name string) (bool, error) {
	return call(ctx, b.d, "secret lookup", func(ctx context.Context) (bool, error) { return b.rt.SecretExists(ctx, name) })
}

func (b bounded) Create(ctx context.Context, spec Spec) (string, error) {
	return call(ctx, b.d, "create", func(ctx context.Context) (string, error) { return b.rt.Create(ctx, spec) })
}

func (b bounded) Start(ctx context.Context, id string) error {
	_, err := call(ctx, b.d, "start", noValue(func(ctx context.Context) error { return b.rt.Start(ctx, id) }))
	return err
}

func (b bounded) Inspect(ctx context.Context, nameOrID string) (Container, error) {
	return call(ctx, b.d, "inspect", func(ctx context.Context) (Container, error) { return b.rt.Inspect(ctx, nameOrID) })
}

func (b bounded) List(ctx context.Context, labels map[string]string) ([]Container, error) {
	return call(ctx, b.d, "list", func(ctx context.Context) ([]Container, error) { return b.rt.List(ctx, labels) })
}

func (b bounded) Stop(ctx context.Context, id string, grace time.Duration) error {
	_, err := call(ctx, b.d+grace, "stop", noValue(func(ctx context.Context) error { return b.rt.Stop(ctx, id, grace) }))
	return err
}

// Wait lasts as long as the container runs: it has no deadline.
func (b bounded) Wait(ctx context.Context, id string) (int32, error) {
	return b.rt.Wait(ctx, id)
}

func (b bounded) Remove(ctx context.Context, id string) error {
	_, err := call(ctx, b.d, "remove", noValue(func(ctx context.Context) error { return b.rt.Remove(ctx, id) }))
	return err
}

func (b bounded) SecretValue(ctx context.Context, name string) (string, error) {
	return call(ctx, b.d, "secret read", func(ctx context.Context) (string, error) { return b.rt.SecretValue(ctx, name) })
}

func (b bounded) SecretValues(ctx context.Context, id string, secretEnv map[string]string) ([]string, error) {
	return call(ctx, b.d, "secret read", func(ctx context.Context) ([]string, error) { return b.rt.SecretValues(ctx, id, secretEnv) })
}

func (b bounded) Logs(ctx context.Context, id string, maxBytes int) (string, error) {
	return call(ctx, b.d, "logs", func(ctx context.Context) (string, error) { return b.rt.Logs(ctx, id, maxBytes) })
}

// StreamLogs lasts as long as the container writes when it follows: it has
// no deadline.
func (b bounded) StreamLogs(ctx context.Context, id string, opts LogOptions, w io.Writer) error {
	return b.rt.StreamLogs(ctx, id, opts, w)
}

// Events is a stream that lasts as long as ctx: it has no deadline.
func (b bounded) Events(ctx context.Context, labels map[string]string) (<-chan Event, <-chan error) {
	return b.rt.Events(ctx, labels)
}

func (b bounded) Inventory(ctx context.Context) (Inventory, error) {
	return call(ctx, b.d, "inventory", func(ctx context.Context) (Inventory, error) { return b.rt.Inventory(ctx) })
}

// InventoryChanges is a stream that lasts as long as ctx: it has no deadline.
func (b bounded) InventoryChanges(ctx context.Context) (<-chan struct{}, <-chan error) {
	return b.rt.InventoryChanges(ctx)
}
