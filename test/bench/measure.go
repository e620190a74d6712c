package main

import (
	"bufio"
	"fmt"
	"io"
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

// rssMiB is a process's resident memory.
func rssMiB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}
