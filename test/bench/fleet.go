package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// managerRuns is the configuration the benchmark's stacks merge over their
// managers' files: the runs a host runs at once, its workers, its resync
// period and, when not nil, its progress period.
func managerRuns(maxConcurrent, workers int32, resync time.Duration, progress *metav1.Duration) *configv1alpha1.Configuration {
	return &configv1alpha1.Configuration{Host: configv1alpha1.HostConfiguration{
		Runs: configv1alpha1.RunsConfiguration{
			MaxConcurrent: ptr.To(maxConcurrent), Workers: ptr.To(workers), ResyncPeriod: &metav1.Duration{Duration: resync},
		},
		Output: configv1alpha1.OutputConfiguration{ProgressPeriod: progress},
	}}
}

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
	f, k8s, stop, err := startStack("fleet", fleet.Options{
		Hosts: cfg.fleetHosts, HostPrefix: "benchf", Net: "10.206",
		ManagerConfig: managerRuns(int32(cfg.c), int32(2*cfg.c), cfg.resyncPeriod, nil),
	})
	defer stopStack(stop, &err)
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

// startStack starts a local stack of its own for a step, as o describes it
// (its state folder is made here), and returns it with a client of its API
// server. stop brings it down and removes its state, keeping its logs when
// the step failed; it is never nil.
func startStack(name string, o fleet.Options) (f *fleet.Fleet, k8s client.WithWatch, stop func(failed bool) error, err error) {
	stop = func(bool) error { return nil }
	if o.StateDir, err = os.MkdirTemp("", "agentrun-bench-"+name+"-"); err != nil {
		return nil, nil, stop, err
	}
	if f, err = fleet.New(o); err != nil {
		return nil, nil, stop, errors.Join(err, os.RemoveAll(o.StateDir))
	}
	stop = func(failed bool) error {
		if failed {
			// Down removes the managers' logs with the state.
			kept, err := keepLogs(o.StateDir, "agentrun-bench-"+name+"-logs-")
			if err != nil {
				return err
			}
			step("%s: the step failed; its stack's logs are kept in %s", name, kept)
		}
		step("%s: stopping its stack", name)
		if err := f.Down(); err != nil {
			return fmt.Errorf("stopping the %s step's stack: %w", name, err)
		}
		return os.RemoveAll(o.StateDir)
	}
	step("%s: starting a stack of %d host(s) (a minute or two)", name, o.Hosts)
	if err := f.Up(); err != nil {
		return nil, nil, stop, fmt.Errorf("starting the %s step's stack: %w", name, err)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", f.Kubeconfig())
	if err != nil {
		return nil, nil, stop, err
	}
	k8s, err = kubeClientFor(restCfg)
	return f, k8s, stop, err
}

// stopStack runs stop, keeping the first error in err.
func stopStack(stop func(failed bool) error, err *error) {
	if stopErr := stop(*err != nil); stopErr != nil && *err == nil {
		*err = stopErr
	}
}

// keepLogs copies the *.log files under dir, at the same relative paths,
// into a new folder named with prefix, and returns that folder.
func keepLogs(dir, prefix string) (string, error) {
	kept, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	return kept, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".log" {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(kept, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(kept, rel), data, 0o644)
	})
}
