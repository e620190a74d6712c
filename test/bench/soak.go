package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/secrets"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	rt "github.com/agentrun/agentrun/internal/containers"
)

// The soak (make soak): -soak-runs short runs through one host, -c at a
// time, each with live output (the host's progressPeriod, which
// hack/soak.sh shortens below the runs' length), a completion callback to a
// receiver in this process that checks each signature, and a TTL of 0, so
// the host deletes each run once its callback is delivered. The host is a
// manager of its own in --mode=host (<host>-soak, from the stack's
// configuration, on the stack's Podman), as a real host runs: the stack's
// manager, which also runs the fleet side and so caches every run's record,
// serves only the webhook and the fleet here. At every -soak-every runs the
// soak stops feeding, waits for every run so far to be called back and
// deleted, and reads what the host's manager holds: its resident memory, its
// heap in use after a forced collection (the profile kept in -soak-profiles),
// its goroutines and open files, and what is left behind (containers and
// secrets in Podman, session directories). Growth is from the first of those
// readings to the last: the first comes after the caches, pools and workers
// have warmed. -soak-idle more reads it once more after that long without
// runs: past the events recorder's memory of what it sent (6 to 12 minutes).

// soakConfig shapes the soak.
type soakConfig struct {
	runs, every int
	// runSeconds is how long each run's fake agent works, after its first
	// line (what the live output shows).
	runSeconds int
	// idle is how long the soak waits after its last runs for one more
	// reading (0: none).
	idle time.Duration
	// memProfileRate, when not 0, is the host manager's
	// runtime.MemProfileRate (GODEBUG=memprofilerate), for heap profiles
	// fine enough to weigh small holders.
	memProfileRate int
	profilesDir    string
	jsonPath       string
}

// soakReading is what the manager held at one checkpoint, and what was
// left behind.
type soakReading struct {
	Runs           int     `json:"runs"`
	RSSMiB         float64 `json:"rss_mib"`
	HeapInuseMiB   float64 `json:"heap_inuse_after_gc_mib"`
	Goroutines     int     `json:"goroutines"`
	OpenFDs        int     `json:"open_fds"`
	ContainersLeft int     `json:"containers_left"`
	SecretsLeft    int     `json:"secrets_left"`
	SessionDirs    int     `json:"session_dirs_left"`
}

func (r soakReading) String() string {
	return fmt.Sprintf("runs %d: rss %.1f MiB, heap in use after GC %.1f MiB, goroutines %d, open fds %d, containers left %d, secrets left %d, session dirs left %d",
		r.Runs, r.RSSMiB, r.HeapInuseMiB, r.Goroutines, r.OpenFDs, r.ContainersLeft, r.SecretsLeft, r.SessionDirs)
}

// soakSummary is the soak's verdict: growth from the first reading to the
// last, what the last left behind, and how the runs ended.
type soakSummary struct {
	Readings []soakReading `json:"readings"`
	// Idle is the reading after -soak-idle without runs, if any, and its
	// growth from the first reading: once the events recorder has let go
	// of what it sent (it keeps each event 6 to 12 minutes, so its share
	// of a reading follows the rate of runs just before it), what is left
	// of the growth is what the runs left behind.
	Idle              *soakReading `json:"idle,omitempty"`
	IdleSeconds       float64      `json:"idle_s,omitempty"`
	IdleRSSGrowthMiB  float64      `json:"idle_rss_growth_mib,omitempty"`
	IdleHeapGrowthMiB float64      `json:"idle_heap_growth_mib,omitempty"`
	RSSGrowthMiB      float64      `json:"rss_growth_mib"`
	HeapGrowthMiB     float64      `json:"heap_growth_mib"`
	GoroutineGrowth   int          `json:"goroutine_growth"`
	FDGrowth          int          `json:"fd_growth"`
	ContainersLeft    int          `json:"containers_left"`
	SecretsLeft       int          `json:"secrets_left"`
	SessionDirsLeft   int          `json:"session_dirs_left"`
	Failed            int          `json:"failed"`
	Callbacks         int          `json:"callbacks"`
	BadSignatures     int          `json:"bad_signatures"`
	LiveOutputRuns    int          `json:"live_output_runs"`
	WallSeconds       float64      `json:"wall_s"`
	MachineLoadAvg1m  float64      `json:"load_avg_1m"`
}

// summarize computes the growth between the first and the last reading.
func summarize(readings []soakReading) soakSummary {
	s := soakSummary{Readings: readings}
	if len(readings) == 0 {
		return s
	}
	first, last := readings[0], readings[len(readings)-1]
	s.RSSGrowthMiB = round(last.RSSMiB-first.RSSMiB, 1)
	s.HeapGrowthMiB = round(last.HeapInuseMiB-first.HeapInuseMiB, 1)
	s.GoroutineGrowth = last.Goroutines - first.Goroutines
	s.FDGrowth = last.OpenFDs - first.OpenFDs
	s.ContainersLeft, s.SecretsLeft, s.SessionDirsLeft = last.ContainersLeft, last.SecretsLeft, last.SessionDirs
	return s
}

