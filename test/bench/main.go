// Command bench measures what agentrun costs over raw Podman, side by side in
// one run on the local stack (make bench starts one):
//
//  1. raw: N short containers straight through Podman's bindings, C at a time;
//  2. agentrun: N AgentRuns of the same container on a host capped at C runs,
//     timed from the API objects and Podman's events;
//  3. scale: thousands of finished AgentRuns, and what the manager spends on
//     them (memory, CPU, Podman calls).
//
// It prints a table and, last, one line of key=value figures, and writes
// them as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/policy"
)

type config struct {
	n, c, scale    int
	socket         string
	image          string
	host           string
	managerPID     int
	metricsURL     string
	settle         time.Duration
	resyncPeriod   time.Duration
	outputJSONPath string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.n, "n", 200, "containers (and AgentRuns) to launch")
	flag.IntVar(&cfg.c, "c", 8, "concurrency: raw launches at once, and the host's --max-concurrent-runs")
	flag.IntVar(&cfg.scale, "scale", 10000, "finished AgentRuns to create for the scale step")
	flag.StringVar(&cfg.socket, "podman-socket", "", "Podman API socket (hack/bench.sh passes AGENTRUN_PODMAN_SOCKET)")
	flag.StringVar(&cfg.image, "image", "localhost/agentrun-test:latest", "image of the short containers")
	flag.StringVar(&cfg.host, "host", "bench", "host name of the stack's manager")
	flag.IntVar(&cfg.managerPID, "manager-pid", 0, "PID of the stack's manager, for its memory and CPU")
	flag.StringVar(&cfg.metricsURL, "metrics-url", "", "the manager's /metrics URL, for its Podman call counts")
	flag.DurationVar(&cfg.settle, "settle", 20*time.Second, "how long the manager may settle after the scale objects are created")
	flag.DurationVar(&cfg.resyncPeriod, "resync-period", 10*time.Second, "the manager's --resync-period: CPU and Podman calls are measured over one")
	flag.StringVar(&cfg.outputJSONPath, "json", ".local/bench.json", "where to write the figures as JSON")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	ctx := context.Background()
	conn, err := bindings.NewConnection(ctx, "unix://"+cfg.socket)
	if err != nil {
		return fmt.Errorf("connecting to Podman: %w", err)
	}
	k8s, err := kubeClient()
	if err != nil {
		return err
	}
	res := results{}

	step("raw Podman: %d containers, %d at a time", cfg.n, cfg.c)
	raw, err := rawBaseline(conn, cfg)
	if err != nil {
		return err
	}
	res.raw = raw

	step("agentrun: %d AgentRuns on host %q with --max-concurrent-runs=%d", cfg.n, cfg.host, cfg.c)
	through, err := throughAgentrun(ctx, k8s, cfg)
	if err != nil {
		return err
	}
	res.agentrun = through

	step("scale: %d finished AgentRuns", cfg.scale)
	sc, err := scale(ctx, k8s, cfg)
	if err != nil {
		return err
	}
	res.scale = sc

	return report(res, cfg)
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
}

func rawBaseline(conn context.Context, cfg config) (rawResult, error) {
	var (
		mu       sync.Mutex
		launches []time.Duration
		firstErr error
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				d, err := rawOne(conn, cfg.image, fmt.Sprintf("agentrun-bench-raw-%d-%d", start.Unix(), i))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				launches = append(launches, d)
				mu.Unlock()
			}
		}()
	}
	for i := range cfg.n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return rawResult{launch: launches, wall: time.Since(start)}, firstErr
}

// rawOne is what a careful user of the bindings does for one short
// container: create, start, wait for it to exit, remove it.
func rawOne(conn context.Context, image, name string) (time.Duration, error) {
	sg := specgen.NewSpecGenerator(image, false)
	sg.Name = name
	sg.Command = []string{"true"}
	// The same container agentrun launches with its default policy: an init
	// process, no-new-privileges, a small capability set and limits, so the
	// comparison measures the controller, not the hardening.
	yes := true
	sg.Init, sg.NoNewPrivileges = &yes, &yes
	sg.CapDrop, sg.CapAdd = []string{"ALL"}, policy.DefaultCapabilities
	memory, quota, period := int64(512<<20), int64(100_000), uint64(100_000)
	sg.ResourceLimits = &spec.LinuxResources{
		Memory: &spec.LinuxMemory{Limit: &memory},
		CPU:    &spec.LinuxCPU{Quota: &quota, Period: &period},
		Pids:   &spec.LinuxPids{Limit: 1024},
	}
	t0 := time.Now()
	resp, err := containers.CreateWithSpec(conn, sg, nil)
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	if err := containers.Start(conn, resp.ID, nil); err != nil {
		return 0, fmt.Errorf("start: %w", err)
	}
	launched := time.Since(t0)
	if _, err := containers.Wait(conn, resp.ID, new(containers.WaitOptions).WithCondition([]define.ContainerStatus{define.ContainerStateExited, define.ContainerStateStopped})); err != nil {
		return 0, fmt.Errorf("wait: %w", err)
	}
	if _, err := containers.Remove(conn, resp.ID, new(containers.RemoveOptions).WithForce(true)); err != nil {
		return 0, fmt.Errorf("remove: %w", err)
	}
	return launched, nil
}

