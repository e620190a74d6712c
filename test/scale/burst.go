package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// runNamespace holds the step's runs.
const runNamespace = "scale"

// seen is when the watch first saw each run placed (status.host set),
// running (Running, or already finished) and finished.
type seen struct {
	mu                        sync.Mutex
	placed, running, finished map[string]time.Time
	done                      chan struct{}
	want                      int
}

func (s *seen) observe(run *agentsv1alpha1.AgentRun, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := run.Name
	note := func(m map[string]time.Time) bool {
		if _, ok := m[name]; ok {
			return false
		}
		m[name] = at
		return true
	}
	if run.Status.Host != "" {
		note(s.placed)
	}
	if run.Status.Phase == agentsv1alpha1.PhaseRunning || run.Status.Phase.IsFinished() {
		note(s.running)
	}
	if run.Status.Phase.IsFinished() && note(s.finished) {
		if len(s.finished) == s.want {
			close(s.done)
		}
	}
}

// burst creates the step's runs as fast as the API server takes them,
// follows them with a watch until all finished (or ctx ends), and fills in
// res from what the watch saw, the counters and the hosts' creates.
func (s *stack) burst(ctx context.Context, procs []*simProcess, res *stepResult) error {
	if err := s.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: runNamespace}}); err != nil {
		return err
	}
	obs := &seen{placed: map[string]time.Time{}, running: map[string]time.Time{}, finished: map[string]time.Time{},
		done: make(chan struct{}), want: res.Runs}
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	go s.follow(followCtx, obs)

	before, err := s.counters(ctx, procs)
	if err != nil {
		return err
	}
	profiled := s.profileBurst(ctx, procs, res.Hosts)
	defer func() { <-profiled }()
	created, createdAll, err := s.createRuns(ctx, res.Runs)
	if err != nil {
		return err
	}
	select {
	case <-obs.done:
	case <-ctx.Done():
		step("not every run finished in time: %v", ctx.Err())
	}
	end := time.Now()
	after, err := s.counters(context.Background(), procs)
	if err != nil {
		return err
	}
	s.fill(res, obs, created, createdAll, before, after, end)
	return countCreates(procs, res)
}

