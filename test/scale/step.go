package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/freeport"
	"github.com/agentrun/agentrun/test/fleet"
)

// stepResult is one step's figures (JSON in .local/scale.json).
type stepResult struct {
	Hosts     int `json:"hosts"`
	Processes int `json:"processes"`
	Runs      int `json:"runs"`
	Finished  int `json:"finished"`
	// Slots is the hosts' capacity together; the first Slots runs created
	// find a free slot, and RunningP50Ms and RunningP99Ms are theirs.
	Slots        int     `json:"slots"`
	CreatedPerS  float64 `json:"created_per_s"`
	PlacedPerS   float64 `json:"placed_per_s"`
	FinishedPerS float64 `json:"finished_per_s"`
	RunningP50Ms float64 `json:"running_p50_ms"`
	RunningP99Ms float64 `json:"running_p99_ms"`
	// PlacedP50Ms and PlacedP99Ms are the fleet's part of those: create
	// to status.host.
	PlacedP50Ms     float64 `json:"placed_p50_ms"`
	PlacedP99Ms     float64 `json:"placed_p99_ms"`
	AllRunningP50Ms float64 `json:"all_running_p50_ms"`
	// WritesPerRun are the fleet's and the hosts' API writes during the
	// burst, by verb, less what they write idle in as long (heartbeats,
	// leader election), per run; FleetWritesPerRun the fleet's share.
	WritesPerRun      writes `json:"writes_per_run"`
	FleetWritesPerRun writes `json:"fleet_writes_per_run"`
	// HeartbeatWritesPerHostS is what the hosts write while idle, per host
	// and second; FleetIdleWritesPerS the fleet's.
	HeartbeatWritesPerHostS float64 `json:"heartbeat_writes_per_host_s"`
	FleetIdleWritesPerS     float64 `json:"fleet_idle_writes_per_s"`
	FleetPeakRSSMiB         float64 `json:"fleet_peak_rss_mib"`
	FleetRSSMiB             float64 `json:"fleet_rss_mib"`
	FleetCPUPct             float64 `json:"fleet_cpu_pct"`
	// PlacementPassesPerRun is how many passes the fleet's placement
	// controller made per run; PlacementPassMs how long one took on
	// average, PlacementQueuedMs how long one waited in its queue.
	PlacementPassesPerRun float64 `json:"placement_passes_per_run"`
	PlacementPassMs       float64 `json:"placement_pass_ms"`
	PlacementQueuedMs     float64 `json:"placement_queued_ms"`
	// CPUPct is each part's CPU during the burst, in % of one core: fleet,
	// hosts (all simhosts processes), kube-apiserver, etcd.
	CPUPct map[string]float64 `json:"cpu_pct"`
	// DoublePlaced is how many runs had containers of one attempt created
	// on two hosts or more; Recreated how many had more than one create of
	// an attempt on one host; Moved how many ran attempts on different
	// hosts (moved off a lost host).
	// HostRestarts is how many host managers stopped on their own (a lost
	// leader election, when the API server answers too slowly) and were
	// started again, as systemd would.
	HostRestarts int     `json:"host_restarts"`
	DoublePlaced int     `json:"double_placed"`
	Recreated    int     `json:"recreated"`
	Moved        int     `json:"moved"`
	BurstS       float64 `json:"burst_s"`
}

func (r stepResult) print() {
	fmt.Printf("%d hosts (%d processes, %d slots), %d runs: %d finished in %.1fs; created %.0f/s, placed %.1f/s, finished %.1f/s; "+
		"create-to-Running p50 %.0f ms, p99 %.0f ms while slots were free (of which create-to-placed p50 %.0f ms, p99 %.0f ms; all runs: p50 %.0f ms); "+
		"CPU %% of a core during the burst %v; placement: %.1f passes per run, %.1f ms each, %.0f ms queued; "+
		"API writes per run %s (the fleet's %s); heartbeats %.3f writes/host/s, fleet idle %.2f writes/s; "+
		"fleet RSS %.1f MiB (peak %.1f), CPU %.1f%% of a core; placed twice: %d, created again on one host: %d, moved off a lost host: %d; host managers restarted: %d\n",
		r.Hosts, r.Processes, r.Slots, r.Runs, r.Finished, r.BurstS, r.CreatedPerS, r.PlacedPerS, r.FinishedPerS,
		r.RunningP50Ms, r.RunningP99Ms, r.PlacedP50Ms, r.PlacedP99Ms, r.AllRunningP50Ms, cpuString(r.CPUPct), r.PlacementPassesPerRun, r.PlacementPassMs, r.PlacementQueuedMs, r.WritesPerRun, r.FleetWritesPerRun,
		r.HeartbeatWritesPerHostS, r.FleetIdleWritesPerS, r.FleetRSSMiB, r.FleetPeakRSSMiB, r.FleetCPUPct, r.DoublePlaced, r.Recreated, r.Moved, r.HostRestarts)
}

