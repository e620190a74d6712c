package fleet_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

// These specs run the fleet's scheduler and host lifecycle controller with
// hosts in this process that share the machine's Podman; test/fleet proves
// the same on separate Podman services in separate network namespaces.
var _ = Describe("The fleet", func() {
	It("keeps a run no host can take Unschedulable, naming what each host lacks, and places it once a host has it", func(ctx SpecContext) {
		secret := "fleet-secret-" + rand.String(6)
		run := controllertest.NewRun("unsched", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = ""
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"TOKEN": agentsv1alpha1.SecretName(secret)}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, run)
			g.Expect(got.Status.Host).To(BeEmpty())
			g.Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonUnschedulable))
			g.Expect(got.Status.Message).To(ContainSubstring(controllertest.HostA + ": secret(s) " + secret))
			g.Expect(got.Status.Message).To(ContainSubstring(controllertest.HostB + ": secret(s) " + secret))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())

		controllertest.CreateSecret(secret, "v")
		start := time.Now()
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		GinkgoWriter.Printf("placed and finished %s after the secret was created\n", time.Since(start))
		Expect(done.Status.Host).To(BeElementOf(controllertest.HostA, controllertest.HostB))
	})

	It("fails a lost host's unpinned run over to another host without counting it against backoffLimit, and the host fences when it comes back", func(ctx SpecContext) {
		pool := map[string]string{"pool": "failover-" + rand.String(4)}
		doomedName, spareName := "doomed-"+rand.String(4), "spare-"+rand.String(4)
		doomedCfg := controllertest.HostConfig(doomedName, controllertest.Podman, false, 0)
		doomedCfg.Labels = pool
		stopDoomed := controllertest.StartHostConfig(doomedCfg)

		run := controllertest.NewRun("failover", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = ""
			r.Spec.HostSelector = &metav1.LabelSelector{MatchLabels: pool}
			r.Spec.BackoffLimit = new(int32)
			r.Spec.Command = []string{"sh", "-c", "sleep 15; echo finished", "sh"}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		running := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 30*time.Second)
		Expect(running.Status.Host).To(Equal(doomedName))
		firstContainer := running.Status.ContainerName

		// The host's manager dies; its container keeps running.
		stopDoomed()
		lostAt := time.Now()
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, run)
			g.Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionHostLost).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(got.Status.Host).To(BeEmpty())
			g.Expect(got.Status.DisruptedAttempts).To(Equal(int32(1)))
		}).WithContext(ctx).WithTimeout(controllertest.HostGracePeriod + 15*time.Second).Should(Succeed())
		GinkgoWriter.Printf("HostLost %s after the host's manager stopped (grace %s)\n", time.Since(lostAt), controllertest.HostGracePeriod)
		host := &agentsv1alpha1.PodmanHost{}
		Expect(controllertest.K8s.Get(ctx, client.ObjectKey{Name: doomedName}, host)).To(Succeed())
		Expect(meta.FindStatusCondition(host.Status.Conditions, agentsv1alpha1.HostConditionReady)).To(
			HaveField("Reason", agentsv1alpha1.ReasonHeartbeatLost))

		spareCfg := controllertest.HostConfig(spareName, controllertest.Podman, false, 0)
		spareCfg.Labels = pool
		DeferCleanup(controllertest.StartHostConfig(spareCfg))
		moved := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 30*time.Second)
		Expect(moved.Status.Host).To(Equal(spareName))
		Expect(moved.Status.Attempts).To(Equal(int32(2)))

		// The old host comes back and removes its stale container before
		// it launches anything.
		Expect(controllertest.RunContainers(ctx, run)).To(HaveLen(2))
		DeferCleanup(controllertest.StartHostConfig(doomedCfg))
		Eventually(func(g Gomega) {
			for _, c := range controllertest.RunContainers(ctx, run) {
				g.Expect(c.Name).NotTo(Equal(firstContainer))
			}
			evs := controllertest.RunEvents(ctx, run)
			var fenced []string
			for _, e := range evs {
				if e.Reason == agentsv1alpha1.ReasonFencing && e.Type == corev1.EventTypeWarning {
					fenced = append(fenced, e.Note)
				}
			}
			g.Expect(strings.Join(fenced, "\n")).To(ContainSubstring(firstContainer))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())

		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 40*time.Second)
		Expect(done.Status.Host).To(Equal(spareName))
		Expect(done.Status.Output).To(ContainSubstring("finished"))
		// The finished run's container goes while its host runs (the hosts
		// stop before cleanUp's deletion, which would wait for them).
		Eventually(func() []containers.Container { return controllertest.RunContainers(ctx, run) }).WithContext(ctx).WithTimeout(20 * time.Second).Should(BeEmpty())
	})
})
