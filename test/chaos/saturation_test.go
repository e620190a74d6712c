package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// Issue 31 §2: a host starved of CPU never kills the runs it still owns. In
// the 200-run progress measurement on a saturated machine one run ended
// Failed with exit code 137, for a reason not recorded.

var _ = Describe("A starved host", Ordered, ContinueOnFailure, func() {
	It("kills none of its own runs when its manager is SIGSTOPped, and fences those the fleet moved meanwhile", func(ctx SpecContext) {
		s := begin("sigstop", 3*time.Minute)
		host := f.Host(1)
		// Longer than the leader lease's renew deadline (10 s): woken, the
		// manager has lost its leadership and exits, and its successor
		// takes over the host's running runs. Past the grace period (make
		// chaos): the fleet declares the host lost and moves its runs
		// meanwhile; woken, the host fences their old containers.
		pauses := scale([]time.Duration{20 * time.Second}, []time.Duration{20 * time.Second, gracePeriod + 10*time.Second})
		for i, pause := range pauses {
			// Each pause with runs of its own, running through it; a
			// pause below the grace period also holds runs pinned to the
			// host, which nothing else may take.
			var runs []*agentsv1alpha1.AgentRun
			secs := int(pause/time.Second) + 30
			for range scale(3, 12) {
				mutate := (func(*agentsv1alpha1.AgentRun))(nil)
				if pause < gracePeriod && len(runs)%2 == 0 {
					mutate = pinned(host)
				}
				runs = append(runs, sleeper(fmt.Sprintf("stop%d", i+1), secs, secs+15, mutate))
			}
			if pause >= gracePeriod {
				// The fleet fails runs pinned to a lost host: the earlier
				// pause's end first.
				Expect(waitUntil(ctx, 5*time.Minute, "the runs pinned to "+host+" to finish", func() bool { return s.pinnedUnfinished(ctx, host) == 0 })).To(Succeed())
			}
			Expect(s.createAll(ctx, runs)).To(Succeed())
			for _, r := range runs {
				s.wantAttempts[r.Name] = 1
			}
			Expect(s.pause(ctx, host, pause)).To(Succeed())
		}
		check(s.finish(ctx))
	}, SpecTimeout(20*time.Minute))

	It("fails no run of 200 on one host while the machine is loaded", func(ctx SpecContext) {
		saturationScenario(ctx)
	}, SpecTimeout(90*time.Minute))
})

