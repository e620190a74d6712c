package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/test/fleet"
)

// sleeper is a run that sleeps a random whole number of seconds in [lo, hi)
// and succeeds.
func sleeper(prefix string, lo, hi int, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	secs := lo + rand.IntN(hi-lo)
	return fleet.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Command = []string{"sh", "-c", fmt.Sprintf("sleep %d; echo done", secs)}
		if mutate != nil {
			mutate(r)
		}
	})
}

// pinned pins a run to a host.
func pinned(host string) func(*agentsv1alpha1.AgentRun) {
	return func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = host }
}

// retrying is a run pinned to the host whose first attempt fails (exit 3)
// and whose second succeeds: the first leaves a file in flagsDir, mounted at
// /flags, which the second finds. backoffLimit 2.
func retrying(prefix, host string, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	return fleet.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
		r.Spec.HostName = host
		r.Spec.BackoffLimit = new(int32)
		*r.Spec.BackoffLimit = 2
		r.Spec.Podman.Volumes = []string{flagsDir + ":/flags"}
		r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"FLAG": agentsv1alpha1.EnvValue(r.Name)}
		r.Spec.Command = []string{"sh", "-c", `if [ -e "/flags/$FLAG" ]; then echo second attempt; else touch "/flags/$FLAG"; echo first attempt fails; exit 3; fi`}
		if mutate != nil {
			mutate(r)
		}
	})
}

// firstAttemptsFailed: the first attempt of each run left its file.
func firstAttemptsFailed(runs []*agentsv1alpha1.AgentRun) func() bool {
	return func() bool {
		for _, r := range runs {
			if _, err := os.Stat(filepath.Join(flagsDir, r.Name)); err != nil {
				return false
			}
		}
		return true
	}
}