// throughResult is what running the same containers as AgentRuns took.
type throughResult struct {
	launchAPI     []time.Duration // creationTimestamp -> status.startTime (whole seconds)
	launchWatch   []time.Duration // create call -> Running seen by a watch
	statusLatency []time.Duration // Podman's died event -> Succeeded seen by a watch
	eventDelivery []time.Duration // Podman's died event -> received by a subscriber
	wall          time.Duration
}

const benchLabel = "agentrun.dev/bench"

func throughAgentrun(ctx context.Context, k8s client.WithWatch, cfg config) (throughResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	tag := fmt.Sprintf("run-%d", time.Now().Unix())
	defer cleanup(k8s, tag)

	var res throughResult
	died := diedEvents(ctx, cfg.socket, cfg.host, "bench-"+tag+"-", &res.eventDelivery)
	w, err := k8s.Watch(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag})
	if err != nil {
		return throughResult{}, err
	}
	defer w.Stop()

	created := map[string]time.Time{}
	start := time.Now()
	for i := range cfg.n {
		run := &agentsv1alpha1.AgentRun{}
		run.Name, run.Namespace = fmt.Sprintf("bench-%s-%d", tag, i), "default"
		run.Labels = map[string]string{benchLabel: tag}
		run.Spec = agentsv1alpha1.AgentRunSpec{Prompt: "bench", HostName: cfg.host, Command: []string{"true"}}
		t := time.Now()
		if err := k8s.Create(ctx, run); err != nil {
			return throughResult{}, fmt.Errorf("creating %s: %w", run.Name, err)
		}
		created[run.Name] = t
	}

	running, done := map[string]time.Time{}, map[string]time.Time{}
	var last time.Time
	for len(done) < cfg.n {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("only %d of %d runs succeeded in time", len(done), cfg.n)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return res, fmt.Errorf("the watch ended after %d of %d runs", len(done), cfg.n)
			}
			run, ok := ev.Object.(*agentsv1alpha1.AgentRun)
			if !ok {
				continue
			}
			now := time.Now()
			if _, seen := running[run.Name]; !seen && run.Status.StartTime != nil {
				running[run.Name] = now
				res.launchWatch = append(res.launchWatch, now.Sub(created[run.Name]))
				res.launchAPI = append(res.launchAPI, run.Status.StartTime.Sub(run.CreationTimestamp.Time))
			}
			switch run.Status.Phase {
			case agentsv1alpha1.PhaseSucceeded:
				if _, seen := done[run.Name]; !seen {
					done[run.Name], last = now, now
				}
			case agentsv1alpha1.PhaseFailed, agentsv1alpha1.PhaseCancelled:
				return res, fmt.Errorf("run %s ended %s: %s", run.Name, run.Status.Phase, run.Status.Message)
			}
		}
	}
	res.wall = last.Sub(start)
	if cfg.metricsURL != "" {
		if calls, err := podmanCallLatencies(cfg.metricsURL); err == nil {
			step("agentrun: mean Podman call latency by operation: %s", calls)
		}
	}
	exits := died()
	for name, seen := range done {
		if t, ok := exits[name]; ok {
			res.statusLatency = append(res.statusLatency, seen.Sub(t))
		}
	}
	return res, nil
}

// diedEvents follows Podman's died events for the host's containers; the
// returned function gives each run's exit time, by AgentRun name. It also
// records, in delivery, how long each event took to reach a subscriber:
// Podman's own share of the status latency.
func diedEvents(ctx context.Context, socket, host, prefix string, delivery *[]time.Duration) func() map[string]time.Time {
	events, _ := podman.New(socket).Events(ctx, map[string]string{agentsv1alpha1.LabelHost: host})
	var mu sync.Mutex
	exits := map[string]time.Time{}
	go func() {
		for e := range events {
			name := e.Labels[agentsv1alpha1.LabelName]
			if e.Action != "died" || !strings.HasPrefix(name, prefix) {
				continue // Podman 4.3 replays earlier events when a stream opens
			}
			mu.Lock()
			exits[name] = e.Time
			*delivery = append(*delivery, time.Since(e.Time))
			mu.Unlock()
		}
	}()
	return func() map[string]time.Time {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(exits)
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
	rssMiB              float64
	cpuSeconds          float64
	podmanCallsFinished float64
	createWall          time.Duration
}

func scale(ctx context.Context, k8s client.Client, cfg config) (scaleResult, error) {
	tag := fmt.Sprintf("scale-%d", time.Now().Unix())
	defer cleanup(k8s, tag)
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
		return scaleResult{}, err
	default:
	}
	res := scaleResult{objects: cfg.scale, createWall: time.Since(start)}
	step("scale: %d finished runs written in %s; letting the manager settle for %s", cfg.scale, res.createWall.Round(time.Second), cfg.settle)
	time.Sleep(cfg.settle)

	if cfg.managerPID == 0 || cfg.metricsURL == "" {
		return res, fmt.Errorf("-manager-pid and -metrics-url are needed to measure the manager")
	}
	calls0, err := podmanCalls(cfg.metricsURL)
	if err != nil {
		return res, err
	}
	cpu0, err := cpuSeconds(cfg.managerPID)
	if err != nil {
		return res, err
	}
	time.Sleep(cfg.resyncPeriod)
	cpu1, err := cpuSeconds(cfg.managerPID)
	if err != nil {
		return res, err
	}
	calls1, err := podmanCalls(cfg.metricsURL)
	if err != nil {
		return res, err
	}
	res.cpuSeconds, res.podmanCallsFinished = cpu1-cpu0, calls1-calls0
	res.rssMiB, err = rssMiB(cfg.managerPID)
	return res, err
}