// runStep brings up a stack with hosts simulated hosts, measures them idle
// and through runs runs, and brings everything down again.
func runStep(ctx context.Context, cfg config, hosts, runs int) (res stepResult, err error) {
	res = stepResult{Hosts: hosts, Runs: runs}
	dir, err := os.MkdirTemp("", "agentrun-scale-")
	if err != nil {
		return res, err
	}
	pprofPort, err := freeport.One()
	if err != nil {
		return res, err
	}
	f, err := fleet.New(fleet.Options{StateDir: dir, Hosts: 0, HostPrefix: "scale", Net: "10.208", Podman5Host: "none",
		ManagerConfig: &configv1alpha1.Configuration{Pprof: configv1alpha1.PprofConfiguration{BindAddress: "127.0.0.1:" + strconv.Itoa(pprofPort)}}})
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil || cfg.keep {
			step("the step's logs stay in %s", dir)
			err = errors.Join(err, keepLogs(f))
			return
		}
		err = errors.Join(f.Down(), os.RemoveAll(dir))
	}()
	step("starting the control plane and the cluster-side manager (--mode=webhook,fleet; pprof on 127.0.0.1:%d)", pprofPort)
	if err := f.Up(); err != nil {
		return res, err
	}
	s, err := newStack(f, cfg)
	if err != nil {
		return res, err
	}
	s.pprofPort = pprofPort
	names := hostNames(hosts)
	step("giving %d hosts their identities (config/host, hack/host-identity.sh)", hosts)
	if err := s.installIdentities(ctx, names); err != nil {
		return res, err
	}
	procs, err := s.startHosts(ctx, dir, hosts)
	defer func() { err = errors.Join(err, stopHosts(procs), os.RemoveAll(s.sockets)) }()
	if err != nil {
		return res, err
	}
	res.Processes = len(procs)
	step("waiting for %d PodmanHosts to be Ready", hosts)
	if res.Slots, err = s.waitReady(ctx, hosts); err != nil {
		return res, err
	}
	if err := s.measureIdle(ctx, procs, &res); err != nil {
		return res, err
	}
	step("creating %d unpinned runs, %d at a time, and waiting for them to finish", runs, cfg.creators)
	burstCtx, cancel := context.WithTimeout(ctx, cfg.stepTimeout)
	defer cancel()
	return res, s.burst(burstCtx, procs, &res)
}

func hostNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("sim-%d", i+1)
	}
	return names
}

// simProcess is one simhosts process and the address it serves on.
type simProcess struct {
	cmd  *exec.Cmd
	addr string
}

