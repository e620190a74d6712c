// Command bench measures what agentrun costs over raw Podman, side by side in
// one run on the local stack (make bench starts one):
//
//  1. raw: N short containers straight through Podman's bindings, C at a time,
//     doing what a script needs for the same result (create, start, wait,
//     read the output, remove; the same hardening as agentrun's); and cli:
//     the same containers as one `podman run --rm` process each, C at a
//     time, the way the HTTP service agentrun replaces runs them; before
//     both, the launch latency of the CLI and of agentrun, one run at a
//     time;
//  2. agentrun: N AgentRuns of the same container on a host capped at C runs,
//     timed from the API objects and Podman's events, with the manager's
//     Podman calls and API-server writes per run read from its /metrics;
//  3. scale: thousands of finished AgentRuns, and what the manager spends on
//     them (memory, its heap profile, CPU, Podman calls), and the memory of
//     a --mode=host and a --mode=fleet manager of their own, without the
//     finished runs and with them (memory.go);
//  4. raw and agentrun again, with those finished runs still present;
//  5. fleet: raw Podman on three hosts at once against as many runs through
//     a local fleet of its own;
//  6. progress: what refreshing running runs' output (host.output.progressPeriod)
//     costs the API server, on a host of its own running -progress-runs runs
//     at once;
//  7. egress: the host's egress proxy against the same HTTPS traffic sent
//     directly, in the bench's process (it needs no stack; run first, while
//     the stack is idle): a large download, as fast as the machine goes
//     and paced at a link's speed, time to first byte on new connections,
//     and many connections at once from several runs; the downloads and
//     first byte also to a host the run holds a credential for (the proxy
//     ends TLS and adds it).
//
// Steps 1, 2, 4, 5, 6 and 7 run -reps times; each figure is reported as the median of
// the repetitions, with their min and max. It prints a table and, last, one
// line of key=value figures (the medians), and writes them as JSON.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/specgen"
	"github.com/go-logr/logr"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/policy"
)

type config struct {
	n, c, scale int
	reps        int
	pprofURL    string
	fleetHosts  int
	// progressRuns and progressDuration shape the progress step; 0 runs
	// skip it. onlyProgress runs it alone.
	progressRuns     int
	progressDuration time.Duration
	onlyProgress     bool
	socket           string
	image            string
	host             string
	managerPID       int
	metricsURL       string
	settle           time.Duration
	resyncPeriod     time.Duration
	outputJSONPath   string
	// podmanCLI is the podman command of the CLI baseline; launchN the
	// runs of each path in the launch step (0 skips it).
	podmanCLI string
	launchN   int

	// onlyScale runs the scale step alone. managerBin, stackConfig and
	// kubeconfig start its managers of one side each (memory.go).
	onlyScale                           bool
	managerBin, stackConfig, kubeconfig string

	// egressMiB, egressRequests, egressConns and egressRuns shape the
	// egress step; 0 MiB skip it. onlyEgress runs it alone.
	egressMiB, egressRequests int
	egressConns, egressRuns   int
	// egressLinkMbit paces the upstream's answer of a second download at
	// a link's speed; 0 skips it.
	egressLinkMbit int
	egressAddress  string
	onlyEgress     bool

	// soak is make soak's (soak.go); onlySoak runs it alone.
	soak     soakConfig
	onlySoak bool
}

