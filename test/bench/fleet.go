package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agentrun/agentrun/test/fleet"
)

// fleetRepetition is one fleet step: the raw baseline on every host's
// Podman service at once, then as many unpinned AgentRuns through the fleet.
type fleetRepetition struct {
	rawPerS, agentrunPerS float64
}

// fleetStep starts a local fleet of its own (hosts benchf-1..N on 10.206,
// the last one Podman 5, as make up HOSTS=3 does; each host's manager capped
// at -c runs), runs -reps fleet repetitions of -n runs per host, and brings
// the fleet down.
func fleetStep(ctx context.Context, cfg config) (reps []fleetRepetition, err error) {
	dir, err := os.MkdirTemp("", "agentrun-bench-fleet-")
	if err != nil {
		return nil, err
	}
	f, err := fleet.New(fleet.Options{
		StateDir: dir, Hosts: cfg.fleetHosts, HostPrefix: "benchf", Net: "10.206",
		ManagerArgs: fmt.Sprintf("--max-concurrent-runs=%d --workers=%d --resync-period=%s", cfg.c, 2*cfg.c, cfg.resyncPeriod),
	})
	if err != nil {
		return nil, err
	}
	step("fleet: starting %d hosts (a minute or two)", cfg.fleetHosts)
	defer func() {
		step("fleet: stopping it")
		if downErr := f.Down(); downErr != nil && err == nil {
			err = fmt.Errorf("stopping the fleet: %w", downErr)
		}
		_ = os.RemoveAll(dir)
	}()
	if err := f.Up(); err != nil {
		return nil, fmt.Errorf("starting the fleet: %w", err)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", f.Kubeconfig())
	if err != nil {
		return nil, err
	}
	k8s, err := kubeClientFor(restCfg)
	if err != nil {
		return nil, err
	}
	var conns []context.Context
	for _, host := range f.Hosts() {
		conn, err := bindings.NewConnection(ctx, "unix://"+f.Socket(host))
		if err != nil {
			return nil, fmt.Errorf("connecting to host %s's Podman: %w", host, err)
		}
		conns = append(conns, conn)
	}
	total := cfg.n * len(conns)
	for i := range cfg.reps {
		step("fleet (%d/%d): raw Podman on %d services at once, %d containers each, %d at a time", i+1, cfg.reps, len(conns), cfg.n, cfg.c)
		rawWall, err := rawOnEvery(conns, cfg)
		if err != nil {
			return nil, err
		}
		step("fleet (%d/%d): %d unpinned AgentRuns", i+1, cfg.reps, total)
		runCtx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		tag := fmt.Sprintf("fleet-%d", time.Now().Unix())
		through, _, err := runThrough(runCtx, k8s, tag, total, "")
		cancel()
		cleanup(k8s, tag)
		if err != nil {
			return nil, err
		}
		reps = append(reps, fleetRepetition{rawPerS: float64(total) / rawWall.Seconds(), agentrunPerS: through.throughput()})
	}
	return reps, nil
}

// rawOnEvery runs the raw baseline on every connection at once and returns
// how long they took together.
func rawOnEvery(conns []context.Context, cfg config) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = rawBaseline(conn, cfg)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
