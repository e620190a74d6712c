package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// Metrics beyond controller-runtime's, served on the manager's /metrics.
var (
	launchLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "agentrun_launch_latency_seconds",
		Help:    "Time from an AgentRun's creation to its container running.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300},
	})
	runDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentrun_run_duration_seconds",
		Help:    "Time from a run's container start to the run's end, by final phase.",
		Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200},
	}, []string{"phase"})
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
	metrics.Registry.MustRegister(launchLatency, runDuration, podmanCalls, podmanLatency, podmanErrors)
}

// observeTransition records the latency and duration histograms when a run
// starts running or finishes.
func observeTransition(run *agentsv1alpha1.AgentRun, before, after runState) {
	if before.phase == after.phase {
		return
	}
	s := run.Status
	if after.phase == agentsv1alpha1.PhaseRunning && s.StartTime != nil {
		launchLatency.Observe(s.StartTime.Sub(run.CreationTimestamp.Time).Seconds())
	}
	if after.phase.IsFinished() && s.StartTime != nil && s.CompletionTime != nil {
		runDuration.WithLabelValues(string(after.phase)).Observe(s.CompletionTime.Sub(s.StartTime.Time).Seconds())
	}
}

// RunsCollector reports the AgentRuns a host has taken, by phase, counted
// from the manager's cache when /metrics is scraped.
type RunsCollector struct {
	reader client.Reader
	host   string
	desc   *prometheus.Desc
}

// NewRunsCollector counts host's runs through reader (the manager's cache).
func NewRunsCollector(reader client.Reader, host string) *RunsCollector {
	return &RunsCollector{
		reader: reader,
		host:   host,
		desc: prometheus.NewDesc("agentrun_runs", "AgentRuns taken by this host, by phase.",
			[]string{"host", "phase"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *RunsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *RunsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	runs := &agentsv1alpha1.AgentRunList{}
	if err := c.reader.List(ctx, runs); err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	counts := map[agentsv1alpha1.AgentRunPhase]int{}
	for _, p := range []agentsv1alpha1.AgentRunPhase{agentsv1alpha1.PhasePending, agentsv1alpha1.PhaseRunning,
		agentsv1alpha1.PhaseSucceeded, agentsv1alpha1.PhaseFailed, agentsv1alpha1.PhaseCancelled} {
		counts[p] = 0
	}
	for _, r := range runs.Items {
		if r.Status.Host == c.host && r.Status.Phase != "" {
			counts[r.Status.Phase]++
		}
	}
	for phase, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), c.host, string(phase))
	}
}

// InstrumentRuntime counts the calls made through rt, and their failures, in
// agentrun_podman_api_calls_total and agentrun_podman_api_errors_total. A
// missing container, secret or image is an answer, not a failure.
func InstrumentRuntime(rt containers.Runtime) containers.Runtime {
	return instrumented{rt}
}

type instrumented struct{ rt containers.Runtime }

func count(operation string, started time.Time, err error) {
	podmanCalls.WithLabelValues(operation).Inc()
	podmanLatency.WithLabelValues(operation).Observe(time.Since(started).Seconds())
	if err != nil && !errors.Is(err, containers.ErrNotFound) {
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

func (i instrumented) Create(ctx context.Context, spec containers.Spec) (string, error) {
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

func (i instrumented) Inspect(ctx context.Context, nameOrID string) (containers.Container, error) {
	started := time.Now()
	c, err := i.rt.Inspect(ctx, nameOrID)
	count("inspect", started, err)
	return c, err
}

func (i instrumented) List(ctx context.Context, labels map[string]string) ([]containers.Container, error) {
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

func (i instrumented) Remove(ctx context.Context, id string) error {
	started := time.Now()
	err := i.rt.Remove(ctx, id)
	count("remove", started, err)
	return err
}

func (i instrumented) Logs(ctx context.Context, id string, maxBytes int) (string, error) {
	started := time.Now()
	out, err := i.rt.Logs(ctx, id, maxBytes)
	count("logs", started, err)
	return out, err
}

// Events counts the opening of a stream, not each event.
func (i instrumented) Events(ctx context.Context, labels map[string]string) (<-chan containers.Event, <-chan error) {
	count("events", time.Now(), nil)
	return i.rt.Events(ctx, labels)
}
