package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func metav1Time(t time.Time) metav1.Time { return metav1.NewTime(t) }

func isConflict(err error) bool { return apierrors.IsConflict(err) }

// finishedConditions are the conditions a run that succeeded carries.
func finishedConditions(generation int64, now time.Time) []metav1.Condition {
	var out []metav1.Condition
	for _, c := range []struct {
		t      string
		s      metav1.ConditionStatus
		reason string
	}{
		{agentsv1alpha1.ConditionScheduled, metav1.ConditionTrue, agentsv1alpha1.ReasonClaimed},
		{agentsv1alpha1.ConditionStarted, metav1.ConditionTrue, agentsv1alpha1.ReasonLaunched},
		{agentsv1alpha1.ConditionSucceeded, metav1.ConditionTrue, agentsv1alpha1.ReasonCompleted},
		{agentsv1alpha1.ConditionFailed, metav1.ConditionFalse, agentsv1alpha1.ReasonCompleted},
		{agentsv1alpha1.ConditionFinished, metav1.ConditionTrue, agentsv1alpha1.ReasonCompleted},
		{agentsv1alpha1.ConditionPodmanAvailable, metav1.ConditionTrue, agentsv1alpha1.ReasonPodmanAvailable},
	} {
		meta.SetStatusCondition(&out, metav1.Condition{Type: c.t, Status: c.s, Reason: c.reason,
			Message: "written by the bench", ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now)})
	}
	return out
}

// podmanCallLatencies reports the manager's mean Podman call latency by
// operation, to show where a run's time goes.
func podmanCallLatencies(metricsURL string) (string, error) {
	body, err := scrape(metricsURL)
	if err != nil {
		return "", err
	}
	sums, counts := map[string]float64{}, map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		for prefix, into := range map[string]map[string]float64{
			"agentrun_podman_api_call_duration_seconds_sum{":   sums,
			"agentrun_podman_api_call_duration_seconds_count{": counts,
		} {
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				op := strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(rest, `operation="`), `"`, 2)[0], `"`)
				fields := strings.Fields(rest)
				v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
				into[op] = v
			}
		}
	}
	var parts []string
	for op, n := range counts {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0fms x%.0f", op, 1000*sums[op]/n, n))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", "), nil
}

func scrape(metricsURL string) (string, error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return "", fmt.Errorf("scraping %s: %w", metricsURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// podmanCalls sums agentrun_podman_api_calls_total over its operations.
func podmanCalls(metricsURL string) (float64, error) {
	body, err := scrape(metricsURL)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "agentrun_podman_api_calls_total{") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}

// cpuSeconds is the user and system CPU time a process has used.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th of them.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err := strconv.ParseFloat(fields[11], 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseFloat(fields[12], 64)
	if err != nil {
		return 0, err
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return (utime + stime) / ticksPerSecond, nil
}

// procStatusMiB is the sizes /proc/PID/status gives in kB, in MiB, by field.
func procStatusMiB(pid int) (map[string]float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sizes := map[string]float64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		field, rest, ok := strings.Cut(s.Text(), ":")
		if rest, isKB := strings.CutSuffix(strings.TrimSpace(rest), " kB"); ok && isKB {
			if kb, err := strconv.ParseFloat(rest, 64); err == nil {
				sizes[field] = kb / 1024
			}
		}
	}
	return sizes, s.Err()
}

// memoryBreakdown says what a Go process's resident memory is: the kernel's
// split of it into anonymous memory and mapped files (the binary's pages),
// and the Go runtime's account of its heap (Prometheus' Go collector).
type memoryBreakdown struct {
	// RSSMiB is the whole resident set, RSSAnonMiB plus RSSFileMiB (and
	// shared memory, none here).
	RSSMiB     float64 `json:"rss_mib"`
	RSSAnonMiB float64 `json:"rss_anon_mib"`
	RSSFileMiB float64 `json:"rss_file_mib"`
	// HeapInuseMiB is what live and not yet collected objects hold;
	// HeapIdleMiB is heap the runtime holds free, of which it has given
	// HeapReleasedMiB back to the kernel (no longer resident).
	HeapInuseMiB    float64 `json:"heap_inuse_mib"`
	HeapIdleMiB     float64 `json:"heap_idle_mib"`
	HeapReleasedMiB float64 `json:"heap_released_mib"`
	StackMiB        float64 `json:"stack_mib"`
	// GoSysMiB is all the runtime obtained from the kernel; NextGCMiB the
	// heap size at which it collects next (GOGC).
	GoSysMiB  float64 `json:"go_sys_mib"`
	NextGCMiB float64 `json:"next_gc_mib"`
}

