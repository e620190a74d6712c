package main

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentrun/agentrun/internal/podman"
)

// A run's timeline on a saturated host, to see where a slot's time goes:
// what the bench's watch saw of the run (claimed, running, succeeded) and
// what Podman's events say of its container (create, start, died, remove),
// each on the bench's clock or Podman's, both this machine's.

// watched is when the bench's watch first saw a run claimed, running and
// succeeded, and when the write it saw Succeeded in was made: the Finished
// condition's transition time, which the API keeps to the second.
type watched struct{ claimed, running, succeeded, succeededWritten time.Time }

// containerTimes are a run's container events: when Podman says each
// happened, and when the died event reached the bench.
type containerTimes struct{ create, start, died, remove, diedReceived time.Time }

// containerEvents follows Podman's events for the containers of runs whose
// names start with runPrefix in namespace default; the returned function
// gives each run's times, by run name. Containers are matched by name:
// Podman 4.3.1 sends a container's labels with only some of its events.
func containerEvents(ctx context.Context, socket, runPrefix string) func() map[string]containerTimes {
	events, _ := podman.New(socket).Events(ctx, nil)
	namePrefix := "agentrun-default-" + runPrefix
	var mu sync.Mutex
	times := map[string]containerTimes{}
	go func() {
		for e := range events {
			rest, ok := strings.CutPrefix(e.Name, namePrefix)
			if !ok {
				continue
			}
			// agentrun-NAMESPACE-RUN-HASH-ATTEMPT
			parts := strings.Split(rest, "-")
			if len(parts) < 3 {
				continue
			}
			run := runPrefix + strings.Join(parts[:len(parts)-2], "-")
			now := time.Now()
			mu.Lock()
			t := times[run]
			switch e.Action {
			case "create":
				t.create = e.Time
			case "start":
				t.start = e.Time
			case "died":
				t.died, t.diedReceived = e.Time, now
			case "remove":
				t.remove = e.Time
			}
			times[run] = t
			mu.Unlock()
		}
	}()
	return func() map[string]containerTimes {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(times)
	}
}

// timeline is the segments of the runs' timelines, each a list of
// durations, one per run that has both ends.
type timeline struct {
	names    []string
	segments map[string][]time.Duration
}

// timelineOf computes the segments. The claim of a run that found the host
// full follows the slot a run's end released: its wait is counted from the
// last success the watch saw before the claim, for runs after the first c.
func timelineOf(seen map[string]watched, cont map[string]containerTimes, c int) timeline {
	tl := timeline{segments: map[string][]time.Duration{}}
	add := func(name string, from, to time.Time) {
		if from.IsZero() || to.IsZero() {
			return
		}
		if _, ok := tl.segments[name]; !ok {
			tl.names = append(tl.names, name)
		}
		tl.segments[name] = append(tl.segments[name], to.Sub(from))
	}
	var successes []time.Time
	for _, w := range seen {
		successes = append(successes, w.succeeded)
	}
	slices.SortFunc(successes, func(a, b time.Time) int { return a.Compare(b) })
	claims := make([]time.Time, 0, len(seen))
	for _, w := range seen {
		claims = append(claims, w.claimed)
	}
	slices.SortFunc(claims, func(a, b time.Time) int { return a.Compare(b) })
	for _, name := range slices.Sorted(maps.Keys(seen)) {
		w, ct := seen[name], cont[name]
		if i := slices.IndexFunc(claims, w.claimed.Equal); i >= c {
			j, _ := slices.BinarySearchFunc(successes, w.claimed, func(a, b time.Time) int { return a.Compare(b) })
			if j > 0 {
				add("a success seen -> next claim seen", successes[j-1], w.claimed)
			}
		}
		add("claim seen -> container created", w.claimed, ct.create)
		add("created -> started", ct.create, ct.start)
		add("started -> Running seen", ct.start, w.running)
		add("started -> died (the container's run)", ct.start, ct.died)
		add("died -> event received by the bench", ct.died, ct.diedReceived)
		add("died -> Succeeded seen", ct.died, w.succeeded)
		// To the second: the condition's time is truncated, so these
		// read up to a second long and short respectively.
		add("died -> Succeeded written (to the s)", ct.died, w.succeededWritten)
		add("Succeeded written -> seen (to the s)", w.succeededWritten, w.succeeded)
		add("Succeeded seen -> container removed", w.succeeded, ct.remove)
		add("slot: claim seen -> Succeeded seen", w.claimed, w.succeeded)
	}
	return tl
}

// print writes the segments' mean, p50 and p99, in ms.
func (tl timeline) print() {
	step("agentrun: per-run timeline on the saturated host, ms (mean / p50 / p99, runs)")
	for _, name := range tl.names {
		ds := tl.segments[name]
		var total time.Duration
		for _, d := range ds {
			total += d
		}
		step("  %-42s %8.1f %8.1f %8.1f  (%d)", name, ms(total/time.Duration(len(ds))), ms(percentile(ds, 50)), ms(percentile(ds, 99)), len(ds))
	}
}
