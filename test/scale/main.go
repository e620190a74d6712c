// Command scale is make scale: a fleet of simulated Podman hosts against a
// real API server and the fleet side as shipped, to see how placement and
// the API server's load grow with the number of hosts.
//
// For each step (-steps, hosts at once) it starts a stack of its own (the
// control plane and the cluster-side manager, --mode=webhook,fleet, from
// hack/local-stack.sh with no Podman host), gives each host its identity
// (config/host and hack/host-identity.sh), starts the hosts in processes of
// -hosts-per-process (test/scale/simhosts: the host's reconciler as shipped
// over an in-memory engine), measures the hosts' heartbeat writes while
// idle, then creates -runs x hosts/(the last step's hosts) unpinned runs as
// fast as the API server takes them and waits for all of them to finish.
// Each step's runs are fresh: the stack goes down after the step.
//
// It prints each step's figures, writes them to -json, and ends with a line
// of key=value figures, as make bench does. The simulation leaves out
// Podman's own cost and any network latency between the hosts and the API
// server (everything runs on one machine's loopback).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

type config struct {
	steps          []int
	runs           int
	runFor         time.Duration
	hostsPerProc   int
	idle           time.Duration
	creators       int
	stepTimeout    time.Duration
	root, jsonPath string
	// keep leaves each step's state folder (its logs) in place.
	keep bool
	// profileDir receives CPU profiles of each burst (none when empty).
	profileDir string
	profileFor time.Duration
}

func main() {
	var cfg config
	var steps string
	flag.StringVar(&steps, "steps", "10,30,100", "the hosts of each step, comma-separated; the last is the fleet the goals speak of")
	flag.IntVar(&cfg.runs, "runs", 10000, "the runs of the last step; a step of fewer hosts gets as many runs per host")
	flag.DurationVar(&cfg.runFor, "run-for", 5*time.Second, "how long each simulated container runs")
	flag.IntVar(&cfg.hostsPerProc, "hosts-per-process", 25, "simulated hosts per simhosts process")
	flag.DurationVar(&cfg.idle, "idle", 30*time.Second, "how long the hosts' heartbeat writes are counted, idle, before the runs")
	flag.IntVar(&cfg.creators, "creators", 32, "runs created at once")
	flag.DurationVar(&cfg.stepTimeout, "step-timeout", 40*time.Minute, "how long a step's runs may take to finish")
	flag.StringVar(&cfg.root, "root", ".", "the repository's root (config/, hack/, bin/)")
	flag.StringVar(&cfg.jsonPath, "json", ".local/scale.json", "where to write the figures")
	flag.BoolVar(&cfg.keep, "keep", false, "keep each step's state folder with its logs (the stack still goes down)")
	flag.StringVar(&cfg.profileDir, "profile-dir", "", "where to write CPU profiles of the kube-apiserver, the fleet and the first hosts' process during each burst (none when empty)")
	flag.DurationVar(&cfg.profileFor, "profile-seconds", 20*time.Second, "how long each profile samples")
	flag.Parse()
	for _, s := range strings.Split(steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "scale: -steps: %q is not a number of hosts\n", s)
			os.Exit(2)
		}
		cfg.steps = append(cfg.steps, n)
	}
	// The clients' own logs are not the figures: quiet.
	ctrllog.SetLogger(logr.Discard())
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	root, err := filepath.Abs(cfg.root)
	if err != nil {
		return err
	}
	cfg.root = root
	// SIGINT or SIGTERM ends the step, which then brings its stack down.
	interrupted, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	largest := cfg.steps[len(cfg.steps)-1]
	var results []stepResult
	for _, hosts := range cfg.steps {
		runs := max(1, cfg.runs*hosts/largest)
		step("%d hosts, %d runs of %s each", hosts, runs, cfg.runFor)
		ctx, cancel := context.WithTimeout(interrupted, cfg.stepTimeout+10*time.Minute)
		res, err := runStep(ctx, cfg, hosts, runs)
		cancel()
		if err != nil {
			return fmt.Errorf("the step of %d hosts: %w", hosts, err)
		}
		results = append(results, res)
		res.print()
	}
	return report(cfg, results)
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> scale: "+format+"\n", args...)
}

