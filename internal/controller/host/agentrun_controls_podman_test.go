package host_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

var _ = Describe("Run controls and hardening, with real containers", func() {
	It("stops a run past its timeout and fails it with DeadlineExceeded", func(ctx SpecContext) {
		run := controllertest.NewRun("deadline", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", "echo started; sleep 300", "sh"}
			r.Spec.Timeout = &metav1.Duration{Duration: 2 * time.Second}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		failed := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 20*time.Second)
		Expect(controllertest.ConditionOf(failed, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonDeadlineExceeded), "%s: %s", failed.Status.Message, failed.Status.Output)
		Expect(failed.Status.Output).To(ContainSubstring("started"))
		Expect(failed.Status.CompletionTime.Sub(failed.Status.StartTime.Time)).To(BeNumerically("<", 10*time.Second))
		c, err := controllertest.Podman.Inspect(ctx, failed.Status.ContainerName)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.State).To(Equal(containers.StateExited))
	})

	It("cancels a running run when spec.cancel is patched, naming who asked", func(ctx SpecContext) {
		run := controllertest.NewRun("cancel", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "sleep 300", "sh"} })
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		Expect(controllertest.K8s.Patch(ctx, run, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"cancel":true}}`)),
			client.FieldOwner("kubectl-patch"))).To(Succeed())
		cancelled := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseCancelled, 15*time.Second)
		Expect(cancelled.Status.Message).To(ContainSubstring("kubectl-patch"))
		Expect(controllertest.ConditionOf(cancelled, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonCancelled))
		Expect(controllertest.ConditionOf(cancelled, agentsv1alpha1.ConditionFinished).Status).To(Equal(metav1.ConditionTrue))
		c, err := controllertest.Podman.Inspect(ctx, cancelled.Status.ContainerName)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.State).To(Equal(containers.StateExited))
	})

	It("retries a failed attempt in a new container, and the second attempt's result stands", func(ctx SpecContext) {
		dir, err := os.MkdirTemp("/tmp", "agentrun-retry-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		Expect(os.Chmod(dir, 0o777)).To(Succeed()) // writable for the container's non-root user
		run := controllertest.NewRun("retry", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.BackoffLimit = ptr.To[int32](2)
			r.Spec.Podman.Volumes = []string{dir + ":/work"}
			r.Spec.Command = []string{"sh", "-c",
				`if [ -e /work/tried ]; then echo "second attempt ok"; exit 0; fi; touch /work/tried; echo "first attempt fails"; exit 4`, "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(done.Status.Attempts).To(BeEquivalentTo(2))
		Expect(done.Status.Output).To(ContainSubstring("second attempt ok"))
		Expect(done.Status.ContainerName).To(HaveSuffix("-2"))
		Expect(*done.Status.ExitCode).To(BeZero())
		Expect(controllertest.RunEvents(ctx, run)).To(ContainElement(HaveField("Reason", agentsv1alpha1.ReasonBackOff)))
	})

	It("deletes a finished run once its TTL expires, not before", func(ctx SpecContext) {
		// Longer than the completion time's rounding down (under a second)
		// and the result's write after the exit, so that a run deleted as
		// soon as it finished is seen deleted early.
		const ttl = 3 * time.Second
		run := controllertest.NewRun("ttl", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.TTLSecondsAfterFinished = ptr.To(int32(ttl / time.Second))
		})
		// Watched from before it exists: its completion time is kept in whole
		// seconds, so its TTL can expire as soon as its result is written,
		// and it may stand finished too briefly for a Get to see it.
		versions := controllertest.WatchRun(ctx, run)
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		seen := versions(35 * time.Second)
		i := slices.IndexFunc(seen, func(v controllertest.RunVersion) bool { return v.Run.Status.Phase.IsFinished() })
		Expect(i).NotTo(Equal(-1), "deleted unfinished: %s", controllertest.DescribeStatus(seen[len(seen)-1].Run))
		finished := seen[i].Run
		Expect(finished.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), controllertest.DescribeStatus(finished))
		Expect(finished.Status.CompletionTime).NotTo(BeNil())
		// Seen after it was deleted, so never before its TTL expired unless
		// it was deleted before then.
		Expect(seen[len(seen)-1].Seen).NotTo(BeTemporally("<", finished.Status.CompletionTime.Add(ttl)),
			"deleted before its TTL expired")
	})

	It("holds runs beyond the host's capacity Pending, then starts them in creation order", func(ctx SpecContext) {
		const host = "host-capacity"
		DeferCleanup(controllertest.StartHostWith(host, controllertest.Podman, false, 1))
		// Each run holds its slot until the test lets it go, so the second
		// is seen waiting however slow the machine is.
		gate, err := os.MkdirTemp("/tmp", "agentrun-gate-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, gate)
		Expect(os.Chmod(gate, 0o755)).To(Succeed()) // readable by the container's non-root user
		var runs []*agentsv1alpha1.AgentRun
		for i := range 2 {
			run := controllertest.NewRun(fmt.Sprintf("cap%d", i), func(r *agentsv1alpha1.AgentRun) {
				r.Spec.HostName = host
				r.Spec.Podman.Volumes = []string{gate + ":/gate:ro"}
				r.Spec.Command = []string{"sh", "-c", "until [ -e /gate/go ]; do sleep 0.2; done", "sh"}
			})
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			runs = append(runs, run)
		}
		// Both may be created within one second (creation timestamps have
		// second precision); runs created together line up by name, and
		// cap0 sorts before cap1, so the order is the creation order anyway.
		first := controllertest.WaitForPhase(ctx, runs[0], agentsv1alpha1.PhaseRunning, 20*time.Second)
		Expect(first).NotTo(BeNil())
		Eventually(func(g Gomega) {
			second := controllertest.Get(ctx, runs[1])
			g.Expect(second.Status.Phase).To(Equal(agentsv1alpha1.PhasePending))
			g.Expect(controllertest.ConditionOf(second, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonWaitingForCapacity))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		Expect(os.WriteFile(filepath.Join(gate, "go"), nil, 0o644)).To(Succeed())

		done := controllertest.WaitForPhase(ctx, runs[0], agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		second := controllertest.WaitForPhase(ctx, runs[1], agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(second.Status.StartTime.Time).NotTo(BeTemporally("<", done.Status.CompletionTime.Time))
	})

	It("refuses what could turn the container against its host, and no container ever starts", func(ctx SpecContext) {
		real, err := os.MkdirTemp("/tmp", "agentrun-real-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, real)
		link := real + "-link"
		Expect(os.Symlink(real, link)).To(Succeed())
		DeferCleanup(os.Remove, link)
		// A host whose allowlist holds the Podman socket's directory: only
		// the forbidden paths keep runs from mounting it there.
		const socketHost = "host-socket-allowed"
		socketDir := filepath.Dir(testenv.PodmanSocket())
		allowing := controllertest.HostConfig(socketHost, controllertest.Podman, false, 0)
		allowing.Policy.AllowedVolumePaths = append(allowing.Policy.AllowedVolumePaths, filepath.Dir(socketDir))
		DeferCleanup(controllertest.StartHostConfig(allowing))
		volume := controllertest.NewRun("volume", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/root:/workspace"} })
		socket := controllertest.NewRun("socket", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = socketHost
			r.Spec.Podman.Volumes = []string{socketDir + ":/podman"}
		})
		symlink := controllertest.NewRun("symlink", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{link + ":/workspace"} })
		relabel := controllertest.NewRun("relabel", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{real + ":/workspace:U"} })
		hostNet := controllertest.NewRun("hostnet", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Network = "host" })
		image := controllertest.NewRun("image", func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = "quay.io/someone/agent:1" })
		for run, want := range map[*agentsv1alpha1.AgentRun][]string{
			volume:  {agentsv1alpha1.ReasonVolumeNotAllowed, "/root"},
			socket:  {agentsv1alpha1.ReasonVolumeNotAllowed, "host path " + socketDir + " is or holds ", ", which no run may mount"},
			symlink: {agentsv1alpha1.ReasonVolumeNotAllowed, link + " is a symbolic link"},
			relabel: {agentsv1alpha1.ReasonVolumeNotAllowed, "host.volumes.allowRelabel"},
			hostNet: {agentsv1alpha1.ReasonNetworkNotAllowed, `"host"`},
			image:   {agentsv1alpha1.ReasonImageNotAllowed, "quay.io/someone/agent:1"},
		} {
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			failed := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 20*time.Second)
			c := controllertest.ConditionOf(failed, agentsv1alpha1.ConditionFailed)
			Expect(c.Reason).To(Equal(want[0]))
			for _, part := range want[1:] {
				Expect(c.Message).To(ContainSubstring(part), "run %s", run.Name)
			}
			Expect(failed.Status.ContainerName).To(BeEmpty())
			Expect(controllertest.RunContainers(ctx, run)).To(BeEmpty())
		}
	})

	It("runs containers with no-new-privileges, no capabilities and a pids limit", func(ctx SpecContext) {
		run := controllertest.NewRun("hardened", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", `grep -E '^(NoNewPrivs|CapEff|CapBnd|CapAmb):' /proc/self/status; echo "pids $(cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null)"; echo "mem $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null)"`, "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.Output).To(MatchRegexp(`NoNewPrivs:\s+1`))
		Expect(done.Status.Output).To(MatchRegexp(`CapEff:\s+0000000000000000`))
		Expect(done.Status.Output).To(MatchRegexp(`CapBnd:\s+0000000000000000`))
		Expect(done.Status.Output).To(MatchRegexp(`CapAmb:\s+0000000000000000`))
		Expect(done.Status.Output).To(ContainSubstring("pids 256"))
		Expect(done.Status.Output).To(ContainSubstring(fmt.Sprint("mem ", 512<<20)))
	})

	It("runs as a non-root user that cannot write as root into a bind mount", func(ctx SpecContext) {
		dir, err := os.MkdirTemp("/tmp", "agentrun-user-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		Expect(os.Chmod(dir, 0o777)).To(Succeed()) // the workdir is made writable for the agent's user
		run := controllertest.NewRun("user", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Volumes = []string{dir + ":/work"}
			r.Spec.Command = []string{"sh", "-c", `echo "uid $(id -u)"; echo hi >/work/out; cp /bin/busybox /work/suid; chmod 4755 /work/suid; chown 0:0 /work/out && echo "chown worked"; true`, "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.Output).To(MatchRegexp(`uid [1-9][0-9]*`))
		Expect(done.Status.Output).NotTo(ContainSubstring("chown worked"))
		for _, name := range []string{"out", "suid"} {
			info, err := os.Stat(filepath.Join(dir, name))
			Expect(err).NotTo(HaveOccurred())
			Expect(info.Sys().(*syscall.Stat_t).Uid).NotTo(BeZero(), "%s is owned by root on the host", name)
		}
	})

	It("records a Claude-style JSON result in status", func(ctx SpecContext) {
		run := controllertest.NewRun("claude-json", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"fake-agent", "-p", "--output-format", "json"}
			r.Spec.Prompt = `Fix the "flaky" test`
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.AgentResult).NotTo(BeNil())
		Expect(done.Status.AgentResult.Result).To(Equal(`Done: Fix the "flaky" test`))
		Expect(done.Status.AgentResult.SessionID).NotTo(BeEmpty())
		Expect(done.Status.AgentResult.NumTurns).To(BeEquivalentTo(1))
		Expect(done.Status.AgentResult.CostUSD).To(Equal("0.0012"))

		failing := controllertest.NewRun("claude-error", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"fake-agent"}
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"FAKE_AGENT_ERROR": "1"}
		})
		Expect(controllertest.K8s.Create(ctx, failing)).To(Succeed())
		controllertest.CleanUp(failing)
		failed := controllertest.WaitForPhase(ctx, failing, agentsv1alpha1.PhaseFailed, 20*time.Second)
		Expect(*failed.Status.ExitCode).To(BeZero())
		Expect(controllertest.ConditionOf(failed, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonAgentError))
		Expect(failed.Status.AgentResult.IsError).To(BeTrue())
	})
})