func main() {
	var cfg config
	flag.IntVar(&cfg.n, "n", 200, "containers (and AgentRuns) to launch")
	flag.IntVar(&cfg.c, "c", 8, "concurrency: raw launches at once, and the host's --max-concurrent-runs")
	flag.IntVar(&cfg.scale, "scale", 10000, "finished AgentRuns to create for the scale step")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of the raw and agentrun steps, with and without the finished runs")
	flag.IntVar(&cfg.fleetHosts, "fleet-hosts", 3, "hosts of the fleet step (a local fleet of its own, each host with -n runs and -c at a time); 0 skips it")
	flag.IntVar(&cfg.progressRuns, "progress-runs", 200, "runs at once of the progress step, on a host of its own; 0 skips it")
	flag.DurationVar(&cfg.progressDuration, "progress-duration", 4*time.Minute, "how long each run of the progress step prints a line a second")
	flag.BoolVar(&cfg.onlyProgress, "only-progress", false, "run the progress step alone")
	flag.BoolVar(&cfg.onlyScale, "only-scale", false, "run the scale step alone")
	flag.StringVar(&cfg.managerBin, "manager-bin", "bin/manager", "the manager binary, for the scale step's managers of one side (--mode=host, --mode=fleet)")
	flag.StringVar(&cfg.stackConfig, "stack-config", "", "the stack's manager configuration file, which those managers start from")
	flag.IntVar(&cfg.egressMiB, "egress-mib", 100, "MiB of the egress step's download, through the egress proxy and directly; 0 skips the step")
	flag.IntVar(&cfg.egressRequests, "egress-requests", 1000, "small HTTPS requests of the egress step, each on a new connection, on each path")
	flag.IntVar(&cfg.egressConns, "egress-conns", 200, "connections at once of the egress step, spread over -egress-runs runs (each run's bound is its share)")
	flag.IntVar(&cfg.egressRuns, "egress-runs", 8, "runs of the egress step: proxy servers with a policy of their own")
	flag.IntVar(&cfg.egressLinkMbit, "egress-link-mbit", 1000, "Mbit/s of the link the egress step's second download comes over (the upstream paces its answer; 1000: a host's 1 Gbit/s NIC), beside the unpaced one; 0 skips it")
	flag.StringVar(&cfg.egressAddress, "egress-address", "127.0.77.1", "loopback address whose port 443 the egress step's simulated upstream listens on")
	flag.BoolVar(&cfg.onlyEgress, "only-egress", false, "run the egress step alone (no stack needed)")
	flag.BoolVar(&cfg.onlySoak, "only-soak", false, "run the soak alone: -soak-runs runs through the host, -c at a time, reading the manager every -soak-every")
	flag.IntVar(&cfg.soak.runs, "soak-runs", 5000, "runs of the soak")
	flag.IntVar(&cfg.soak.every, "soak-every", 1000, "runs between the soak's readings of the manager")
	flag.IntVar(&cfg.soak.runSeconds, "soak-run-seconds", 2, "seconds each soak run works after its first line of output")
	flag.DurationVar(&cfg.soak.idle, "soak-idle", 0, "after the soak's last runs, wait this long without runs and read the host once more (0: no)")
	flag.IntVar(&cfg.soak.memProfileRate, "soak-mem-profile-rate", 0, "the soak host's runtime.MemProfileRate, for fine heap profiles (0: Go's default, 512 KiB)")
	flag.StringVar(&cfg.soak.profilesDir, "soak-profiles", ".local/soak-heap", "where the soak keeps the host's heap profile of each reading")
	flag.StringVar(&cfg.soak.jsonPath, "soak-json", ".local/soak.json", "where to write the soak's figures as JSON")
	flag.StringVar(&cfg.pprofURL, "pprof-url", "", "the manager's /debug/pprof/ URL, for its heap profile at scale")
	flag.StringVar(&cfg.socket, "podman-socket", "", "Podman API socket (hack/bench.sh passes AGENTRUN_PODMAN_SOCKET)")
	flag.StringVar(&cfg.podmanCLI, "podman-cli", "podman", "the podman command of the CLI baseline: the Podman the -podman-socket service is (same storage)")
	flag.IntVar(&cfg.launchN, "launch-n", 20, "runs through the CLI and through agentrun, one at a time, for the launch latency; 0 skips it")
	flag.StringVar(&cfg.image, "image", "localhost/agentrun-test:latest", "image of the short containers")
	flag.StringVar(&cfg.host, "host", "bench", "host name of the stack's manager")
	flag.IntVar(&cfg.managerPID, "manager-pid", 0, "PID of the stack's manager, for its memory and CPU")
	flag.StringVar(&cfg.metricsURL, "metrics-url", "", "the manager's /metrics URL, for its Podman call counts")
	flag.DurationVar(&cfg.settle, "settle", 20*time.Second, "how long the manager may settle after the scale objects are created")
	flag.DurationVar(&cfg.resyncPeriod, "resync-period", 10*time.Second, "the manager's --resync-period: CPU and Podman calls are measured over one")
	flag.StringVar(&cfg.outputJSONPath, "json", ".local/bench.json", "where to write the figures as JSON")
	flag.Parse()
	// The clients' own logging is not the bench's output.
	ctrllog.SetLogger(logr.Discard())
	if f := flag.Lookup("kubeconfig"); f != nil {
		cfg.kubeconfig = cmp.Or(f.Value.String(), os.Getenv("KUBECONFIG"))
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	var res results
	var err error
	if cfg.onlyEgress {
		if res.egress, err = egressStep(cfg); err != nil {
			return err
		}
		return report(res, cfg)
	}
	ctx := context.Background()
	conn, err := bindings.NewConnection(ctx, "unix://"+cfg.socket)
	if err != nil {
		return fmt.Errorf("connecting to Podman: %w", err)
	}
	k8s, err := kubeClient()
	if err != nil {
		return err
	}
	if err := sameStorage(conn, cfg.podmanCLI); err != nil {
		return err
	}
	if cfg.onlySoak {
		return soakStep(ctx, conn, k8s, cfg)
	}
	if cfg.onlyProgress {
		if res.progress, err = progressStep(ctx, cfg); err != nil {
			return err
		}
		return report(res, cfg)
	}
	if cfg.onlyScale {
		sc, removeScale, err := scale(ctx, k8s, cfg)
		defer removeScale()
		if err != nil {
			return err
		}
		res.scale = sc
		return report(res, cfg)
	}
	if cfg.egressMiB > 0 {
		if res.egress, err = egressStep(cfg); err != nil {
			return err
		}
	}
	for i := range cfg.reps {
		rep, err := sideBySide(ctx, conn, k8s, cfg, fmt.Sprintf("%d/%d", i+1, cfg.reps))
		if err != nil {
			return err
		}
		res.reps = append(res.reps, rep)
	}

	step("scale: %d finished AgentRuns", cfg.scale)
	sc, removeScale, err := scale(ctx, k8s, cfg)
	defer removeScale()
	if err != nil {
		return err
	}
	res.scale = sc
	for i := range cfg.reps {
		rep, err := sideBySide(ctx, conn, k8s, cfg, fmt.Sprintf("%d/%d with %d finished runs", i+1, cfg.reps, cfg.scale))
		if err != nil {
			return err
		}
		res.repsAtScale = append(res.repsAtScale, rep)
	}
	if cfg.fleetHosts > 0 {
		if res.fleet, err = fleetStep(ctx, cfg); err != nil {
			return err
		}
	}
	if cfg.progressRuns > 0 {
		if res.progress, err = progressStep(ctx, cfg); err != nil {
			return err
		}
	}
	return report(res, cfg)
}

// repetition is the launch step, then one raw, one cli and one agentrun
// step, one after the other.
type repetition struct {
	launch   launchResult
	raw, cli rawResult
	agentrun throughResult
}

func sideBySide(ctx context.Context, conn context.Context, k8s client.WithWatch, cfg config, which string) (repetition, error) {
	var rep repetition
	var err error
	if cfg.launchN > 0 {
		step("launch (%s): %d runs through %s and %d through agentrun, one at a time", which, cfg.launchN, cfg.podmanCLI, cfg.launchN)
		if rep.launch, err = launchStep(ctx, k8s, cfg); err != nil {
			return rep, err
		}
	}
	step("raw Podman (%s): %d containers, %d at a time", which, cfg.n, cfg.c)
	if rep.raw, err = rawBaseline(conn, cfg); err != nil {
		return rep, err
	}
	step("cli (%s): %d `%s run --rm` processes, %d at a time", which, cfg.n, cfg.podmanCLI, cfg.c)
	if rep.cli, err = cliBaseline(cfg); err != nil {
		return rep, err
	}
	step("agentrun (%s): %d AgentRuns on host %q with --max-concurrent-runs=%d", which, cfg.n, cfg.host, cfg.c)
	if rep.agentrun, err = throughAgentrun(ctx, k8s, cfg); err != nil {
		return rep, err
	}
	return rep, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// kubeClient talks to the stack named by --kubeconfig (controller-runtime's
// flag) or $KUBECONFIG.
func kubeClient() (client.WithWatch, error) {
	restCfg, err := ctrlconfig.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("no kubeconfig (is the stack up?): %w", err)
	}
	return kubeClientFor(restCfg)
}

func kubeClientFor(restCfg *rest.Config) (client.WithWatch, error) {
	// The bench creates thousands of objects: do not let client-side rate
	// limiting measure itself.
	restCfg.QPS, restCfg.Burst = 2000, 4000
	scheme := runtime.NewScheme()
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.NewWithWatch(restCfg, client.Options{Scheme: scheme})
}

// rawResult is what launching containers straight through Podman took.
type rawResult struct {
	launch []time.Duration // create called -> start returned
	wall   time.Duration
	calls  int64 // Podman API calls made
}

func rawBaseline(conn context.Context, cfg config) (rawResult, error) {
	var (
		mu       sync.Mutex
		launches []time.Duration
		calls    atomic.Int64
	)
	start := time.Now()
	err := atOnce(cfg.n, cfg.c, func(i int) error {
		d, err := rawOne(conn, cfg.image, fmt.Sprintf("agentrun-bench-raw-%d-%d", start.UnixNano(), i), &calls)
		mu.Lock()
		launches = append(launches, d)
		mu.Unlock()
		return err
	})
	return rawResult{launch: launches, wall: time.Since(start), calls: calls.Load()}, err
}

// atOnce calls one for 0 to n-1, c at a time, and returns the first error.
func atOnce(n, c int, one func(i int) error) error {
	var (
		mu       sync.Mutex
		firstErr error
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := one(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return firstErr
}

// rawOne is what a careful user of the bindings does for one short
// container, to get what agentrun records of a run: create, start, wait for
// it to exit, read its output, remove it. calls counts the API calls.
func rawOne(conn context.Context, image, name string, calls *atomic.Int64) (time.Duration, error) {
	sg := specgen.NewSpecGenerator(image, false)
	sg.Name = name
	sg.Command = []string{"true"}
	// The same container agentrun launches with its default policy: an init
	// process, no-new-privileges, no capabilities, a non-root user and
	// limits, so the comparison measures the controller, not the hardening.
	yes := true
	sg.Init, sg.NoNewPrivileges = &yes, &yes
	sg.CapDrop, sg.CapAdd = []string{"ALL"}, policy.DefaultCapabilities
	sg.User = policy.DefaultUser
	memory, quota, period := int64(512<<20), int64(100_000), uint64(100_000)
	sg.ResourceLimits = &spec.LinuxResources{
		Memory: &spec.LinuxMemory{Limit: &memory},
		CPU:    &spec.LinuxCPU{Quota: &quota, Period: &period},
		Pids:   &spec.LinuxPids{Limit: 1024},
	}
	t0 := time.Now()
	calls.Add(1)
	resp, err := containers.CreateWithSpec(conn, sg, nil)
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	calls.Add(1)
	if err := containers.Start(conn, resp.ID, nil); err != nil {
		return 0, fmt.Errorf("start: %w", err)
	}
	launched := time.Since(t0)
	calls.Add(1)
	if _, err := containers.Wait(conn, resp.ID, new(containers.WaitOptions).WithCondition([]define.ContainerStatus{define.ContainerStateExited, define.ContainerStateStopped})); err != nil {
		return 0, fmt.Errorf("wait: %w", err)
	}
	calls.Add(1)
	if err := drainLogs(conn, resp.ID); err != nil {
		return 0, fmt.Errorf("logs: %w", err)
	}
	calls.Add(1)
	if _, err := containers.Remove(conn, resp.ID, new(containers.RemoveOptions).WithForce(true)); err != nil {
		return 0, fmt.Errorf("remove: %w", err)
	}
	return launched, nil
}

// drainLogs reads a container's whole output, stdout and stderr.
func drainLogs(conn context.Context, id string) error {
	stdout, stderr := make(chan string), make(chan string)
	done := make(chan error, 1)
	go func() {
		done <- containers.Logs(conn, id, new(containers.LogOptions).WithStdout(true).WithStderr(true), stdout, stderr)
	}()
	for {
		select {
		case <-stdout:
		case <-stderr:
		case err := <-done:
			return err
		}
	}
}

// throughResult is what running the same containers as AgentRuns took.
type throughResult struct {
	launchAPI     []time.Duration // creationTimestamp -> status.startTime (whole seconds)
	launchWatch   []time.Duration // create call -> Running seen by a watch
	statusLatency []time.Duration // Podman's died event -> Succeeded seen by a watch
	eventDelivery []time.Duration // Podman's died event -> received by a subscriber
	// added is agentrun's own share of statusLatency: the died event
	// received by the bench's subscriber -> Succeeded seen by its watch.
	added    []time.Duration
	wall     time.Duration
	finished int
	// podmanCalls and apiWrites are the manager's calls over the step, by
	// operation and by HTTP verb, from its /metrics.
	podmanCalls, apiWrites map[string]float64
}

const benchLabel = "agentrun.dev/bench"

func throughAgentrun(ctx context.Context, k8s client.WithWatch, cfg config) (throughResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	tag := fmt.Sprintf("run-%d", time.Now().Unix())
	defer cleanup(k8s, tag)

	events := containerEvents(ctx, cfg.socket, "bench-"+tag+"-")
	calls0, writes0, err := managerCounters(cfg.metricsURL)
	if err != nil {
		return throughResult{}, err
	}
	queues0, err := workqueueTimes(cfg.metricsURL)
	if err != nil {
		return throughResult{}, err
	}
	res, seen, err := runThrough(ctx, k8s, tag, cfg.n, cfg.host)
	if err != nil {
		return res, err
	}
	// The finished pass (container removed, finalizer dropped) follows the
	// status the watch saw: give it a moment before reading the counters.
	if err := settled(ctx, k8s, tag); err != nil {
		return res, err
	}
	calls1, writes1, err := managerCounters(cfg.metricsURL)
	if err != nil {
		return res, err
	}
	res.podmanCalls, res.apiWrites = minus(calls1, calls0), minus(writes1, writes0)
	if latencies, err := podmanCallLatencies(cfg.metricsURL); err == nil {
		step("agentrun: mean Podman call latency by operation (since the manager started): %s", latencies)
	}
	step("agentrun: Podman calls per run by operation: %s; API-server writes per run by verb: %s",
		perRun(res.podmanCalls, cfg.n), perRun(res.apiWrites, cfg.n))
	if queues1, err := workqueueTimes(cfg.metricsURL); err == nil {
		for _, name := range slices.Sorted(maps.Keys(queues1)) {
			if d := queues1[name].minus(queues0[name]); d.count > 0 {
				step("agentrun: %s: %s", name, d)
			}
		}
	}
	cont := events()
	for name, w := range seen {
		if e, ok := cont[name]; ok && !e.died.IsZero() {
			res.eventDelivery = append(res.eventDelivery, e.diedReceived.Sub(e.died))
			res.statusLatency = append(res.statusLatency, w.succeeded.Sub(e.died))
			res.added = append(res.added, w.succeeded.Sub(e.diedReceived))
		}
	}
	timelineOf(seen, cont, cfg.c).print()
	return res, nil
}

// runThrough creates n AgentRuns labelled with tag, pinned to host (or, with
// host empty, left to the fleet to place), and follows them with a watch until
// every one has succeeded; seen is when the watch saw each claimed, running
// and succeeded.
func runThrough(ctx context.Context, k8s client.WithWatch, tag string, n int, host string) (res throughResult, seen map[string]watched, err error) {
	w, err := k8s.Watch(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag})
	if err != nil {
		return res, nil, err
	}
	defer w.Stop()
	// The watch is read, and each event timed, from the start: read only
	// once every run is created, the events of the first runs waited
	// behind the creates, and their runs looked seconds slower than they
	// were (the first runs start while the rest are still being created).
	events := make(chan stampedEvent, 64*n)
	go stampEvents(w.ResultChan(), events)
	created := map[string]time.Time{}
	start := time.Now()
	for i := range n {
		run := &agentsv1alpha1.AgentRun{}
		run.Name, run.Namespace = fmt.Sprintf("bench-%s-%d", tag, i), "default"
		run.Labels = map[string]string{benchLabel: tag}
		run.Spec = agentsv1alpha1.AgentRunSpec{Prompt: "bench", HostName: host, Command: []string{"true"}}
		t := time.Now()
		if err := k8s.Create(ctx, run); err != nil {
			return res, nil, fmt.Errorf("creating %s: %w", run.Name, err)
		}
		created[run.Name] = t
	}

	seen = map[string]watched{}
	succeeded := 0
	var last time.Time
	for succeeded < n {
		select {
		case <-ctx.Done():
			return res, seen, fmt.Errorf("only %d of %d runs succeeded in time", succeeded, n)
		case ev, ok := <-events:
			if !ok {
				return res, seen, fmt.Errorf("the watch ended after %d of %d runs", succeeded, n)
			}
			run, ok := ev.Object.(*agentsv1alpha1.AgentRun)
			if !ok {
				continue
			}
			now := ev.at
			t := seen[run.Name]
			if t.claimed.IsZero() && run.Status.Host != "" {
				t.claimed = now
			}
			if t.running.IsZero() && run.Status.StartTime != nil {
				t.running = now
				res.launchWatch = append(res.launchWatch, now.Sub(created[run.Name]))
				res.launchAPI = append(res.launchAPI, run.Status.StartTime.Sub(run.CreationTimestamp.Time))
			}
			switch run.Status.Phase {
			case agentsv1alpha1.PhaseSucceeded:
				if t.succeeded.IsZero() {
					t.succeeded, last = now, now
					if c := meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionFinished); c != nil {
						t.succeededWritten = c.LastTransitionTime.Time
					}
					succeeded++
				}
			case agentsv1alpha1.PhaseFailed, agentsv1alpha1.PhaseCancelled:
				return res, seen, fmt.Errorf("run %s ended %s: %s", run.Name, run.Status.Phase, run.Status.Message)
			}
			seen[run.Name] = t
		}
	}
	res.wall, res.finished = last.Sub(start), succeeded
	return res, seen, nil
}

// stampedEvent is a watch event and when it arrived.
type stampedEvent struct {
	watch.Event
	at time.Time
}

// stampEvents times each event as it arrives, until the watch ends.
func stampEvents(in <-chan watch.Event, out chan<- stampedEvent) {
	defer close(out)
	for ev := range in {
		out <- stampedEvent{Event: ev, at: time.Now()}
	}
}

// settled waits until the host has cleaned up after every run of the step
// (container removed, finalizer dropped), so the step's counters hold all
// that a run costs.
func settled(ctx context.Context, k8s client.Client, tag string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		list := &agentsv1alpha1.AgentRunList{}
		if err := k8s.List(ctx, list, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag}); err != nil {
			return err
		}
		left := slices.IndexFunc(list.Items, func(r agentsv1alpha1.AgentRun) bool { return len(r.Finalizers) > 0 }) >= 0
		if !left {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("runs of %s still hold their finalizer a minute after they finished", tag)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func cleanup(k8s client.Client, tag string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = k8s.DeleteAllOf(ctx, &agentsv1alpha1.AgentRun{}, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag})
}

// scaleResult is what the manager spends on thousands of finished runs.
type scaleResult struct {
	objects             int
	cpuSeconds          float64
	podmanCallsFinished float64
	createWall          time.Duration
	heap                heapSummary
	memory              memoryBreakdown
	// sides are the memory of a manager of one side (memory.go), by mode
	// (host, fleet), without the finished runs and with them.
	sidesAt0, sidesAtScale map[string]memoryBreakdown
}

// sidesMemory measures a manager of each side on its own.
func sidesMemory(ctx context.Context, k8s client.Client, cfg config, when string) (map[string]memoryBreakdown, error) {
	out := map[string]memoryBreakdown{}
	for _, mode := range []string{"host", "fleet"} {
		step("scale: a --mode=%s manager of its own, %s", mode, when)
		m, err := sideMemory(ctx, k8s, cfg, mode)
		if err != nil {
			return nil, err
		}
		out[mode] = m
	}
	return out, nil
}

// scale writes the finished runs and measures the manager with them, and a
// manager of each side on its own before and after; the returned function
// deletes them.
func scale(ctx context.Context, k8s client.Client, cfg config) (scaleResult, func(), error) {
	tag := fmt.Sprintf("scale-%d", time.Now().Unix())
	remove := func() { cleanup(k8s, tag) }
	var res scaleResult
	var err error
	if res.sidesAt0, err = sidesMemory(ctx, k8s, cfg, "before the finished runs"); err != nil {
		return res, remove, err
	}
	output := strings.Repeat("x", 4095) + "\n"
	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := finishedRun(ctx, k8s, cfg.host, tag, i, output); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range cfg.scale {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return scaleResult{}, remove, err
	default:
	}
	res.objects, res.createWall = cfg.scale, time.Since(start)
	step("scale: %d finished runs written in %s; letting the manager settle for %s", cfg.scale, res.createWall.Round(time.Second), cfg.settle)
	time.Sleep(cfg.settle)

	if cfg.managerPID == 0 || cfg.metricsURL == "" {
		return res, remove, fmt.Errorf("-manager-pid and -metrics-url are needed to measure the manager")
	}
	calls0, err := podmanCalls(cfg.metricsURL)
	if err != nil {
		return res, remove, err
	}
	cpu0, err := cpuSeconds(cfg.managerPID)
	if err != nil {
		return res, remove, err
	}
	time.Sleep(cfg.resyncPeriod)
	cpu1, err := cpuSeconds(cfg.managerPID)
	if err != nil {
		return res, remove, err
	}
	calls1, err := podmanCalls(cfg.metricsURL)
	if err != nil {
		return res, remove, err
	}
	res.cpuSeconds, res.podmanCallsFinished = cpu1-cpu0, calls1-calls0
	// Read before the heap profile, which collects first.
	if res.memory, err = memoryOf(cfg.managerPID, cfg.metricsURL); err != nil {
		return res, remove, err
	}
	if cfg.pprofURL != "" {
		if res.heap, err = heapProfile(cfg.pprofURL); err != nil {
			return res, remove, err
		}
	}
	res.sidesAtScale, err = sidesMemory(ctx, k8s, cfg, fmt.Sprintf("with the %d finished runs", cfg.scale))
	return res, remove, err
}

// finishedRun writes one AgentRun as a real finished run looks once its host
// has let go of it (LabelReleased, set once it finished: the fleet takes the
// label off an unfinished run). It is pinned to the host and created
// cancelled, so the manager never starts a container for it whichever
// status write lands first.
func finishedRun(ctx context.Context, k8s client.Client, host, tag string, i int, output string) error {
	run := &agentsv1alpha1.AgentRun{}
	run.Name, run.Namespace = fmt.Sprintf("bench-%s-%d", tag, i), "default"
	run.Labels = map[string]string{benchLabel: tag}
	run.Spec = agentsv1alpha1.AgentRunSpec{Prompt: "bench scale", HostName: host, Cancel: true}
	if err := k8s.Create(ctx, run); err != nil {
		return fmt.Errorf("creating %s: %w", run.Name, err)
	}
	for {
		now := time.Now()
		started := metav1Time(now.Add(-90 * time.Second))
		completed := metav1Time(now)
		code := int32(0)
		name := fmt.Sprintf("agentrun-default-%s-%08x-1", run.Name, i)
		run.Status = agentsv1alpha1.AgentRunStatus{
			ObservedGeneration: run.Generation,
			Phase:              agentsv1alpha1.PhaseSucceeded,
			Host:               host,
			ContainerID:        fmt.Sprintf("%064x", i),
			ContainerName:      name,
			StartTime:          &started,
			CompletionTime:     &completed,
			ExitCode:           &code,
			Attempts:           1,
			Duration:           "1m30s",
			Output:             output,
			Message:            "container " + name + " exited 0",
			AgentResult:        &agentsv1alpha1.AgentResult{Result: "done", SessionID: fmt.Sprintf("session-%d", i), NumTurns: 3, CostUSD: "0.0421"},
			Conditions:         finishedConditions(run.Generation, now),
		}
		err := k8s.Status().Update(ctx, run)
		if err == nil {
			return release(ctx, k8s, run)
		}
		if !isConflict(err) {
			return fmt.Errorf("writing the status of %s: %w", run.Name, err)
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(run), run); err != nil {
			return err
		}
	}
}

// release labels a finished run as its host does once it has let go of it.
func release(ctx context.Context, k8s client.Client, run *agentsv1alpha1.AgentRun) error {
	patch := client.MergeFrom(run.DeepCopy())
	run.Labels[agentsv1alpha1.LabelReleased] = "true"
	if err := k8s.Patch(ctx, run, patch); err != nil {
		return fmt.Errorf("releasing %s: %w", run.Name, err)
	}
	return nil
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func report(r results, cfg config) error {
	figures := map[string]spread{}
	var keys []string
	add := func(key string, s spread) {
		figures[key] = s
		keys = append(keys, key)
	}
	if len(r.reps) > 0 {
		printLatencies(r, cfg)
		ratio := func(rep repetition) float64 { return rep.agentrun.throughput() / rep.raw.throughput(cfg.n) }
		add("throughput_ratio", spreadOf(r.reps, ratio))
		add("throughput_ratio_10k", spreadOf(r.repsAtScale, ratio))
		add("cli_throughput_ratio", spreadOf(r.reps, func(rep repetition) float64 { return rep.agentrun.throughput() / rep.cli.throughput(cfg.n) }))
		add("raw_runs_per_s", spreadOf(r.reps, func(rep repetition) float64 { return rep.raw.throughput(cfg.n) }))
		add("cli_runs_per_s", spreadOf(r.reps, func(rep repetition) float64 { return rep.cli.throughput(cfg.n) }))
		add("agentrun_runs_per_s", spreadOf(r.reps, func(rep repetition) float64 { return rep.agentrun.throughput() }))
		add("launch_p50_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.agentrun.launchWatch, 50)) }))
		add("launch_p99_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.agentrun.launchWatch, 99)) }))
		add("raw_launch_p50_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.raw.launch, 50)) }))
		add("status_p50_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.agentrun.statusLatency, 50)) }))
		add("status_p99_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.agentrun.statusLatency, 99)) }))
		add("added_p99_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.agentrun.added, 99)) }))
		if cfg.launchN > 0 {
			add("first_output_p50_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.launch.agentrun, 50)) }))
			add("first_output_p99_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.launch.agentrun, 99)) }))
			add("cli_first_output_p50_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.launch.cli, 50)) }))
			add("cli_first_output_p99_ms", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(rep.launch.cli, 99)) }))
		}
		add("api_writes_per_run", spreadOf(r.reps, func(rep repetition) float64 { return sum(rep.agentrun.apiWrites) / float64(cfg.n) }))
		add("podman_calls_per_run", spreadOf(r.reps, func(rep repetition) float64 { return sum(rep.agentrun.podmanCalls) / float64(cfg.n) }))
		add("raw_podman_calls_per_run", spreadOf(r.reps, func(rep repetition) float64 { return float64(rep.raw.calls) / float64(cfg.n) }))
	}
	if r.scale.objects > 0 {
		add("rss_mib_10k", single(r.scale.memory.RSSMiB))
		add("idle_cpu_pct_10k", single(100*r.scale.cpuSeconds/cfg.resyncPeriod.Seconds()))
		add("podman_calls_finished", single(r.scale.podmanCallsFinished))
		add("host_rss_mib_0", single(r.scale.sidesAt0["host"].RSSMiB))
		add("host_rss_mib_10k", single(r.scale.sidesAtScale["host"].RSSMiB))
		add("fleet_rss_mib_0", single(r.scale.sidesAt0["fleet"].RSSMiB))
		add("fleet_rss_mib_10k", single(r.scale.sidesAtScale["fleet"].RSSMiB))
	}
	if len(r.fleet) > 0 {
		add("fleet_throughput_ratio", spreadOf(r.fleet, func(rep fleetRepetition) float64 { return rep.agentrunPerS / rep.rawPerS }))
		add("fleet_raw_runs_per_s", spreadOf(r.fleet, func(rep fleetRepetition) float64 { return rep.rawPerS }))
		add("fleet_agentrun_runs_per_s", spreadOf(r.fleet, func(rep fleetRepetition) float64 { return rep.agentrunPerS }))
	}
	if len(r.progress) > 0 {
		add("progress_peak_running", spreadOf(r.progress, func(rep progressRepetition) float64 { return float64(rep.peakRunning) }))
		add("progress_writes_per_run_minute", spreadOf(r.progress, func(rep progressRepetition) float64 { return rep.writesPerRunMinute }))
		add("progress_peak_writes_per_s", spreadOf(r.progress, func(rep progressRepetition) float64 { return rep.peakWritesPerS }))
		add("progress_live_pct", spreadOf(r.progress, func(rep progressRepetition) float64 { return rep.livePct }))
	}
	if len(r.egress) > 0 {
		printEgress(r.egress, cfg)
		for _, f := range egressFigures(r.egress, cfg) {
			add(f.key, f.spread)
		}
	}
	fmt.Println()
	for _, k := range keys {
		fmt.Printf("%-50s %26s\n", k, figures[k].String())
	}
	if r.scale.objects > 0 {
		printScale(r.scale, cfg)
	}

	var line []string
	medians := map[string]float64{}
	for _, k := range keys {
		medians[k] = round(figures[k].Median, 3)
		line = append(line, fmt.Sprintf("%s=%g", k, medians[k]))
	}
	if err := writeJSON(cfg.outputJSONPath, map[string]any{
		"n": cfg.n, "c": cfg.c, "scale": cfg.scale, "reps": cfg.reps,
		"progress_runs": cfg.progressRuns, "progress_duration_s": cfg.progressDuration.Seconds(),
		"egress_mib": cfg.egressMiB, "egress_requests": cfg.egressRequests, "egress_conns": cfg.egressConns, "egress_runs": cfg.egressRuns,
		"egress_link_mbit": cfg.egressLinkMbit, "figures": medians, "spread": figures, "heap": r.scale.heap, "memory": r.scale.memory,
		"memory_by_side": map[string]any{"without_finished_runs": r.scale.sidesAt0, "with_finished_runs": r.scale.sidesAtScale},
		"per_run": map[string]any{
			"podman_calls_by_operation": perRunByKey(r.reps, cfg.n, func(rep repetition) map[string]float64 { return rep.agentrun.podmanCalls }),
			"api_writes_by_verb":        perRunByKey(r.reps, cfg.n, func(rep repetition) map[string]float64 { return rep.agentrun.apiWrites }),
		},
	}); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(strings.Join(line, " "))
	return nil
}

// printLatencies prints the latency table of the side-by-side steps.
func printLatencies(r results, cfg config) {
	fmt.Printf("\nN=%d C=%d on host %q, %d repetition(s); figures are median [min, max] over them (latencies in ms)\n", cfg.n, cfg.c, cfg.host, cfg.reps)
	fmt.Printf("%-46s %26s %26s %26s\n", "latency", "p50", "p95", "p99")
	row := func(name string, get func(repetition) []time.Duration) {
		fmt.Printf("%-46s", name)
		for _, p := range []float64{50, 95, 99} {
			fmt.Printf(" %26s", spreadOf(r.reps, func(rep repetition) float64 { return ms(percentile(get(rep), p)) }).String())
		}
		fmt.Println()
	}
	row("raw: create+start (bindings)", func(rep repetition) []time.Duration { return rep.raw.launch })
	row("agentrun: create call -> Running (watch)", func(rep repetition) []time.Duration { return rep.agentrun.launchWatch })
	row("agentrun: creationTimestamp -> startTime (s)", func(rep repetition) []time.Duration { return rep.agentrun.launchAPI })
	row("agentrun: died event -> Succeeded (watch)", func(rep repetition) []time.Duration { return rep.agentrun.statusLatency })
	row("  Podman's died event delivery", func(rep repetition) []time.Duration { return rep.agentrun.eventDelivery })
	row("  agentrun's own: event received -> Succeeded", func(rep repetition) []time.Duration { return rep.agentrun.added })
	if cfg.launchN > 0 {
		row("launch, C=1: create call -> first output line", func(rep repetition) []time.Duration { return rep.launch.agentrun })
		row("launch, C=1: podman run -> first output line", func(rep repetition) []time.Duration { return rep.launch.cli })
	}
}

// printScale prints what the manager spent on the scale step's finished
// runs.
func printScale(sc scaleResult, cfg config) {
	fmt.Printf("\nscale: %d finished runs written in %s; the manager over %s with them: %.2f s CPU, %.0f Podman calls, %.1f MiB resident\n",
		sc.objects, sc.createWall.Round(time.Second), cfg.resyncPeriod, sc.cpuSeconds, sc.podmanCallsFinished, sc.memory.RSSMiB)
	m := sc.memory
	fmt.Printf("resident: %.1f MiB anonymous, %.1f MiB mapped files (the binary); Go heap %.1f MiB in use, %.1f MiB idle of which %.1f MiB released, stacks %.1f MiB, %.1f MiB from the kernel in all, next collection at %.1f MiB\n",
		m.RSSAnonMiB, m.RSSFileMiB, m.HeapInuseMiB, m.HeapIdleMiB, m.HeapReleasedMiB, m.StackMiB, m.GoSysMiB, m.NextGCMiB)
	for _, mode := range []string{"host", "fleet"} {
		at0, atScale := sc.sidesAt0[mode], sc.sidesAtScale[mode]
		fmt.Printf("a --mode=%s manager of its own: %.1f MiB resident (Go heap %.1f MiB in use) without the finished runs, %.1f MiB (%.1f MiB) with them: %+.2f MiB per 1,000\n",
			mode, at0.RSSMiB, at0.HeapInuseMiB, atScale.RSSMiB, atScale.HeapInuseMiB, (atScale.RSSMiB-at0.RSSMiB)*1000/float64(sc.objects))
	}
	if len(sc.heap.Top) > 0 {
		fmt.Printf("manager heap in use: %.1f MiB; top consumers (flat):\n", sc.heap.InUseMiB)
		for _, f := range sc.heap.Top {
			fmt.Printf("  %8.1f MiB  %s\n", f.MiB, f.Function)
		}
	}
}

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return math.Round(f*p) / p
}

type results struct {
	reps, repsAtScale []repetition
	scale             scaleResult
	fleet             []fleetRepetition
	progress          []progressRepetition
	egress            []egressRepetition
}

func (r rawResult) throughput(n int) float64 { return float64(n) / r.wall.Seconds() }

func (r throughResult) throughput() float64 { return float64(r.finished) / r.wall.Seconds() }