var _ = Describe("Under faults, agentrun", Ordered, ContinueOnFailure, func() {
	It("runs every run once and keeps its result when the host managers are SIGKILLed at random points of the runs' lives", func(ctx SpecContext) {
		s := begin("manager-kills", 2*time.Minute)
		kills, perKill := scale(2, 10), 2 // 20 runs at full scale
		s.goFn("kills", func() error {
			for i := range kills {
				// Two new runs, then a kill a random moment later: of a
				// host holding a run, so that it lands at some point of
				// a run's life (claim, create, start, running, exit, status
				// write; finalizer: finished runs are deleted at once).
				for range perKill {
					if err := s.create(ctx, sleeper("kill", 1, 8, nil)); err != nil {
						return err
					}
				}
				sleep(ctx, between(0, 6*time.Second))
				host := s.busyHost(ctx)
				what := s.onHost(ctx, host)
				if err := f.KillHost(host); err != nil {
					return err
				}
				killed := time.Now()
				if err := f.Up(); err != nil {
					return err
				}
				up := since(killed)
				// The next kill waits until this one's successor leads (it
				// waits out its predecessor's leader lease first) and has
				// renewed the host's heartbeat: killing it again before
				// would only lengthen one outage, until the fleet declares
				// the host lost.
				if err := waitUntil(ctx, 2*time.Minute, host+"'s heartbeat after its restart", func() bool { return heartbeatSince(ctx, host, killed) }); err != nil {
					return err
				}
				s.note("kill %d/%d: %s's manager while it held %s; ready in %s, heartbeat again in %s", i+1, kills, host, what, up, since(killed))
			}
			return nil
		})
		check(s.finish(ctx))
	}, SpecTimeout(30*time.Minute))

	It("lets no connection past a run's egress proxy and opens no network when the host managers serving the proxies are SIGKILLed, and serves the running runs' proxies again after", func(ctx SpecContext) {
		if !full {
			Skip("make chaos only: each manager's restart takes about 30 s")
		}
		egressScenario(ctx)
	}, SpecTimeout(20*time.Minute))

	It("runs every run once when a host's Podman API service restarts mid-run", func(ctx SpecContext) {
		s := begin("podman-restart", 3*time.Minute)
		host := f.Host(1) // Podman 4: its service stops without its containers
		DeferCleanup(func() { _ = f.StartPodman(host) })
		var runs []*agentsv1alpha1.AgentRun
		for range scale(4, 20) {
			runs = append(runs, sleeper("podman", 2, 9, pinned(host)))
		}
		Expect(s.createAll(ctx, runs)).To(Succeed())
		s.goFn("Podman restarts", func() error {
			for i := range scale(1, 3) {
				if err := waitUntil(ctx, 2*time.Minute, "a run running on "+host, func() bool { return s.runningOn(ctx, host) > 0 }); err != nil {
					return err
				}
				sleep(ctx, between(0, 3*time.Second))
				what := s.onHost(ctx, host)
				if err := f.StopPodman(host); err != nil {
					return err
				}
				sleep(ctx, 5*time.Second)
				if err := f.StartPodman(host); err != nil {
					return err
				}
				s.note("restart %d: %s's Podman stopped for 5 s while it held %s", i+1, host, what)
			}
			return nil
		})
		check(s.finish(ctx))
	}, SpecTimeout(20*time.Minute))

	It("finishes every run and keeps its result when the kube-apiserver stops while runs start and finish", func(ctx SpecContext) {
		s := begin("apiserver-down", 3*time.Minute)
		outage := scale(15*time.Second, 30*time.Second)
		DeferCleanup(func() { _ = f.StartAPIServer() })
		var runs []*agentsv1alpha1.AgentRun
		for range scale(6, 20) {
			runs = append(runs, sleeper("apiserver", 3, 16, nil))
		}
		Expect(s.createAll(ctx, runs)).To(Succeed())
		s.goFn("the API server outage", func() error {
			if err := waitUntil(ctx, 2*time.Minute, "3 runs running", func() bool { return s.runningOn(ctx, "") >= 3 }); err != nil {
				return err
			}
			pids := managerPIDs()
			if err := f.StopAPIServer(); err != nil {
				return err
			}
			stopped := time.Now()
			sleep(ctx, outage)
			if err := f.StartAPIServer(); err != nil {
				return err
			}
			s.note("the kube-apiserver was down for %s (%d runs not finished before)", since(stopped), len(s.unfinished()))
			return s.upAgain(pids)
		})
		check(s.finish(ctx))
	}, SpecTimeout(20*time.Minute))

	It("runs every run once when a host's network is cut during runs and restored", func(ctx SpecContext) {
		s := begin("network-cut", 3*time.Minute)
		host := f.Host(2)
		// Longer than the grace period: the fleet declares the host lost and
		// fails its runs over; back, the host fences their old containers.
		cut := gracePeriod + 10*time.Second
		restored := false
		DeferCleanup(func() {
			if !restored {
				_ = f.Restore(host)
			}
		})
		var runs []*agentsv1alpha1.AgentRun
		for range scale(6, 20) {
			runs = append(runs, sleeper("cut", 15, 26, nil))
		}
		Expect(s.createAll(ctx, runs)).To(Succeed())
		s.goFn("the cut", func() error {
			if err := waitUntil(ctx, 2*time.Minute, "a run running on "+host, func() bool { return s.runningOn(ctx, host) > 0 }); err != nil {
				return err
			}
			what := s.onHost(ctx, host)
			pids := managerPIDs()
			if err := f.Cut(host); err != nil {
				return err
			}
			sleep(ctx, cut)
			if err := f.Restore(host); err != nil {
				return err
			}
			restored = true
			s.note("%s cut off for %s while it held %s", host, cut, what)
			return s.upAgain(pids)
		})
		check(s.finish(ctx))
	}, SpecTimeout(20*time.Minute))

	It("records every run's status while its labels and annotations are patched all the time", func(ctx SpecContext) {
		s := begin("metadata-patches", 3*time.Minute)
		var runs []*agentsv1alpha1.AgentRun
		for range scale(6, 20) {
			runs = append(runs, sleeper("patch", 3, 11, nil))
		}
		patches := make([]int, 4)
		for p := range patches {
			s.goFn("patcher", func() error {
				for i := 0; ; i++ {
					names := s.unfinished()
					if len(names) == 0 && s.created() == len(runs) {
						return nil
					}
					for _, name := range names {
						patch := fmt.Sprintf(`{"metadata":{"labels":{"chaos-patch":"p%d-%d"},"annotations":{"chaos.agentrun.dev/patch":"%d-%d"}}}`, p, i, p, i)
						run := &agentsv1alpha1.AgentRun{}
						run.Name, run.Namespace = name, "default"
						if c.Patch(ctx, run, client.RawPatch(types.MergePatchType, []byte(patch))) == nil {
							patches[p]++
						}
					}
					if !sleep(ctx, 20*time.Millisecond) {
						return nil
					}
				}
			})
		}
		Expect(s.createAll(ctx, runs)).To(Succeed())
		r := s.finish(ctx)
		total := 0
		for _, n := range patches {
			total += n
		}
		s.note("%d metadata patches (%.1f a second)", total, float64(total)/r.Seconds)
		r.Notes = s.notes
		check(r)
	}, SpecTimeout(20*time.Minute))

	It("retries a failed attempt to success when the retry meets a missing secret, a full host and a Podman outage", func(ctx SpecContext) {
		s := begin("retries", 3*time.Minute)
		per := scale(1, 3)
		secretHost, fullHost, outageHost := f.Host(1), f.Host(3), f.Host(2)
		secret := "chaos-retry-" + utilrand.String(5)
		createSecret := func() error {
			out, err := f.Podman(secretHost, "value", "secret", "create", secret, "-")
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}
		Expect(createSecret()).To(Succeed())
		DeferCleanup(func() {
			_, _ = f.Podman(secretHost, "", "secret", "rm", secret)
			_ = f.StartPodman(outageHost)
		})
		group := func(prefix, host string, mutate func(*agentsv1alpha1.AgentRun)) []*agentsv1alpha1.AgentRun {
			var runs []*agentsv1alpha1.AgentRun
			for range per {
				r := retrying(prefix, host, mutate)
				s.wantAttempts[r.Name] = 2
				runs = append(runs, r)
			}
			return runs
		}
		needSecret := group("retry-secret", secretHost, func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"TOKEN": agentsv1alpha1.SecretName(secret)}
		})
		onFull := group("retry-full", fullHost, nil)
		onOutage := group("retry-outage", outageHost, nil)
		Expect(s.createAll(ctx, append(append(append([]*agentsv1alpha1.AgentRun{}, needSecret...), onFull...), onOutage...))).To(Succeed())

		s.goFn("the missing secret", func() error {
			if err := waitUntil(ctx, 2*time.Minute, "the first attempts failing", firstAttemptsFailed(needSecret)); err != nil {
				return err
			}
			if out, err := f.Podman(secretHost, "", "secret", "rm", secret); err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			sleep(ctx, 20*time.Second)
			s.note("secret %s missing on %s for 20 s while %d run(s) retried", secret, secretHost, per)
			return createSecret()
		})
		s.goFn("the full host", func() error {
			if err := waitUntil(ctx, 2*time.Minute, "the first attempts failing", firstAttemptsFailed(onFull)); err != nil {
				return err
			}
			// Four runs take every slot (host.runs.maxConcurrent 4) before the
			// retries come due (host.runs.retryBackoff 10 s).
			for range 4 {
				if err := s.create(ctx, sleeper("blocker", 25, 26, pinned(fullHost))); err != nil {
					return err
				}
			}
			s.note("%s filled with 4 runs of 25 s while %d run(s) retried", fullHost, per)
			return nil
		})
		s.goFn("the Podman outage", func() error {
			if err := waitUntil(ctx, 2*time.Minute, "the first attempts failing", firstAttemptsFailed(onOutage)); err != nil {
				return err
			}
			if err := f.StopPodman(outageHost); err != nil {
				return err
			}
			sleep(ctx, 20*time.Second)
			s.note("%s's Podman stopped for 20 s while %d run(s) retried", outageHost, per)
			return f.StartPodman(outageHost)
		})
		check(s.finish(ctx))
	}, SpecTimeout(20*time.Minute))

	It("runs each of many unpinned runs that 3 hosts race for in exactly one container per attempt", func(ctx SpecContext) {
		n := scale(20, 200)
		s := begin("race", scale(5*time.Minute, 15*time.Minute))
		Expect(s.createAll(ctx, fleet.RaceRuns("race", n))).To(Succeed())
		r := s.finish(ctx)
		perHost := map[string]int{}
		for _, run := range s.final {
			perHost[run.Status.Host]++
			// The one create of each attempt was on the host the run names.
			key := fleet.AttemptKey{UID: string(run.UID), Attempt: int(run.Status.Attempts)}
			if hosts := s.creates[key]; len(hosts) == 1 && hosts[0] != run.Status.Host {
				s.problem("run %s ran on %s, its container was created on %s", run.Name, run.Status.Host, hosts[0])
			}
		}
		s.note("runs per host: %v", perHost)
		r.Notes, r.Problems = s.notes, s.problems
		r.Passed = r.Passed && len(r.Problems) == 0
		check(r)
	}, SpecTimeout(40*time.Minute))
})