// startHosts starts hosts simulated hosts, -hosts-per-process a process,
// from a configuration file as a host's (the test image and fake-agent as
// the local stack's hosts have them), and waits until each process serves.
func (s *stack) startHosts(ctx context.Context, dir string, hosts int) ([]*simProcess, error) {
	// Egress sockets under /tmp and short: a socket's path has at most 107
	// bytes.
	sockets, err := os.MkdirTemp("/tmp", "arscale-")
	if err != nil {
		return nil, err
	}
	s.sockets = sockets
	file := filepath.Join(dir, "simhosts.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`apiVersion: config.agentrun.dev/v1alpha1
kind: Configuration
host:
  runs:
    defaultImage: localhost/agentrun-test:latest
    defaultCommand: [fake-agent]
  sessions:
    dir: %q
  egress:
    socketDir: %q
    forwarder: %q
`, filepath.Join(dir, "sessions"), sockets, filepath.Join(s.cfg.root, "bin", "agentrun-forward"))), 0o600); err != nil {
		return nil, err
	}
	var procs []*simProcess
	for first := 1; first <= hosts; first += s.cfg.hostsPerProc {
		count := min(s.cfg.hostsPerProc, hosts-first+1)
		addrFile := filepath.Join(dir, fmt.Sprintf("simhosts-%d.addr", first))
		log, err := os.Create(filepath.Join(dir, fmt.Sprintf("simhosts-%d.log", first)))
		if err != nil {
			return procs, err
		}
		cmd := exec.Command(filepath.Join(s.cfg.root, "bin", "simhosts"), "-kubeconfig", s.f.Kubeconfig(), "-config", file,
			"-prefix", "sim", "-first", strconv.Itoa(first), "-count", strconv.Itoa(count),
			"-run-for", s.cfg.runFor.String(), "-addr-file", addrFile)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return procs, err
		}
		log.Close()
		p := &simProcess{cmd: cmd}
		procs = append(procs, p)
		if p.addr, err = waitForFile(ctx, addrFile, 60*time.Second); err != nil {
			return procs, fmt.Errorf("simhosts for hosts %d-%d: %w (log in %s)", first, first+count-1, err, log.Name())
		}
	}
	step("started %d hosts in %d simhosts processes", hosts, len(procs))
	return procs, nil
}

// stopHosts stops the processes (SIGTERM, then SIGKILL after 30 s).
func stopHosts(procs []*simProcess) error {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	var errs []error
	for _, p := range procs {
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("simhosts pid %d: %w", p.cmd.Process.Pid, err))
			}
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			errs = append(errs, fmt.Errorf("simhosts pid %d did not stop within 30s: %w", p.cmd.Process.Pid, <-done))
		}
	}
	return errors.Join(errs...)
}

func waitForFile(ctx context.Context, path string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
			return strings.TrimSpace(string(data)), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s not written within %s", path, timeout)
}

// waitReady waits until n PodmanHosts are Ready and returns their capacity
// together.
func (s *stack) waitReady(ctx context.Context, n int) (int, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var list agentsv1alpha1.PodmanHostList
		if err := s.k8s.List(ctx, &list); err != nil {
			return 0, err
		}
		ready, slots := 0, 0
		for _, h := range list.Items {
			if meta.IsStatusConditionTrue(h.Status.Conditions, agentsv1alpha1.ConditionReady) {
				ready++
				slots += int(h.Status.Capacity)
			}
		}
		if ready >= n {
			return slots, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d PodmanHosts Ready after 3 minutes", ready, n)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// measureIdle counts the hosts' and the fleet's writes over -idle while no
// run exists: the hosts' heartbeats (Lease, PodmanHost) and leader election.
func (s *stack) measureIdle(ctx context.Context, procs []*simProcess, res *stepResult) error {
	step("counting the idle hosts' writes for %s", s.cfg.idle)
	before, err := s.counters(ctx, procs)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.cfg.idle):
	}
	after, err := s.counters(ctx, procs)
	if err != nil {
		return err
	}
	secs := after.at.Sub(before.at).Seconds()
	s.idleHosts = after.hosts.minus(before.hosts).scaled(1 / secs)
	s.idleFleet = after.fleet.minus(before.fleet).scaled(1 / secs)
	res.HeartbeatWritesPerHostS = s.idleHosts.total() / float64(res.Hosts)
	res.FleetIdleWritesPerS = s.idleFleet.total()
	return nil
}

// keepLogs brings the stack down keeping its managers' logs, which down
// removes with the stack's own files.
func keepLogs(f *fleet.Fleet) error {
	logs := filepath.Join(f.StateDir(), "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"cluster-manager.log", "localstack.log"} {
		if err := os.Rename(filepath.Join(f.StateDir(), name), filepath.Join(logs, name)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return f.Down()
}

func cpuString(pct map[string]float64) string {
	var parts []string
	for _, part := range slices.Sorted(maps.Keys(pct)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", part, pct[part]))
	}
	return strings.Join(parts, ", ")
}