// withIdle adds the reading taken after idle without runs.
func (s *soakSummary) withIdle(r soakReading, idle time.Duration) {
	s.Idle, s.IdleSeconds = &r, idle.Seconds()
	if len(s.Readings) > 0 {
		first := s.Readings[0]
		s.IdleRSSGrowthMiB = round(r.RSSMiB-first.RSSMiB, 1)
		s.IdleHeapGrowthMiB = round(r.HeapInuseMiB-first.HeapInuseMiB, 1)
	}
}

// Goals of issue 31: goroutines and open files flat, resident memory within
// 10 MiB, nothing left behind, every run succeeded and called back.
const (
	soakMaxCountGrowth = 5
	soakMaxRSSGrowth   = 10.0
)

// missed lists the goals the soak did not meet.
func (s soakSummary) missed(runs int) []string {
	var out []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	check(s.GoroutineGrowth <= soakMaxCountGrowth, "goroutine_growth %d > %d", s.GoroutineGrowth, soakMaxCountGrowth)
	check(s.FDGrowth <= soakMaxCountGrowth, "fd_growth %d > %d", s.FDGrowth, soakMaxCountGrowth)
	check(s.RSSGrowthMiB <= soakMaxRSSGrowth, "rss_growth_mib %.1f > %.0f", s.RSSGrowthMiB, soakMaxRSSGrowth)
	check(s.ContainersLeft == 0, "containers_left %d", s.ContainersLeft)
	check(s.SecretsLeft == 0, "secrets_left %d", s.SecretsLeft)
	check(s.SessionDirsLeft == 0, "session_dirs_left %d", s.SessionDirsLeft)
	check(s.Failed == 0, "failed %d", s.Failed)
	check(s.Callbacks == runs, "callbacks %d of %d runs", s.Callbacks, runs)
	check(s.BadSignatures == 0, "bad_signatures %d", s.BadSignatures)
	return out
}

// keyValues is the soak's last line.
func (s soakSummary) keyValues() string {
	idle := ""
	if s.Idle != nil {
		idle = fmt.Sprintf(" idle_rss_growth_mib=%.1f idle_heap_growth_mib=%.1f", s.IdleRSSGrowthMiB, s.IdleHeapGrowthMiB)
	}
	return fmt.Sprintf("rss_growth_mib=%.1f heap_growth_mib=%.1f goroutine_growth=%d fd_growth=%d containers_left=%d secrets_left=%d session_dirs_left=%d failed=%d callbacks=%d bad_signatures=%d live_output_runs=%d",
		s.RSSGrowthMiB, s.HeapGrowthMiB, s.GoroutineGrowth, s.FDGrowth, s.ContainersLeft, s.SecretsLeft, s.SessionDirsLeft,
		s.Failed, s.Callbacks, s.BadSignatures, s.LiveOutputRuns) + idle
}

// gauge is one sample's value in Prometheus' text format, by its full name
// (labels included, if it has any).
func gauge(body, name string) (float64, error) {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %q: %w", line, err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("no %s in the metrics", name)
}

