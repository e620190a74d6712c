package controllers_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/redact"
	"github.com/agentrun/agentrun/internal/testenv"
)

func newRun(prefix string, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(5), Namespace: "default"},
		Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "say hello", HostName: hostA},
	}
	if mutate != nil {
		mutate(run)
	}
	return run
}

func get(ctx context.Context, run *agentsv1alpha1.AgentRun) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	out := &agentsv1alpha1.AgentRun{}
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(run), out)).To(Succeed())
	return out
}

// waitForPhase waits for the run to reach phase and returns it.
func waitForPhase(ctx context.Context, run *agentsv1alpha1.AgentRun, phase agentsv1alpha1.AgentRunPhase, within time.Duration) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	var got *agentsv1alpha1.AgentRun
	Eventually(func(g Gomega) {
		got = &agentsv1alpha1.AgentRun{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(run), got)).To(Succeed())
		if got.Status.Phase != phase && got.Status.Phase.IsFinished() {
			// A finished run never changes phase again: waiting on would
			// only hide why it ended.
			StopTrying(fmt.Sprintf("the run ended %s, not %s: %s", got.Status.Phase, phase, describeStatus(got))).Now()
		}
		g.Expect(got.Status.Phase).To(Equal(phase), describeStatus(got))
	}).WithContext(ctx).WithTimeout(within).WithPolling(100 * time.Millisecond).Should(Succeed())
	return got
}

// describeStatus is what a failed wait prints of a run: its host, its
// conditions' reasons and messages, and its output.
func describeStatus(run *agentsv1alpha1.AgentRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %q on host %q, message %q", run.Status.Phase, run.Status.Host, run.Status.Message)
	for _, c := range run.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	fmt.Fprintf(&b, "\n  output: %q", run.Status.Output)
	return b.String()
}