// report prints the steps side by side, writes them as JSON, and prints the
// key=value line: each figure of each step, suffixed with its hosts
// (placed_per_s_h100), and the growth of writes per run from the first step
// to the last.
func report(cfg config, results []stepResult) error {
	fmt.Println()
	fmt.Printf("%-34s", "hosts")
	for _, r := range results {
		fmt.Printf("%14d", r.Hosts)
	}
	fmt.Println()
	var line []string
	for _, f := range figures {
		fmt.Printf("%-34s", f.name)
		for _, r := range results {
			v := f.of(r)
			fmt.Printf("%14.4g", v)
			line = append(line, fmt.Sprintf("%s_h%d=%g", f.key, r.Hosts, round3(v)))
		}
		fmt.Println()
	}
	first, last := results[0], results[len(results)-1]
	growth := 0.0
	if w := first.WritesPerRun.total(); w > 0 {
		growth = last.WritesPerRun.total()/w - 1
	}
	fmt.Printf("\nwrites per run at %d hosts against %d: %+.1f%% (goal: within 10%%)\n", last.Hosts, first.Hosts, 100*growth)
	line = append(line, fmt.Sprintf("writes_per_run_growth_pct=%g", round3(100*growth)))
	data, err := json.MarshalIndent(map[string]any{
		"runs": cfg.runs, "run_for_s": cfg.runFor.Seconds(), "hosts_per_process": cfg.hostsPerProc, "idle_s": cfg.idle.Seconds(),
		"steps": results, "writes_per_run_growth_pct": 100 * growth,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.jsonPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfg.jsonPath, data, 0o644); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(strings.Join(line, " "))
	return nil
}

// figures are the per-step figures the table and the key=value line show.
var figures = []struct {
	name, key string
	of        func(stepResult) float64
}{
	{"runs placed/s (whole burst)", "placed_per_s", func(r stepResult) float64 { return r.PlacedPerS }},
	{"runs finished/s (whole burst)", "finished_per_s", func(r stepResult) float64 { return r.FinishedPerS }},
	{"create-to-Running p50 ms (free)", "running_p50_ms", func(r stepResult) float64 { return r.RunningP50Ms }},
	{"create-to-Running p99 ms (free)", "running_p99_ms", func(r stepResult) float64 { return r.RunningP99Ms }},
	{"  of which create-to-placed p99 ms", "placed_p99_ms", func(r stepResult) float64 { return r.PlacedP99Ms }},
	{"placement passes per run", "placement_passes_per_run", func(r stepResult) float64 { return r.PlacementPassesPerRun }},
	{"placement pass ms (mean)", "placement_pass_ms", func(r stepResult) float64 { return r.PlacementPassMs }},
	{"API writes per run", "writes_per_run", func(r stepResult) float64 { return r.WritesPerRun.total() }},
	{"  of them the fleet's", "fleet_writes_per_run", func(r stepResult) float64 { return r.FleetWritesPerRun.total() }},
	{"heartbeat writes per host per s", "heartbeat_writes_per_host_s", func(r stepResult) float64 { return r.HeartbeatWritesPerHostS }},
	{"fleet RSS MiB (peak)", "fleet_rss_mib", func(r stepResult) float64 { return r.FleetPeakRSSMiB }},
	{"fleet CPU % of a core (burst)", "fleet_cpu_pct", func(r stepResult) float64 { return r.FleetCPUPct }},
	{"hosts' CPU % of a core (burst)", "hosts_cpu_pct", func(r stepResult) float64 { return r.CPUPct["hosts"] }},
	{"kube-apiserver CPU % (burst)", "apiserver_cpu_pct", func(r stepResult) float64 { return r.CPUPct["kube-apiserver"] }},
	{"etcd CPU % (burst)", "etcd_cpu_pct", func(r stepResult) float64 { return r.CPUPct["etcd"] }},
	{"runs placed on two hosts (an attempt)", "double_placed", func(r stepResult) float64 { return float64(r.DoublePlaced) }},
	{"runs moved off a lost host", "moved", func(r stepResult) float64 { return float64(r.Moved) }},
	{"host managers restarted", "host_restarts", func(r stepResult) float64 { return float64(r.HostRestarts) }},
	{"runs not finished", "unfinished", func(r stepResult) float64 { return float64(r.Runs - r.Finished) }},
}

func round3(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', 4, 64), 64)
	return v
}