func soakStep(ctx context.Context, conn context.Context, k8s client.Client, cfg config) error {
	sc := cfg.soak
	tag := fmt.Sprintf("soak-%d", time.Now().Unix())
	defer cleanup(k8s, tag)
	key, removeKey, err := soakKey(conn, tag)
	if err != nil {
		return err
	}
	defer removeKey()
	secretsBefore, err := secrets.List(conn, nil)
	if err != nil {
		return fmt.Errorf("listing Podman secrets: %w", err)
	}
	recv, err := startReceiver(key.value)
	if err != nil {
		return err
	}
	defer recv.close()
	var env []string
	if sc.memProfileRate != 0 {
		env = append(env, fmt.Sprintf("GODEBUG=memprofilerate=%d", sc.memProfileRate))
	}
	host := &soakHost{name: cfg.host + "-soak", secretsBefore: len(secretsBefore), profilesDir: sc.profilesDir}
	if host.manager, err = startSide(ctx, k8s, cfg, "host", host.name, true, env...); err != nil {
		return err
	}
	defer host.manager.stop()
	step("soak: the host is %s, a --mode=host manager of its own (pid %d, log %s)", host.name, host.manager.pid, filepath.Join(host.manager.dir, "manager.log"))
	live := watchLiveOutput(ctx, k8s, tag)

	spec := agentsv1alpha1.AgentRunSpec{
		Prompt:                  "soak",
		HostName:                host.name,
		TTLSecondsAfterFinished: ptr.To[int32](0),
		Notify:                  &agentsv1alpha1.NotifySpec{URL: recv.url, SecretName: agentsv1alpha1.SecretName(key.name)},
		Podman:                  agentsv1alpha1.PodmanSpec{Env: map[string]agentsv1alpha1.EnvValue{"FAKE_AGENT_SLEEP": agentsv1alpha1.EnvValue(strconv.Itoa(sc.runSeconds))}},
	}
	var readings []soakReading
	start := time.Now()
	for created := 0; created < sc.runs; {
		block := min(sc.every, sc.runs-created)
		if err := feed(ctx, k8s, tag, spec, created, block, 2*cfg.c, recv); err != nil {
			return err
		}
		created += block
		if err := drained(ctx, k8s, tag, created, recv); err != nil {
			return err
		}
		r, err := host.read(conn, fmt.Sprint(created))
		if err != nil {
			return err
		}
		r.Runs = created
		step("soak: %s", r)
		readings = append(readings, r)
	}
	s := summarize(readings)
	s.WallSeconds = round(time.Since(start).Seconds(), 0)
	s.Callbacks, s.Failed, s.BadSignatures = recv.counts()
	s.LiveOutputRuns = live()
	s.MachineLoadAvg1m = loadAverage()
	if sc.idle > 0 {
		step("soak: idle for %s, then one more reading", sc.idle)
		time.Sleep(sc.idle)
		r, err := host.read(conn, "idle")
		if err != nil {
			return err
		}
		r.Runs = sc.runs
		step("soak: after %s idle: %s", sc.idle, r)
		s.withIdle(r, sc.idle)
	}
	if err := writeJSON(sc.jsonPath, s); err != nil {
		return err
	}
	missed := s.missed(sc.runs)
	if len(missed) == 0 {
		step("soak: every goal met in %s", time.Since(start).Round(time.Second))
	} else {
		step("soak: goals missed: %s", strings.Join(missed, "; "))
	}
	fmt.Println(s.keyValues())
	if len(missed) > 0 {
		return errors.New("the soak missed its goals")
	}
	return nil
}

// soakSecret is the callbacks' signing key, a Podman secret on the host.
type soakSecret struct{ name, value string }

func soakKey(conn context.Context, tag string) (soakSecret, func(), error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return soakSecret{}, nil, err
	}
	k := soakSecret{name: "agentrun-" + tag + "-key", value: hex.EncodeToString(b)}
	if _, err := secrets.Create(conn, strings.NewReader(k.value), new(secrets.CreateOptions).WithName(k.name)); err != nil {
		return soakSecret{}, nil, fmt.Errorf("creating the callbacks' key: %w", err)
	}
	return k, func() { _ = secrets.Remove(conn, k.name) }, nil
}

// feed creates n runs, numbered from first, holding at most inFlight
// created and not yet called back.
func feed(ctx context.Context, k8s client.Client, tag string, spec agentsv1alpha1.AgentRunSpec, first, n, inFlight int, recv *receiver) error {
	for i := first; i < first+n; i++ {
		for i-recv.delivered() >= inFlight {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-recv.wake:
			case <-time.After(time.Second):
			}
		}
		run := &agentsv1alpha1.AgentRun{}
		run.Name, run.Namespace = fmt.Sprintf("bench-%s-%d", tag, i), "default"
		run.Labels = map[string]string{benchLabel: tag}
		run.Spec = *spec.DeepCopy()
		if err := k8s.Create(ctx, run); err != nil {
			return fmt.Errorf("creating %s: %w", run.Name, err)
		}
	}
	return nil
}

// soakDrainTimeout bounds the wait for a block's last runs to be called back
// and deleted.
const soakDrainTimeout = 10 * time.Minute

// drained waits until created runs were called back and none of them is
// left in the API (their TTL of 0 deletes them once called back), and then
// a little longer, for the host's last cleanups.
func drained(ctx context.Context, k8s client.Client, tag string, created int, recv *receiver) error {
	deadline := time.Now().Add(soakDrainTimeout)
	for {
		list := &agentsv1alpha1.AgentRunList{}
		if err := k8s.List(ctx, list, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag}); err != nil {
			return err
		}
		if recv.delivered() >= created && len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d runs called back and %d still in the API after %s", recv.delivered(), created, len(list.Items), soakDrainTimeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	return nil
}

// soakHost is the soak's host: its manager and what it had before.
type soakHost struct {
	name          string
	manager       *sideManager
	secretsBefore int
	profilesDir   string
}

