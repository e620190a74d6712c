package containers

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the calls made through Instrument, served on the manager's
// /metrics.
var (
	podmanCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentrun_podman_api_calls_total",
		Help: "Calls to the Podman API, by operation.",
	}, []string{"operation"})
	podmanLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentrun_podman_api_call_duration_seconds",
		Help:    "How long calls to the Podman API took, by operation.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"operation"})
	podmanErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentrun_podman_api_errors_total",
		Help: "Podman API calls that failed for a reason other than a missing object, by operation.",
	}, []string{"operation"})
)

func init() {
	metrics.Registry.MustRegister(podmanCalls, podmanLatency, podmanErrors)
}

// Instrument counts the calls made through rt, and their failures, in
// agentrun_podman_api_calls_total and agentrun_podman_api_errors_total. A
// missing container, secret or image is an answer, not a failure.
func Instrument(rt Runtime) Runtime {
	return instrumented{rt}
}

type instrumented struct{ rt Runtime }

func count(operation string, started time.Time, err error) {
	podmanCalls.WithLabelValues(operation).Inc()
	podmanLatency.WithLabelValues(operation).Observe(time.Since(started).Seconds())
	if err != nil && !errors.Is(err, ErrNotFound) {
		podmanErrors.WithLabelValues(operation).Inc()
	}
}

func (i instrumented) Ping(ctx context.Context) error {
	started := time.Now()
	err := i.rt.Ping(ctx)
	count("ping", started, err)
	return err
}

func (i instrumented) ImageExists(ctx context.Context, image string) (bool, error) {
	started := time.Now()
	ok, err := i.rt.ImageExists(ctx, image)
	count("image_exists", started, err)
	return ok, err
}

func (i instrumented) SecretExists(ctx context.Context, name string) (bool, error) {
	started := time.Now()
	ok, err := i.rt.SecretExists(ctx, name)
	count("secret_exists", started, err)
	return ok, err
}

func (i instrumented) Create(ctx context.Context, spec Spec) (string, error) {
	started := time.Now()
	id, err := i.rt.Create(ctx, spec)
	count("create", started, err)
	return id, err
}

func (i instrumented) Start(ctx context.Context, id string) error {
	started := time.Now()
	err := i.rt.Start(ctx, id)
	count("start", started, err)
	return err
}

func (i instrumented) Inspect(ctx context.Context, nameOrID string) (Container, error) {
	started := time.Now()
	c, err := i.rt.Inspect(ctx, nameOrID)
	count("inspect", started, err)
	return c, err
}

func (i instrumented) List(ctx context.Context, labels map[string]string) ([]Container, error) {
	started := time.Now()
	cs, err := i.rt.List(ctx, labels)
	count("list", started, err)
	return cs, err
}

func (i instrumented) Stop(ctx context.Context, id string, grace time.Duration) error {
	started := time.Now()
	err := i.rt.Stop(ctx, id, grace)
	count("stop", started, err)
	return err
}

// Wait counts the call, and its failure, but leaves the latency histogram
// alone: its duration is the container's, not Podman's.
func (i instrumented) Wait(ctx context.Context, id string) (int32, error) {
	code, err := i.rt.Wait(ctx, id)
	podmanCalls.WithLabelValues("wait").Inc()
	if err != nil && !errors.Is(err, ErrNotFound) && ctx.Err() == nil {
		podmanErrors.WithLabelValues("wait").Inc()
	}
	return code, err
}

func (i instrumented) Remove(ctx context.Context, id string) error {
	started := time.Now()
	err := i.rt.Remove(ctx, id)
	count("remove", started, err)
	return err
}

func (i instrumented) SecretValues(ctx context.Context, id string, secretEnv map[string]string) ([]string, error) {
	started := time.Now()
	values, err := i.rt.SecretValues(ctx, id, secretEnv)
	count("secret_values", started, err)
	return values, err
}

func (i instrumented) SecretValue(ctx context.Context, name string) (string, error) {
	started := time.Now()
	value, err := i.rt.SecretValue(ctx, name)
	count("secret_value", started, err)
	return value, err
}

func (i instrumented) Logs(ctx context.Context, id string, maxBytes int) (string, error) {
	started := time.Now()
	out, err := i.rt.Logs(ctx, id, maxBytes)
	count("logs", started, err)
	return out, err
}

// StreamLogs counts the opening of a stream, as Events does.
func (i instrumented) StreamLogs(ctx context.Context, id string, opts LogOptions, w io.Writer) error {
	count("stream_logs", time.Now(), nil)
	return i.rt.StreamLogs(ctx, id, opts, w)
}

// Events counts the opening of a stream, not each event.
func (i instrumented) Events(ctx context.Context, labels map[string]string) (<-chan Event, <-chan error) {
	count("events", time.Now(), nil)
	return i.rt.Events(ctx, labels)
}

func (i instrumented) Inventory(ctx context.Context) (Inventory, error) {
	started := time.Now()
	inv, err := i.rt.Inventory(ctx)
	count("inventory", started, err)
	return inv, err
}

// InventoryChanges counts the opening of a stream, not each event.
func (i instrumented) InventoryChanges(ctx context.Context) (<-chan struct{}, <-chan error) {
	count("inventory_changes", time.Now(), nil)
	return i.rt.InventoryChanges(ctx)
}
