package host

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/egress"
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
	runEnd = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentrun_run_end_seconds",
		Help: "The host's own time at a run's end, by stage: queued and written, from the host learning of the container's exit " +
			"(Podman's died event arriving, or its wait answering) to the pass that records it starting, and to the run's status written; " +
			"output, reading the container's output at the run's end.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"stage"})
	// egressConnections has no run label: a host runs thousands of runs,
	// and status.egress counts each one's.
	egressConnections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentrun_egress_connections_total",
		Help: "Connections of proxied runs through the host's egress proxy, by outcome: allowed, refused_name, refused_address, over_limit.",
	}, []string{"host", "outcome"})
)

func init() {
	metrics.Registry.MustRegister(launchLatency, runDuration, runEnd, egressConnections)
}

// outcomeLabel is an egress outcome's value of the outcome label.
func outcomeLabel(o egress.Outcome) string {
	switch o {
	case egress.Allowed:
		return "allowed"
	case egress.RefusedName:
		return "refused_name"
	case egress.RefusedAddress:
		return "refused_address"
	}
	return "over_limit"
}

// observeTransition records the latency and duration histograms when a run
// starts running or finishes.
func observeTransition(run *agentsv1alpha1.AgentRun, before, after agentruns.State) {
	if before.Phase == after.Phase {
		return
	}
	s := run.Status
	if after.Phase == agentsv1alpha1.PhaseRunning && s.StartTime != nil {
		launchLatency.Observe(s.StartTime.Sub(run.CreationTimestamp.Time).Seconds())
	}
	if after.Phase.IsFinished() && s.StartTime != nil && s.CompletionTime != nil {
		runDuration.WithLabelValues(string(after.Phase)).Observe(s.CompletionTime.Sub(s.StartTime.Time).Seconds())
	}
}

// The stages of runEnd.
const (
	runEndQueued  = "queued"
	runEndOutput  = "output"
	runEndWritten = "written"
)

// observeRunEnd records, when this pass (begun at began) recorded a
// container's end that the host had learned of before it began, how long
// the end waited for the pass and for its status write. A pass that ended
// the container itself (a cancel, a deadline) or found the end by an
// inspect is not counted. The times are the wall clock's, as the exit's
// Seen is, not the reconciler's Clock.
func (r *AgentRunReconciler) observeRunEnd(run *agentsv1alpha1.AgentRun, began time.Time) {
	if r.Exits == nil {
		return
	}
	exit, ok := r.Exits.Exited(run.Status.ContainerID)
	if !ok || !exit.Seen.Before(began) {
		return
	}
	runEnd.WithLabelValues(runEndQueued).Observe(began.Sub(exit.Seen).Seconds())
	runEnd.WithLabelValues(runEndWritten).Observe(time.Since(exit.Seen).Seconds())
}

// RunsCollector reports the AgentRuns a host has taken and not released,
// by phase, counted from the manager's cache when /metrics is scraped: a
// finished run counts until its containers are removed (runDuration counts
// every end).
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
		// The host is a constant label, so the collectors of several hosts
		// (one process in the suites) can be registered side by side.
		desc: prometheus.NewDesc("agentrun_runs", "AgentRuns this host holds (taken, not released), by phase.",
			[]string{"phase"}, prometheus.Labels{"host": host}),
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
		if r.Status.Host == c.host && r.Status.Phase != "" && !agentruns.Released(&r) {
			counts[r.Status.Phase]++
		}
	}
	for phase, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(phase))
	}
}