// read reads the host's manager and what is left behind; the heap profile
// it takes (after a collection) is kept in profilesDir as heap-<label>.pb.gz.
func (h *soakHost) read(conn context.Context, label string) (soakReading, error) {
	var r soakReading
	// ?gc=1 collects before the profile is written: the heap's figures
	// read next are those of live objects.
	profile, err := scrape(h.manager.pprofURL + "heap?gc=1")
	if err != nil {
		return r, err
	}
	if h.profilesDir != "" {
		if err := os.MkdirAll(h.profilesDir, 0o755); err != nil {
			return r, err
		}
		if err := os.WriteFile(filepath.Join(h.profilesDir, "heap-"+label+".pb.gz"), []byte(profile), 0o644); err != nil {
			return r, err
		}
	}
	mem, err := memoryOf(h.manager.pid, h.manager.metricsURL)
	if err != nil {
		return r, err
	}
	r.RSSMiB, r.HeapInuseMiB = round(mem.RSSMiB, 1), round(mem.HeapInuseMiB, 1)
	body, err := scrape(h.manager.metricsURL)
	if err != nil {
		return r, err
	}
	goroutines, err := gauge(body, "go_goroutines")
	if err != nil {
		return r, err
	}
	fds, err := gauge(body, "process_open_fds")
	if err != nil {
		return r, err
	}
	r.Goroutines, r.OpenFDs = int(goroutines), int(fds)
	for _, label := range []string{agentsv1alpha1.LabelHost + "=" + h.name, rt.LabelSecretRead} {
		left, err := containers.List(conn, new(containers.ListOptions).WithAll(true).WithFilters(map[string][]string{"label": {label}}))
		if err != nil {
			return r, fmt.Errorf("listing containers: %w", err)
		}
		r.ContainersLeft += len(left)
	}
	all, err := secrets.List(conn, nil)
	if err != nil {
		return r, fmt.Errorf("listing Podman secrets: %w", err)
	}
	r.SecretsLeft = len(all) - h.secretsBefore
	dirs, err := os.ReadDir(filepath.Join(h.manager.dir, "sessions"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return r, err
	}
	r.SessionDirs = len(dirs)
	return r, nil
}

// watchLiveOutput polls the soak's runs and counts those seen running with
// output in status: the live output at work. The count is read once the
// soak ends.
func watchLiveOutput(ctx context.Context, k8s client.Client, tag string) func() int {
	ctx, cancel := context.WithCancel(ctx)
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			list := &agentsv1alpha1.AgentRunList{}
			if err := k8s.List(ctx, list, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag}); err == nil {
				for _, run := range list.Items {
					if run.Status.Phase == agentsv1alpha1.PhaseRunning && run.Status.Output != "" {
						seen[run.Name] = true
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return func() int {
		cancel()
		<-done
		return len(seen)
	}
}

// receiver takes the runs' callbacks and checks their signatures as the
// documentation tells a receiver to.
type receiver struct {
	url    string
	key    string
	server *http.Server
	wake   chan struct{}

	mu                  sync.Mutex
	byRun               map[string]bool
	failed, badSignings int
}

func startReceiver(key string) (*receiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{url: "http://" + l.Addr().String() + "/done", key: key, wake: make(chan struct{}, 1), byRun: map[string]bool{}}
	r.server = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.server.Serve(l) }()
	return r, nil
}

func (r *receiver) close() { _ = r.server.Close() }

// callback is what the receiver reads of a callback's body.
type callback struct {
	Name   string `json:"name"`
	Status struct {
		Phase agentsv1alpha1.AgentRunPhase `json:"phase"`
	} `json:"status"`
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var cb callback
	valid := validSignature(r.key, req.Header.Get("X-Agentrun-Timestamp"), req.Header.Get("X-Agentrun-Signature"), body, time.Now())
	if valid {
		valid = json.Unmarshal(body, &cb) == nil && cb.Name != ""
	}
	r.mu.Lock()
	switch {
	case !valid:
		r.badSignings++
	case !r.byRun[cb.Name]:
		r.byRun[cb.Name] = true
		if cb.Status.Phase != agentsv1alpha1.PhaseSucceeded {
			r.failed++
			step("soak: run %s ended %s", cb.Name, cb.Status.Phase)
		}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	if !valid {
		http.Error(w, "bad signature", http.StatusUnauthorized)
	}
}

// validSignature checks a callback's signature (HMAC-SHA256 of the
// timestamp, ".", and the body) and that its timestamp is at most five
// minutes from now.
func validSignature(key, timestamp, signature string, body []byte, now time.Time) bool {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || now.Sub(time.Unix(ts, 0)).Abs() > 5*time.Minute {
		return false
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(timestamp + "."))
	mac.Write(body)
	return hmac.Equal([]byte(signature), []byte("sha256="+hex.EncodeToString(mac.Sum(nil))))
}

// delivered is how many runs were called back.
func (r *receiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byRun)
}

func (r *receiver) counts() (callbacks, failed, badSignatures int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byRun), r.failed, r.badSignings
}

// loadAverage is the machine's load over the last minute, to say how busy
// it was.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	return v
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