// memoryOf reads the breakdown of the manager's memory.
func memoryOf(pid int, metricsURL string) (memoryBreakdown, error) {
	status, err := procStatusMiB(pid)
	if err != nil {
		return memoryBreakdown{}, err
	}
	if _, ok := status["VmRSS"]; !ok {
		return memoryBreakdown{}, fmt.Errorf("no VmRSS for process %d", pid)
	}
	body, err := scrape(metricsURL)
	if err != nil {
		return memoryBreakdown{}, err
	}
	gauges := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if name, _, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "go_memstats_") {
			gauges[name] = value(line) / mib
		}
	}
	return memoryBreakdown{
		RSSMiB:          status["VmRSS"],
		RSSAnonMiB:      status["RssAnon"],
		RSSFileMiB:      status["RssFile"],
		HeapInuseMiB:    gauges["go_memstats_heap_inuse_bytes"],
		HeapIdleMiB:     gauges["go_memstats_heap_idle_bytes"],
		HeapReleasedMiB: gauges["go_memstats_heap_released_bytes"],
		StackMiB:        gauges["go_memstats_stack_sys_bytes"],
		GoSysMiB:        gauges["go_memstats_sys_bytes"],
		NextGCMiB:       gauges["go_memstats_next_gc_bytes"],
	}, nil
}

// managerCounters reads the manager's Podman calls by operation
// (agentrun_podman_api_calls_total) and its API-server writes by verb
// (client-go's rest_client_requests_total: POST, PUT, PATCH and DELETE,
// whatever the answer).
func managerCounters(metricsURL string) (podmanCalls, apiWrites map[string]float64, err error) {
	body, err := scrape(metricsURL)
	if err != nil {
		return nil, nil, err
	}
	podmanCalls, apiWrites = map[string]float64{}, map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		switch {
		case strings.HasPrefix(line, "agentrun_podman_api_calls_total{"):
			podmanCalls[label(line, "operation")] += value(line)
		case strings.HasPrefix(line, "rest_client_requests_total{"):
			if verb := label(line, "method"); verb != "GET" {
				apiWrites[verb] += value(line)
			}
		}
	}
	return podmanCalls, apiWrites, nil
}

// label is the value of a label in a Prometheus text-format line.
func label(line, name string) string {
	_, rest, ok := strings.Cut(line, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// value is the sample value ending a Prometheus text-format line.
func value(line string) float64 {
	fields := strings.Fields(line)
	v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
	return v
}

func minus(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func sum(m map[string]float64) (total float64) {
	for _, v := range m {
		total += v
	}
	return total
}

// perRun formats counts divided by n, by key.
func perRun(m map[string]float64, n int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]/float64(n)))
	}
	return fmt.Sprintf("%.2f (%s)", sum(m)/float64(n), strings.Join(parts, ", "))
}

// perRunByKey is, for each key, the spread over the repetitions of its count
// divided by n.
func perRunByKey(reps []repetition, n int, counts func(repetition) map[string]float64) map[string]spread {
	keys := map[string]bool{}
	for _, rep := range reps {
		for k := range counts(rep) {
			keys[k] = true
		}
	}
	out := map[string]spread{}
	for k := range keys {
		out[k] = spreadOf(reps, func(rep repetition) float64 { return counts(rep)[k] / float64(n) })
	}
	return out
}