// managerPIDs are the recorded pids of the managers, by host ("cluster-side"
// for the fleet's own).
func managerPIDs() map[string]string {
	out := map[string]string{}
	for _, name := range append([]string{""}, f.Hosts()...) {
		p := filepath.Join(f.StateDir(), "cluster-manager.pid")
		if name != "" {
			p = filepath.Join(f.HostDir(name), "manager.pid")
		} else {
			name = "cluster-side"
		}
		data, _ := os.ReadFile(p)
		out[name] = string(data)
	}
	return out
}

// upAgain runs up (which restarts whatever is down) and notes the managers
// that were restarted since before (their pids): a manager that cannot
// renew its leader lease for its renew deadline (10 s) stops leading and
// exits, which an API server outage or a cut longer than that makes every
// affected manager do; its supervisor (hack/supervise.sh, systemd on a real
// host) starts it again.
func (s *scenario) upAgain(before map[string]string) error {
	if err := f.Up(); err != nil {
		return err
	}
	var restarted []string
	for name, pid := range managerPIDs() {
		if pid != before[name] {
			restarted = append(restarted, name)
		}
	}
	sort.Strings(restarted)
	if len(restarted) > 0 {
		s.note("managers that exited and were restarted: %v", restarted)
	}
	return nil
}

// heartbeatSince: the host's Lease, which the fleet reads to tell whether the
// host lives, was renewed after t.
func heartbeatSince(ctx context.Context, host string, t time.Time) bool {
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: agentruns.DefaultLeaseNamespace, Name: host}, lease); err != nil {
		return false
	}
	return lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(t)
}

// busyHost is the host of a random run that is not finished, or a random
// host when none has one.
func (s *scenario) busyHost(ctx context.Context) string {
	runs, _ := s.list(ctx)
	var hosts []string
	for _, r := range runs {
		if r.Status.Host != "" && !r.Status.Phase.IsFinished() {
			hosts = append(hosts, r.Status.Host)
		}
	}
	if len(hosts) == 0 {
		hosts = f.Hosts()
	}
	return hosts[rand.IntN(len(hosts))]
}
