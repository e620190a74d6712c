package main

import (
	"context"
	"fmt"
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// progressPeriod is the host.output.progressPeriod the progress step measures: the
// manager's default.
const progressPeriod = 10 * time.Second

// progressRepetition is what refreshing running runs' output cost the API
// server in one progress step, as its watch saw it.
type progressRepetition struct {
	peakRunning int
	// writesPerRunMinute are the status writes made while runs were
	// Running, per minute of a run's running.
	writesPerRunMinute float64
	// peakWritesPerS are the status writes per second while at least 90% of
	// the peak number of runs ran at once.
	peakWritesPerS float64
	// livePct is the share of runs whose output showed in status before
	// they ended.
	livePct float64
}

// progressStep starts a local stack of its own with one host (benchp-1 on
// 10.207, Podman 4) that runs up to -progress-runs runs at once, and runs
// -reps times that many AgentRuns which print a line a second for
// -progress-duration, all at once.
func progressStep(ctx context.Context, cfg config) (reps []progressRepetition, err error) {
	f, k8s, stop, err := startStack("progress", fleet.Options{
		Hosts: 1, HostPrefix: "benchp", Net: "10.207", Podman5Host: "none",
		ManagerConfig: managerRuns(int32(cfg.progressRuns), int32(2*cfg.c), cfg.resyncPeriod, &metav1.Duration{Duration: progressPeriod}),
	})
	defer stopStack(stop, &err)
	if err != nil {
		return nil, err
	}
	for i := range cfg.reps {
		step("progress (%d/%d): %d AgentRuns on %s printing a line a second for %s, with --progress-period=%s",
			i+1, cfg.reps, cfg.progressRuns, f.Host(1), cfg.progressDuration, progressPeriod)
		rep, err := measureProgress(ctx, k8s, f.Host(1), cfg)
		if err != nil {
			return nil, err
		}
		step("progress (%d/%d): %d running at most; %.2f status writes per run-minute while running, %.1f per second at the peak; output live in %.0f%% of runs",
			i+1, cfg.reps, rep.peakRunning, rep.writesPerRunMinute, rep.peakWritesPerS, rep.livePct)
		reps = append(reps, rep)
	}
	return reps, nil
}

// progressRun is what the watch saw of one run.
type progressRun struct {
	phase              agentsv1alpha1.AgentRunPhase
	runningAt, endedAt time.Time
	live               bool
}

// measureProgress creates the runs at once and follows them to their end,
// counting the status writes made while they ran.
func measureProgress(ctx context.Context, k8s client.WithWatch, host string, cfg config) (progressRepetition, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.progressDuration+20*time.Minute)
	defer cancel()
	tag := fmt.Sprintf("progress-%d", time.Now().Unix())
	defer cleanup(k8s, tag)
	w, err := k8s.Watch(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag})
	if err != nil {
		return progressRepetition{}, err
	}
	defer w.Stop()
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); echo "step $i of %[1]d"; sleep 1; done`, int(cfg.progressDuration.Seconds()))
	for i := range cfg.progressRuns {
		run := &agentsv1alpha1.AgentRun{}
		run.Name, run.Namespace = fmt.Sprintf("bench-%s-%d", tag, i), "default"
		run.Labels = map[string]string{benchLabel: tag}
		run.Spec = agentsv1alpha1.AgentRunSpec{Prompt: "bench", HostName: host, Command: []string{"sh", "-c", script, "sh"}}
		if err := k8s.Create(ctx, run); err != nil {
			return progressRepetition{}, fmt.Errorf("creating %s: %w", run.Name, err)
		}
	}

	runs := map[string]*progressRun{}
	// running is how many ran after each change, and when.
	type count struct {
		at time.Time
		n  int
	}
	var (
		running, ended, peak int
		timeline             []count
		writes               []time.Time
	)
	for ended < cfg.progressRuns {
		var ev watch.Event
		select {
		case <-ctx.Done():
			return progressRepetition{}, fmt.Errorf("only %d of %d runs ended in time", ended, cfg.progressRuns)
		case e, ok := <-w.ResultChan():
			if !ok {
				return progressRepetition{}, fmt.Errorf("the watch ended after %d of %d runs", ended, cfg.progressRuns)
			}
			ev = e
		}
		run, ok := ev.Object.(*agentsv1alpha1.AgentRun)
		if !ok {
			continue
		}
		now, phase := time.Now(), run.Status.Phase
		s := runs[run.Name]
		if s == nil {
			s = &progressRun{}
			runs[run.Name] = s
		}
		switch {
		case s.phase == agentsv1alpha1.PhaseRunning && phase == agentsv1alpha1.PhaseRunning && ev.Type == watch.Modified:
			writes = append(writes, now)
			s.live = s.live || run.Status.Output != ""
		case s.phase != agentsv1alpha1.PhaseRunning && phase == agentsv1alpha1.PhaseRunning:
			s.runningAt = now
			running++
			peak = max(peak, running)
			timeline = append(timeline, count{now, running})
		case phase.IsFinished() && s.endedAt.IsZero():
			if phase != agentsv1alpha1.PhaseSucceeded {
				return progressRepetition{}, fmt.Errorf("run %s ended %s: %s", run.Name, phase, run.Status.Message)
			}
			if s.phase == agentsv1alpha1.PhaseRunning {
				running--
			}
			s.endedAt = now
			ended++
			timeline = append(timeline, count{now, running})
		}
		s.phase = phase
	}

	rep := progressRepetition{peakRunning: peak}
	var runMinutes float64
	live := 0
	for _, s := range runs {
		if !s.runningAt.IsZero() {
			runMinutes += s.endedAt.Sub(s.runningAt).Minutes()
		}
		if s.live {
			live++
		}
	}
	rep.writesPerRunMinute = float64(len(writes)) / runMinutes
	rep.livePct = 100 * float64(live) / float64(cfg.progressRuns)
	// The peak: from the first time 90% of the peak ran at once to the
	// last time they still did.
	threshold := int(math.Ceil(0.9 * float64(peak)))
	var from, to time.Time
	for i, c := range timeline {
		if c.n >= threshold {
			if from.IsZero() {
				from = c.at
			}
			if i+1 < len(timeline) {
				to = timeline[i+1].at
			}
		}
	}
	if window := to.Sub(from); window > 0 {
		n := 0
		for _, t := range writes {
			if !t.Before(from) && t.Before(to) {
				n++
			}
		}
		rep.peakWritesPerS = float64(n) / window.Seconds()
	}
	return rep, nil
}