// finishedRun writes one AgentRun as a real finished run looks. It is pinned
// to the host and created cancelled, so the manager never starts a container
// for it whichever status write lands first.
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
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("writing the status of %s: %w", run.Name, err)
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(run), run); err != nil {
			return err
		}
	}
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
	rawTput := float64(cfg.n) / r.raw.wall.Seconds()
	arTput := float64(cfg.n) / r.agentrun.wall.Seconds()
	row := func(name string, ds []time.Duration) {
		fmt.Printf("%-44s %9.1f %9.1f %9.1f\n", name, ms(percentile(ds, 50)), ms(percentile(ds, 95)), ms(percentile(ds, 99)))
	}
	fmt.Printf("\nN=%d C=%d on host %q (latencies in ms)\n", cfg.n, cfg.c, cfg.host)
	fmt.Printf("%-44s %9s %9s %9s\n", "latency", "p50", "p95", "p99")
	row("raw: create+start (bindings)", r.raw.launch)
	row("agentrun: create call -> Running (watch)", r.agentrun.launchWatch)
	row("agentrun: creationTimestamp -> startTime (s)", r.agentrun.launchAPI)
	row("agentrun: died event -> Succeeded (watch)", r.agentrun.statusLatency)
	row("  of which Podman's event delivery", r.agentrun.eventDelivery)
	fmt.Printf("\n%-44s %9.2f s  (%.1f containers/s)\n", "raw wall time", r.raw.wall.Seconds(), rawTput)
	fmt.Printf("%-44s %9.2f s  (%.1f runs/s)\n", "agentrun wall time", r.agentrun.wall.Seconds(), arTput)
	fmt.Printf("%-44s %9.2f\n", "throughput ratio (agentrun / raw)", arTput/rawTput)
	fmt.Printf("\nscale: %d finished runs written in %s\n", r.scale.objects, r.scale.createWall.Round(time.Second))
	fmt.Printf("%-44s %9.1f MiB\n", "manager resident memory", r.scale.rssMiB)
	fmt.Printf("%-44s %9.2f s over %s\n", "manager CPU", r.scale.cpuSeconds, cfg.resyncPeriod)
	fmt.Printf("%-44s %9.0f over %s\n", "Podman API calls for finished runs", r.scale.podmanCallsFinished, cfg.resyncPeriod)

	figures := map[string]float64{
		"throughput_ratio":      round(arTput/rawTput, 3),
		"launch_p50_ms":         round(ms(percentile(r.agentrun.launchWatch, 50)), 1),
		"launch_p99_ms":         round(ms(percentile(r.agentrun.launchWatch, 99)), 1),
		"raw_launch_p50_ms":     round(ms(percentile(r.raw.launch, 50)), 1),
		"status_p50_ms":         round(ms(percentile(r.agentrun.statusLatency, 50)), 1),
		"status_p99_ms":         round(ms(percentile(r.agentrun.statusLatency, 99)), 1),
		"rss_mib_10k":           round(r.scale.rssMiB, 1),
		"podman_calls_finished": r.scale.podmanCallsFinished,
	}
	keys := []string{"throughput_ratio", "launch_p50_ms", "launch_p99_ms", "raw_launch_p50_ms", "status_p50_ms", "status_p99_ms", "rss_mib_10k", "podman_calls_finished"}
	var line []string
	for _, k := range keys {
		line = append(line, fmt.Sprintf("%s=%g", k, figures[k]))
	}
	if err := os.MkdirAll(filepath.Dir(cfg.outputJSONPath), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(map[string]any{"n": cfg.n, "c": cfg.c, "scale": cfg.scale, "figures": figures}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.outputJSONPath, data, 0o644); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(strings.Join(line, " "))
	return nil
}

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(f*p+0.5)) / p
}

type results struct {
	raw      rawResult
	agentrun throughResult
	scale    scaleResult
}