// spread is a figure over repetitions: its median, min and max.
type spread struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func spreadOf[T any](reps []T, figure func(T) float64) spread {
	var s spread
	for _, rep := range reps {
		s.Samples = append(s.Samples, figure(rep))
	}
	if len(s.Samples) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(s.Samples))
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if m := len(sorted) / 2; len(sorted)%2 == 1 {
		s.Median = sorted[m]
	} else {
		s.Median = (sorted[m-1] + sorted[m]) / 2
	}
	return s
}

// single is a figure measured once.
func single(v float64) spread { return spread{Median: v, Min: v, Max: v, Samples: []float64{v}} }

func (s spread) String() string {
	if s.Min == s.Max {
		return strconv.FormatFloat(round(s.Median, 3), 'f', -1, 64)
	}
	return fmt.Sprintf("%g [%g, %g]", round(s.Median, 3), round(s.Min, 3), round(s.Max, 3))
}

// histogram is a Prometheus histogram's cumulative buckets (by upper
// bound), sum and count.
type histogram struct {
	buckets    map[float64]float64
	sum, count float64
}

// histograms reads the histograms called name from a scrape, by the value
// of their label key.
func histograms(body, name, key string) map[string]histogram {
	out := map[string]histogram{}
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || !strings.Contains(rest, "{") {
			continue
		}
		id := label(line, key)
		h := out[id]
		if h.buckets == nil {
			h.buckets = map[float64]float64{}
		}
		switch {
		case strings.HasPrefix(rest, "_bucket{"):
			le, err := strconv.ParseFloat(label(line, "le"), 64)
			if err != nil {
				le = math.Inf(1)
			}
			h.buckets[le] = value(line)
		case strings.HasPrefix(rest, "_sum{"):
			h.sum = value(line)
		case strings.HasPrefix(rest, "_count{"):
			h.count = value(line)
		}
		out[id] = h
	}
	return out
}

// minus is what was observed between two reads of a histogram.
func (h histogram) minus(before histogram) histogram {
	d := histogram{buckets: map[float64]float64{}, sum: h.sum - before.sum, count: h.count - before.count}
	for le, n := range h.buckets {
		d.buckets[le] = n - before.buckets[le]
	}
	return d
}

// String gives the mean, the p50 and p99 as the buckets allow, and the
// share of observations above 0.1 s and 1 s.
func (h histogram) String() string {
	if h.count == 0 {
		return "none"
	}
	over := func(le float64) float64 { return 100 * (h.count - h.buckets[le]) / h.count }
	return fmt.Sprintf("mean %.1f ms, p50 %.0f ms, p99 %.0f ms, %.1f%% over 100 ms, %.1f%% over 1 s (%.0f)",
		1000*h.sum/h.count, 1000*h.quantile(0.5), 1000*h.quantile(0.99), over(0.1), over(1), h.count)
}

// quantile estimates the q-quantile by linear interpolation within its
// bucket, as Prometheus's histogram_quantile does; past the last finite
// bound it gives that bound.
func (h histogram) quantile(q float64) float64 {
	bounds := slices.Sorted(maps.Keys(h.buckets))
	rank, lower, below := q*h.count, 0.0, 0.0
	for _, le := range bounds {
		n := h.buckets[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if n == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(n-below)
		}
		lower, below = le, n
	}
	return lower
}

// workqueueTimes reads, by controller, how long items waited in its queue
// (workqueue_queue_duration_seconds) and how long their reconciles took
// (controller_runtime_reconcile_time_seconds), keyed "controller NAME wait"
// and "controller NAME reconcile"; and the host's own time at a run's end
// by stage (agentrun_run_end_seconds), keyed "run end: STAGE".
func workqueueTimes(metricsURL string) (map[string]histogram, error) {
	body, err := scrape(metricsURL)
	if err != nil {
		return nil, err
	}
	out := map[string]histogram{}
	for name, h := range histograms(body, "workqueue_queue_duration_seconds", "name") {
		out["controller "+name+" wait"] = h
	}
	for name, h := range histograms(body, "controller_runtime_reconcile_time_seconds", "controller") {
		out["controller "+name+" reconcile"] = h
	}
	for stage, h := range histograms(body, "agentrun_run_end_seconds", "stage") {
		out["run end: "+stage] = h
	}
	return out, nil
}
