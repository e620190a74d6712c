package host_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/redact"
)

var _ = Describe("An AgentRun on a Podman host", func() {
	It("runs in a real container with its secrets injected by Podman, and records the result", func(ctx SpecContext) {
		secretName := "agentrun-test-" + rand.String(6)
		secretValue := "tok-" + rand.String(24)
		controllertest.CreateSecret(secretName, secretValue)
		run := controllertest.NewRun("secret", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Prompt = "Review the open PRs"
			r.Spec.Command = []string{"sh", "-c",
				`echo "token sha256 $(printf %s "$GH_TOKEN" | sha256sum | cut -d' ' -f1)"; echo "token: $GH_TOKEN"; echo "env prompt: $AGENT_PROMPT"; echo "arg prompt: $1"; echo "plain: $LOG_LEVEL"; pwd`, "sh"}
			r.Spec.Workdir = "/tmp"
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"LOG_LEVEL": "debug"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)

		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(done.Status.Output).To(ContainSubstring(fmt.Sprintf("token sha256 %x", sha256.Sum256([]byte(secretValue)))))
		// The container prints the value itself too, so that the checks
		// below see a value the host had to mask, not one never printed.
		Expect(done.Status.Output).To(ContainSubstring("token: " + redact.Mask + "\n"))
		Expect(done.Status.Output).To(ContainSubstring("env prompt: Review the open PRs"))
		Expect(done.Status.Output).To(ContainSubstring("arg prompt: Review the open PRs"))
		Expect(done.Status.Output).To(ContainSubstring("plain: debug"))
		Expect(done.Status.Output).To(ContainSubstring("/tmp"))
		Expect(*done.Status.ExitCode).To(BeZero())
		Expect(done.Status.Host).To(Equal(controllertest.HostA))
		Expect(done.Status.Attempts).To(BeEquivalentTo(1))
		Expect(done.Status.ContainerName).To(HavePrefix("agentrun-default-" + run.Name))
		Expect(done.Status.StartTime).NotTo(BeNil())
		Expect(done.Status.CompletionTime).NotTo(BeNil())
		Expect(done.Status.ObservedGeneration).To(Equal(done.Generation))
		Expect(controllertest.ConditionOf(done, agentsv1alpha1.ConditionSucceeded).Status).To(Equal(metav1.ConditionTrue))
		Expect(controllertest.ConditionOf(done, agentsv1alpha1.ConditionFinished).Status).To(Equal(metav1.ConditionTrue))

		By("never writing the secret's value anywhere in the API")
		raw, err := json.Marshal(done)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring(secretValue))
		Eventually(func(g Gomega) {
			evs := controllertest.RunEvents(ctx, run)
			g.Expect(evs).NotTo(BeEmpty())
			raw, err := json.Marshal(evs)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(raw)).NotTo(ContainSubstring(secretValue))
			g.Expect(string(raw)).To(ContainSubstring(agentsv1alpha1.ReasonCompleted))
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(controllertest.ManagerLogs.String()).NotTo(BeEmpty())
		Expect(controllertest.ManagerLogs.String()).NotTo(ContainSubstring(secretValue))
	})

	It("notices a container's exit from Podman's events, not from a resync", func(ctx SpecContext) {
		run := controllertest.NewRun("fast", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", "sleep 1; exit 3", "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		running := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		// The reconcilers resync hourly: only an event can bring the exit this fast.
		failed := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 6*time.Second)
		Expect(*failed.Status.ExitCode).To(BeEquivalentTo(3))
		Expect(controllertest.ConditionOf(failed, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonExitedNonZero))
		Expect(failed.Status.ContainerID).To(Equal(running.Status.ContainerID))
		Eventually(func(g Gomega) {
			var warnings []string
			for _, e := range controllertest.RunEvents(ctx, run) {
				if e.Type == "Warning" {
					warnings = append(warnings, e.Reason)
				}
			}
			g.Expect(warnings).To(ContainElement(agentsv1alpha1.ReasonExitedNonZero))
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
	})

	It("waits Pending with SecretNotFound naming the missing secret, and starts once it exists", func(ctx SpecContext) {
		missing := "agentrun-missing-" + rand.String(6)
		run := controllertest.NewRun("nosecret", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"API_KEY": agentsv1alpha1.SecretName(missing)}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, run)
			c := controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted)
			g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhasePending))
			g.Expect(c.Reason).To(Equal(agentsv1alpha1.ReasonSecretNotFound))
			g.Expect(c.Message).To(ContainSubstring(missing))
			g.Expect(c.Message).To(ContainSubstring("podman secret create '" + missing + "' -"))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		Expect(controllertest.RunContainers(ctx, run)).To(BeEmpty())

		controllertest.CreateSecret(missing, "late-value")
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 15*time.Second)
		Expect(done.Status.Output).To(ContainSubstring("agent got: say hello"))
	})

	It("says when the image is not on the host", func(ctx SpecContext) {
		run := controllertest.NewRun("noimage", func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = "localhost/agentrun-absent:1" })
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		Eventually(func(g Gomega) {
			c := controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionStarted)
			g.Expect(c.Reason).To(Equal(agentsv1alpha1.ReasonImageNotFound))
			g.Expect(c.Message).To(ContainSubstring("localhost/agentrun-absent:1"))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})

	It("stops and removes the container when a running run is deleted", func(ctx SpecContext) {
		run := controllertest.NewRun("delete", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "sleep 300", "sh"} })
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		Expect(controllertest.RunContainers(ctx, run)).To(HaveLen(1))
		uid := controllertest.Get(ctx, run).UID

		start := time.Now()
		Expect(controllertest.K8s.Delete(ctx, run)).To(Succeed())
		Eventually(func() error {
			return controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{})
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Satisfy(func(err error) bool { return client.IgnoreNotFound(err) == nil && err != nil }))
		cs, err := controllertest.Podman.List(ctx, map[string]string{agentsv1alpha1.LabelUID: string(uid)})
		Expect(err).NotTo(HaveOccurred())
		Expect(cs).To(BeEmpty())
		GinkgoWriter.Printf("deleting a running run took %s\n", time.Since(start))
	})

	It("is executed exactly once when two hosts race for unpinned runs", func(ctx SpecContext) {
		var runs []*agentsv1alpha1.AgentRun
		for range 6 {
			run := controllertest.NewRun("race", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = "" })
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			runs = append(runs, run)
		}
		pinned := controllertest.NewRun("pinned", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = controllertest.HostB })
		Expect(controllertest.K8s.Create(ctx, pinned)).To(Succeed())
		controllertest.CleanUp(pinned)
		hosts := map[string]int{}
		for _, run := range runs {
			done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
			hosts[done.Status.Host]++
			cs := controllertest.RunContainers(ctx, run)
			Expect(cs).To(HaveLen(1), "run %s must have exactly one container", run.Name)
			Expect(cs[0].Labels[agentsv1alpha1.LabelHost]).To(Equal(done.Status.Host))
			Expect(controllertest.HostCreates.Of(done.Status.ContainerName)).To(Equal([]string{done.Status.Host}),
				"run %s: the hosts that asked to create its container", run.Name)
		}
		GinkgoWriter.Printf("runs per host: %v\n", hosts)
		Expect(hosts[controllertest.HostA] + hosts[controllertest.HostB]).To(Equal(len(runs)))
		pinnedDone := controllertest.WaitForPhase(ctx, pinned, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(pinnedDone.Status.Host).To(Equal(controllertest.HostB))
		Expect(controllertest.RunContainers(ctx, pinned)).To(HaveLen(1))
		Expect(controllertest.HostCreates.Of(pinnedDone.Status.ContainerName)).To(Equal([]string{controllertest.HostB}))
	})

	It("is adopted by a restarted manager, which records a result it missed, then removes the container", func(ctx SpecContext) {
		const host = "host-restart"
		stop := controllertest.StartHost(host, controllertest.Podman, false)
		// Registered first so it runs last, after cleanUp has removed the run.
		DeferCleanup(func() { stop() })
		run := controllertest.NewRun("restart", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", "echo begun; sleep 2; echo finished while nobody watched", "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		running := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		// Running means the container started, not that the command did:
		// the egress forwarder runs it once the manager's proxy answers, and
		// a manager stopped before that leaves the command waiting for a
		// proxy (a minute, then exit 121 without running it). The command
		// says when it runs.
		Eventually(func(g Gomega) {
			out, err := controllertest.Podman.Logs(ctx, running.Status.ContainerID, 4096)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out).To(ContainSubstring("begun"))
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
		stop()

		By("letting the container finish while no manager runs")
		Eventually(func(g Gomega) {
			c, err := controllertest.Podman.Inspect(ctx, running.Status.ContainerName)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(c.State).To(Equal(containers.StateExited))
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
		Expect(controllertest.Get(ctx, run).Status.Phase).To(Equal(agentsv1alpha1.PhaseRunning))

		stop = controllertest.StartHost(host, controllertest.Podman, false)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.ContainerID).To(Equal(running.Status.ContainerID))
		Expect(done.Status.Attempts).To(BeEquivalentTo(1))
		Expect(done.Status.Output).To(ContainSubstring("finished while nobody watched"))

		By("removing the container once the result is recorded")
		Eventually(func(g Gomega) {
			g.Expect(controllertest.RunContainers(ctx, run)).To(BeEmpty())
			g.Expect(controllertest.Get(ctx, run).Finalizers).To(BeEmpty())
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
	})

	It("adopts a still-running container after a restart instead of starting a second one", func(ctx SpecContext) {
		const host = "host-adopt"
		stop := controllertest.StartHost(host, controllertest.Podman, true)
		// Registered first so it runs last, after cleanUp has removed the run.
		DeferCleanup(func() { stop() })
		run := controllertest.NewRun("adopt", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", "sleep 3; echo adopted", "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		running := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		stop()
		stop = controllertest.StartHost(host, controllertest.Podman, true)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.ContainerID).To(Equal(running.Status.ContainerID))
		Expect(done.Status.Output).To(ContainSubstring("adopted"))
		Expect(controllertest.RunContainers(ctx, run)).To(HaveLen(1))
	})

	It("says so in a condition when the host's Podman API does not answer, and keeps retrying", func(ctx SpecContext) {
		const host = "host-podman-down"
		deadSocket := GinkgoT().TempDir() + "/podman.sock"
		DeferCleanup(controllertest.StartHost(host, podman.New(deadSocket), false))
		// The dead host cannot clean up: the run never got a container or a
		// finalizer, so deleting it is immediate.
		run := controllertest.NewRun("down", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = host })
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, run)
			c := controllertest.ConditionOf(got, agentsv1alpha1.ConditionPodmanAvailable)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(agentsv1alpha1.ReasonPodmanUnavailable))
			g.Expect(c.Message).To(ContainSubstring(deadSocket))
			g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhasePending))
			g.Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonPodmanUnavailable))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})
})