// pause SIGSTOPs the host's manager, once a run of the scenario runs there,
// for the given time, then SIGCONTs it and waits for the host's heartbeat.
// It notes which runs the host held and which of them it still holds at the
// same attempt when it wakes.
func (s *scenario) pause(ctx context.Context, host string, pause time.Duration) error {
	if err := waitUntil(ctx, 2*time.Minute, "a run running on "+host, func() bool { return s.runningOn(ctx, host) > 0 }); err != nil {
		return err
	}
	held := s.attemptsOn(ctx, host)
	pids := managerPIDs()
	pid, err := f.ManagerPID(host)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("stopping %s's manager: %w", host, err)
	}
	woken := false
	DeferCleanup(func() {
		if !woken {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	sleep(ctx, pause)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("waking %s's manager: %w", host, err)
	}
	woken = true
	cont := time.Now()
	now := s.attemptsOn(ctx, host)
	kept := 0
	for name, attempt := range held {
		if now[name] == attempt {
			kept++
		}
	}
	if err := waitUntil(ctx, 2*time.Minute, host+"'s heartbeat after it woke", func() bool { return heartbeatSince(ctx, host, cont) }); err != nil {
		return err
	}
	s.note("%s's manager stopped for %s while it ran %d run(s); woken, it still held %d at the same attempt (the fleet moved %d); heartbeat again in %s",
		host, pause, len(held), kept, len(held)-kept, since(cont))
	return s.upAgain(pids)
}

// attemptsOn are the attempts of the scenario's unfinished runs the host
// holds, by name.
func (s *scenario) attemptsOn(ctx context.Context, host string) map[string]int32 {
	runs, _ := s.list(ctx)
	out := map[string]int32{}
	for _, r := range runs {
		if r.Status.Host == host && !r.Status.Phase.IsFinished() {
			out[r.Name] = r.Status.Attempts
		}
	}
	return out
}

// pinnedUnfinished is how many of the scenario's runs pinned to the host
// have not finished (-1 while the API server does not answer).
func (s *scenario) pinnedUnfinished(ctx context.Context, host string) int {
	runs, err := s.list(ctx)
	if err != nil {
		return -1
	}
	n := 0
	for _, r := range runs {
		if r.Spec.HostName == host && !r.Status.Phase.IsFinished() {
			n++
		}
	}
	return n
}

// saturationScenario runs many runs on one host at once while CPU hogs
// load the machine, as the 200-run progress measurement did (load near
// 300 on 2 cores). Each run waits until every one of them runs (a file in
// flagsDir says so), so that all overlap however slowly Podman starts them.
func saturationScenario(ctx context.Context) {
	// The short form fits the hosts' capacity (4), so make test restarts
	// no manager for it.
	n, hogs := scale(4, 200), scale(2, 4)
	// Podman took up to about 15 minutes to start the last of 200 under
	// that load: the runs may wait as long for a start.
	s := begin("saturation", 30*time.Minute)
	host := f.Host(1)
	release := filepath.Join(flagsDir, "release-saturation")
	DeferCleanup(func() { _ = os.Remove(release) })
	widen(ctx, host, n)
	stopHogs := startHogs(hogs)
	DeferCleanup(stopHogs)
	var runs []*agentsv1alpha1.AgentRun
	for range n {
		runs = append(runs, fleet.NewRun("sat", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Timeout = &metav1.Duration{Duration: 45 * time.Minute}
			r.Spec.Podman.Volumes = []string{flagsDir + ":/flags"}
			r.Spec.Command = []string{"sh", "-c", "until [ -e /flags/release-saturation ]; do sleep 2; done; echo done"}
		}))
	}
	started := time.Now()
	s.goFn("creating the runs", func() error { return s.createAll(ctx, runs) })
	s.goFn("the release", func() error {
		peak := 0
		err := waitUntil(ctx, 25*time.Minute, fmt.Sprintf("all %d runs running at once", n), func() bool {
			peak = max(peak, s.runningOn(ctx, host))
			return peak == n
		})
		s.note("%d runs on %s with %d CPU hogs: %d running at once after %s (load average %s)", n, host, hogs, peak, since(started), loadAverage())
		if werr := os.WriteFile(release, nil, 0o644); werr != nil {
			return werr
		}
		return err
	})
	r := s.finish(ctx)
	stopHogs()
	check(r)
}

// widen gives the host room for n runs at once, when it has less: its
// manager restarts with host.runs.maxConcurrent n, and with the suite's
// setting again when the spec ends.
func widen(ctx context.Context, host string, n int) {
	GinkgoHelper()
	ph := &agentsv1alpha1.PodmanHost{}
	Expect(c.Get(ctx, client.ObjectKey{Name: host}, ph)).To(Succeed())
	if int(ph.Status.Capacity) >= n {
		return
	}
	opts := f.Options()
	cfg := opts.ManagerConfig.DeepCopy()
	cfg.Host.Runs.MaxConcurrent = ptr.To(int32(n))
	opts.ManagerConfig = cfg
	wide, err := fleet.New(opts)
	Expect(err).NotTo(HaveOccurred())
	restart := func(ctx context.Context, fl *fleet.Fleet, capacity int32) {
		killed := time.Now()
		Expect(fl.KillHost(host)).To(Succeed())
		Expect(fl.Up()).To(Succeed())
		Expect(waitUntil(ctx, 3*time.Minute, fmt.Sprintf("%s's capacity of %d", host, capacity), func() bool {
			return c.Get(ctx, client.ObjectKey{Name: host}, ph) == nil && ph.Status.Capacity == capacity && heartbeatSince(ctx, host, killed)
		})).To(Succeed())
	}
	before := ph.Status.Capacity
	restart(ctx, wide, int32(n))
	DeferCleanup(func(ctx SpecContext) { restart(ctx, f, before) })
}

// startHogs starts n processes that spin on a CPU each, and returns what
// stops them (at most once).
func startHogs(n int) func() {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		Expect(cmd.Start()).To(Succeed())
		cmds = append(cmds, cmd)
	}
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		for _, cmd := range cmds {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
}

// loadAverage is the machine's 1-minute load average, as /proc says.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(data))[0]
}