func conditionOf(run *agentsv1alpha1.AgentRun, t string) metav1.Condition {
	if c := meta.FindStatusCondition(run.Status.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// runContainers lists the containers of a run on any host.
func runContainers(ctx context.Context, run *agentsv1alpha1.AgentRun) []containers.Container {
	GinkgoHelper()
	cs, err := rt.List(ctx, map[string]string{agentsv1alpha1.LabelUID: string(get(ctx, run).UID)})
	Expect(err).NotTo(HaveOccurred())
	return cs
}

// createSecret makes a Podman secret, removed after the spec.
func createSecret(name, value string) {
	GinkgoHelper()
	remove, err := testenv.CreatePodmanSecret(name, value)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(remove)
}

// runEvents lists the Kubernetes events about a run.
func runEvents(ctx context.Context, run *agentsv1alpha1.AgentRun) []eventsv1.Event {
	GinkgoHelper()
	list := &eventsv1.EventList{}
	Expect(k8s.List(ctx, list, client.InNamespace(run.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == run.Name {
			out = append(out, e)
		}
	}
	return out
}

func cleanUp(run *agentsv1alpha1.AgentRun) {
	DeferCleanup(func(ctx SpecContext) {
		_ = k8s.Delete(ctx, run)
		Eventually(func() []containers.Container {
			cs, _ := rt.List(ctx, map[string]string{agentsv1alpha1.LabelName: run.Name})
			return cs
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeEmpty())
	})
}

var _ = Describe("An AgentRun on a Podman host", func() {
	It("runs in a real container with its secrets injected by Podman, and records the result", func(ctx SpecContext) {
		secretName := "agentrun-test-" + rand.String(6)
		secretValue := "tok-" + rand.String(24)
		createSecret(secretName, secretValue)
		run := newRun("secret", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Prompt = "Review the open PRs"
			r.Spec.Command = []string{"sh", "-c",
				`echo "token sha256 $(printf %s "$GH_TOKEN" | sha256sum | cut -d' ' -f1)"; echo "token: $GH_TOKEN"; echo "env prompt: $AGENT_PROMPT"; echo "arg prompt: $1"; echo "plain: $LOG_LEVEL"; pwd`, "sh"}
			r.Spec.Workdir = "/tmp"
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"LOG_LEVEL": "debug"}
		})
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)

		done := waitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(done.Status.Output).To(ContainSubstring(fmt.Sprintf("token sha256 %x", sha256.Sum256([]byte(secretValue)))))
		// The container prints the value itself too, so that the checks
		// below see a value the host had to mask, not one never printed.
		Expect(done.Status.Output).To(ContainSubstring("token: " + redact.Mask + "\n"))
		Expect(done.Status.Output).To(ContainSubstring("env prompt: Review the open PRs"))
		Expect(done.Status.Output).To(ContainSubstring("arg prompt: Review the open PRs"))
		Expect(done.Status.Output).To(ContainSubstring("plain: debug"))
		Expect(done.Status.Output).To(ContainSubstring("/tmp"))
		Expect(*done.Status.ExitCode).To(BeZero())
		Expect(done.Status.Host).To(Equal(hostA))
		Expect(done.Status.Attempts).To(BeEquivalentTo(1))
		Expect(done.Status.ContainerName).To(HavePrefix("agentrun-default-" + run.Name))
		Expect(done.Status.StartTime).NotTo(BeNil())
		Expect(done.Status.CompletionTime).NotTo(BeNil())
		Expect(done.Status.ObservedGeneration).To(Equal(done.Generation))
		Expect(conditionOf(done, agentsv1alpha1.ConditionSucceeded).Status).To(Equal(metav1.ConditionTrue))
		Expect(conditionOf(done, agentsv1alpha1.ConditionFinished).Status).To(Equal(metav1.ConditionTrue))

		By("never writing the secret's value anywhere in the API")
		raw, err := json.Marshal(done)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring(secretValue))
		Eventually(func(g Gomega) {
			evs := runEvents(ctx, run)
			g.Expect(evs).NotTo(BeEmpty())
			raw, err := json.Marshal(evs)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(raw)).NotTo(ContainSubstring(secretValue))
			g.Expect(string(raw)).To(ContainSubstring(agentsv1alpha1.ReasonCompleted))
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(managerLogs.String()).NotTo(BeEmpty())
		Expect(managerLogs.String()).NotTo(ContainSubstring(secretValue))
	})

	It("notices a container's exit from Podman's events, not from a resync", func(ctx SpecContext) {
		run := newRun("fast", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", "sleep 1; exit 3", "sh"}
		})
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)
		running := waitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		// The reconcilers resync hourly: only an event can bring the exit this fast.
		failed := waitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 6*time.Second)
		Expect(*failed.Status.ExitCode).To(BeEquivalentTo(3))
		Expect(conditionOf(failed, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonExitedNonZero))
		Expect(failed.Status.ContainerID).To(Equal(running.Status.ContainerID))
		Eventually(func(g Gomega) {
			var warnings []string
			for _, e := range runEvents(ctx, run) {
				if e.Type == "Warning" {
					warnings = append(warnings, e.Reason)
				}
			}
			g.Expect(warnings).To(ContainElement(agentsv1alpha1.ReasonExitedNonZero))
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
	})

	It("waits Pending with SecretNotFound naming the missing secret, and starts once it exists", func(ctx SpecContext) {
		missing := "agentrun-missing-" + rand.String(6)
		run := newRun("nosecret", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"API_KEY": agentsv1alpha1.SecretName(missing)}
		})
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)
		Eventually(func(g Gomega) {
			got := get(ctx, run)
			c := conditionOf(got, agentsv1alpha1.ConditionStarted)
			g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhasePending))
			g.Expect(c.Reason).To(Equal(agentsv1alpha1.ReasonSecretNotFound))
			g.Expect(c.Message).To(ContainSubstring(missing))
			g.Expect(c.Message).To(ContainSubstring("podman secret create '" + missing + "' -"))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		Expect(runContainers(ctx, run)).To(BeEmpty())

		createSecret(missing, "late-value")
		done := waitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 15*time.Second)
		Expect(done.Status.Output).To(ContainSubstring("agent got: say hello"))
	})

	It("says when the image is not on the host", func(ctx SpecContext) {
		run := newRun("noimage", func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = "localhost/agentrun-absent:1" })
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)
		Eventually(func(g Gomega) {
			c := conditionOf(get(ctx, run), agentsv1alpha1.ConditionStarted)
			g.Expect(c.Reason).To(Equal(agentsv1alpha1.ReasonImageNotFound))
			g.Expect(c.Message).To(ContainSubstring("localhost/agentrun-absent:1"))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})

	It("stops and removes the container when a running run is deleted", func(ctx SpecContext) {
		run := newRun("delete", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "sleep 300", "sh"} })
		Expect(k8s.Create(ctx, run)).To(Succeed())
		waitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		Expect(runContainers(ctx, run)).To(HaveLen(1))
		uid := get(ctx, run).UID

		start := time.Now()
		Expect(k8s.Delete(ctx, run)).To(Succeed())
		Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{})
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Satisfy(func(err error) bool { return client.IgnoreNotFound(err) == nil && err != nil }))
		cs, err := rt.List(ctx, map[string]string{agentsv1alpha1.LabelUID: string(uid)})
		Expect(err).NotTo(HaveOccurred())
		Expect(cs).To(BeEmpty())
		GinkgoWriter.Printf("deleting a running run took %s\n", time.Since(start))
	})

	It("is executed exactly once when two hosts race for unpinned runs", func(ctx SpecContext) {
		var runs []*agentsv1alpha1.AgentRun
		for range 6 {
			run := newRun("race", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = "" })
			Expect(k8s.Create(ctx, run)).To(Succeed())
			cleanUp(run)
			runs = append(runs, run)
		}
		pinned := newRun("pinned", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = hostB })
		Expect(k8s.Create(ctx, pinned)).To(Succeed())
		cleanUp(pinned)
		hosts := map[string]int{}
		for _, run := range runs {
			done := waitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
			hosts[done.Status.Host]++
			cs := runContainers(ctx, run)
			Expect(cs).To(HaveLen(1), "run %s must have exactly one container", run.Name)
			Expect(cs[0].Labels[agentsv1alpha1.LabelHost]).To(Equal(done.Status.Host))
			Expect(hostCreates.of(done.Status.ContainerName)).To(Equal([]string{done.Status.Host}),
				"run %s: the hosts that asked to create its container", run.Name)
		}
		GinkgoWriter.Printf("runs per host: %v\n", hosts)
		Expect(hosts[hostA] + hosts[hostB]).To(Equal(len(runs)))
		pinnedDone := waitForPhase(ctx, pinned, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(pinnedDone.Status.Host).To(Equal(hostB))
		Expect(runContainers(ctx, pinned)).To(HaveLen(1))
		Expect(hostCreates.of(pinnedDone.Status.ContainerName)).To(Equal([]string{hostB}))
	})

	It("is adopted by a restarted manager, which records a result it missed, then removes the container", func(ctx SpecContext) {
		const host = "host-restart"
		stop := startHost(host, rt, false)
		// Registered first so it runs last, after cleanUp has removed the run.
		DeferCleanup(func() { stop() })
		run := newRun("restart", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", "sleep 2; echo finished while nobody watched", "sh"}
		})
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)
		running := waitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		stop()

		By("letting the container finish while no manager runs")
		Eventually(func(g Gomega) {
			c, err := rt.Inspect(ctx, running.Status.ContainerName)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(c.State).To(Equal(containers.StateExited))
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
		Expect(get(ctx, run).Status.Phase).To(Equal(agentsv1alpha1.PhaseRunning))

		stop = startHost(host, rt, false)
		done := waitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.ContainerID).To(Equal(running.Status.ContainerID))
		Expect(done.Status.Attempts).To(BeEquivalentTo(1))
		Expect(done.Status.Output).To(ContainSubstring("finished while nobody watched"))

		By("removing the container once the result is recorded")
		Eventually(func(g Gomega) {
			g.Expect(runContainers(ctx, run)).To(BeEmpty())
			g.Expect(get(ctx, run).Finalizers).To(BeEmpty())
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
	})

	It("adopts a still-running container after a restart instead of starting a second one", func(ctx SpecContext) {
		const host = "host-adopt"
		stop := startHost(host, rt, true)
		// Registered first so it runs last, after cleanUp has removed the run.
		DeferCleanup(func() { stop() })
		run := newRun("adopt", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", "sleep 3; echo adopted", "sh"}
		})
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)
		running := waitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 20*time.Second)
		stop()
		stop = startHost(host, rt, true)
		done := waitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
		Expect(done.Status.ContainerID).To(Equal(running.Status.ContainerID))
		Expect(done.Status.Output).To(ContainSubstring("adopted"))
		Expect(runContainers(ctx, run)).To(HaveLen(1))
	})

	It("says so in a condition when the host's Podman API does not answer, and keeps retrying", func(ctx SpecContext) {
		const host = "host-podman-down"
		deadSocket := GinkgoT().TempDir() + "/podman.sock"
		DeferCleanup(startHost(host, podman.New(deadSocket), false))
		// The dead host cannot clean up: the run never got a container or a
		// finalizer, so deleting it is immediate.
		run := newRun("down", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = host })
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)
		Eventually(func(g Gomega) {
			got := get(ctx, run)
			c := conditionOf(got, agentsv1alpha1.ConditionPodmanAvailable)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(agentsv1alpha1.ReasonPodmanUnavailable))
			g.Expect(c.Message).To(ContainSubstring(deadSocket))
			g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhasePending))
			g.Expect(conditionOf(got, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonPodmanUnavailable))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})
})