// follow feeds the runs into obs as a watch sees them, until ctx ends. The
// API server closes a watch that falls behind (a loaded machine): then it
// lists the runs and watches again from there.
func (s *stack) follow(ctx context.Context, obs *seen) {
	for ctx.Err() == nil {
		var list agentsv1alpha1.AgentRunList
		if err := s.k8s.List(ctx, &list, client.InNamespace(runNamespace)); err != nil {
			time.Sleep(time.Second)
			continue
		}
		now := time.Now()
		for i := range list.Items {
			obs.observe(&list.Items[i], now)
		}
		w, err := s.k8s.Watch(ctx, &agentsv1alpha1.AgentRunList{},
			&client.ListOptions{Namespace: runNamespace, Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			continue
		}
		for ev := range w.ResultChan() {
			if run, ok := ev.Object.(*agentsv1alpha1.AgentRun); ok {
				obs.observe(run, time.Now())
			}
		}
		w.Stop()
	}
}

// createRuns creates n runs with -creators at once, retrying what the API
// server turns away for load, and returns when each create started (in the
// order of the creates) and when the last one returned.
func (s *stack) createRuns(ctx context.Context, n int) (map[string]time.Time, time.Time, error) {
	created := map[string]time.Time{}
	var mu sync.Mutex
	names := make(chan string)
	errs := make(chan error, s.cfg.creators)
	var wg sync.WaitGroup
	for range s.cfg.creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				run := &agentsv1alpha1.AgentRun{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: runNamespace},
					Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "make scale"},
				}
				start := time.Now()
				for {
					err := s.k8s.Create(ctx, run.DeepCopy())
					if err == nil {
						break
					}
					if !apierrors.IsTooManyRequests(err) && !apierrors.IsServerTimeout(err) && !apierrors.IsTimeout(err) || ctx.Err() != nil {
						errs <- fmt.Errorf("creating run %s: %w", name, err)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				mu.Lock()
				created[name] = start
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for i := range n {
		select {
		case names <- fmt.Sprintf("run-%05d", i):
		case err = <-errs:
			break feed
		}
	}
	close(names)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return created, time.Now(), err
}

// fill computes the step's figures.
func (s *stack) fill(res *stepResult, obs *seen, created map[string]time.Time, createdAll time.Time, before, after counters, end time.Time) {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	first := createdAll
	for _, t := range created {
		if t.Before(first) {
			first = t
		}
	}
	res.Finished = len(obs.finished)
	res.BurstS = end.Sub(first).Seconds()
	res.CreatedPerS = float64(len(created)) / createdAll.Sub(first).Seconds()
	res.PlacedPerS = float64(len(obs.placed)) / latest(obs.placed).Sub(first).Seconds()
	res.FinishedPerS = float64(len(obs.finished)) / latest(obs.finished).Sub(first).Seconds()

	// The first Slots runs created found a free slot.
	order := make([]string, 0, len(created))
	for name := range created {
		order = append(order, name)
	}
	slices.SortFunc(order, func(a, b string) int { return created[a].Compare(created[b]) })
	var free, freePlaced, all []time.Duration
	for i, name := range order {
		t, ok := obs.running[name]
		if !ok {
			continue
		}
		all = append(all, t.Sub(created[name]))
		if i < res.Slots {
			free = append(free, t.Sub(created[name]))
			if placed, ok := obs.placed[name]; ok {
				freePlaced = append(freePlaced, placed.Sub(created[name]))
			}
		}
	}
	res.RunningP50Ms, res.RunningP99Ms = ms(percentile(free, 50)), ms(percentile(free, 99))
	res.PlacedP50Ms, res.PlacedP99Ms = ms(percentile(freePlaced, 50)), ms(percentile(freePlaced, 99))
	res.AllRunningP50Ms = ms(percentile(all, 50))

	secs := after.at.Sub(before.at).Seconds()
	perRun := 1 / float64(res.Runs)
	hosts := after.hosts.minus(before.hosts).minus(s.idleHosts.scaled(secs))
	fleet := after.fleet.minus(before.fleet).minus(s.idleFleet.scaled(secs))
	res.FleetWritesPerRun = fleet.scaled(perRun)
	res.WritesPerRun = writes{}
	for verb, v := range hosts {
		res.WritesPerRun[verb] = v * perRun
	}
	for verb, v := range fleet {
		res.WritesPerRun[verb] += v * perRun
	}
	res.CPUPct = map[string]float64{}
	for part, t := range after.cpu {
		res.CPUPct[part] = 100 * (t - before.cpu[part]) / secs
	}
	res.FleetCPUPct = res.CPUPct["fleet"]
	res.HostRestarts = int(after.hostRestarts)
	placement := placementWork{passes: after.placement.passes - before.placement.passes,
		work: after.placement.work - before.placement.work, queued: after.placement.queued - before.placement.queued}
	if placement.passes > 0 {
		res.PlacementPassesPerRun = placement.passes * perRun
		res.PlacementPassMs = 1000 * placement.work / placement.passes
		res.PlacementQueuedMs = 1000 * placement.queued / placement.passes
	}
	var err error
	if res.FleetRSSMiB, res.FleetPeakRSSMiB, err = s.fleetMemory(); err != nil {
		step("the fleet's memory: %v", err)
	}
}

func latest(m map[string]time.Time) (t time.Time) {
	for _, v := range m {
		if v.After(t) {
			t = v
		}
	}
	return t
}

// countCreates gathers the hosts' creates: an attempt of a run whose
// containers were created on two hosts was placed twice. A run whose
// attempts ran on different hosts was moved (a lost host's runs are fenced
// there and placed again), which is not a double placement.
func countCreates(procs []*simProcess, res *stepResult) error {
	attemptsOf := map[string]map[string][]string{}
	for _, p := range procs {
		resp, err := http.Get("http://" + p.addr + "/creates")
		if err != nil {
			return err
		}
		var creates map[string]map[string][]string
		err = json.NewDecoder(resp.Body).Decode(&creates)
		resp.Body.Close()
		if err != nil {
			return err
		}
		for run, attempts := range creates {
			if attemptsOf[run] == nil {
				attemptsOf[run] = map[string][]string{}
			}
			for attempt, hosts := range attempts {
				attemptsOf[run][attempt] = append(attemptsOf[run][attempt], hosts...)
			}
		}
	}
	tallyCreates(attemptsOf, res)
	return nil
}

// tallyCreates counts, from the creates by run and attempt, the runs placed
// twice, created again on one host, and moved.
func tallyCreates(attemptsOf map[string]map[string][]string, res *stepResult) {
	for run, attempts := range attemptsOf {
		var all []string
		for attempt, hosts := range attempts {
			all = append(all, hosts...)
			if distinct := slices.Compact(slices.Sorted(slices.Values(hosts))); len(distinct) > 1 {
				res.DoublePlaced++
				step("run %s had containers of attempt %s created on hosts %v", run, attempt, distinct)
			} else if len(hosts) > 1 {
				res.Recreated++
			}
		}
		if len(attempts) > 1 && len(slices.Compact(slices.Sorted(slices.Values(all)))) > 1 {
			res.Moved++
		}
	}
}

// percentile is the p-th percentile of ds (nearest rank), 0 when empty.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
