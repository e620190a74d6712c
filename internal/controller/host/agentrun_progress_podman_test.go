package host_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("A run that prints a line a second", func() {
	It("shows its output so far in status while it runs, masked", func(ctx SpecContext) {
		const host = "host-progress"
		cfg := controllertest.HostConfig(host, controllertest.Podman, false, 0)
		cfg.ProgressPeriod = time.Second
		DeferCleanup(controllertest.StartHostConfig(cfg))
		secretName := "agentrun-progress-" + rand.String(6)
		token := plainToken()
		controllertest.CreateSecret(secretName, token)
		run := controllertest.NewRun("progress", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", `for i in $(seq 1 20); do echo "line $i $GH_TOKEN"; sleep 1; done`, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)

		// Two different outputs seen while the run is Running: it is
		// refreshed, not written once.
		var seen []string
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, run)
			g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhaseRunning), "the run ended before its output showed twice: %v", seen)
			if out := got.Status.Output; out != "" && (len(seen) == 0 || seen[len(seen)-1] != out) {
				seen = append(seen, out)
			}
			g.Expect(seen).To(HaveLen(2))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		for _, out := range seen {
			Expect(out).To(HavePrefix("line 1 ***\n"))
			Expect(tokenPieces(out, token)).To(BeEmpty(), out)
		}

		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, time.Minute)
		Expect(done.Status.Output).To(HaveSuffix("line 20 ***\n"))
	}, SpecTimeout(2*time.Minute))
})

var _ = Describe("A running run whose token straddles where its output so far is cut", func() {
	It("shows no part of the token at the start of status.output", func(ctx SpecContext) {
		const host = "host-progress-cut"
		cfg := controllertest.HostConfig(host, controllertest.Podman, false, 0)
		cfg.ProgressPeriod = time.Second
		cfg.OutputTailBytes = 64
		DeferCleanup(controllertest.StartHostConfig(cfg))
		secretName := "agentrun-progress-cut-" + rand.String(6)
		token := plainToken()
		controllertest.CreateSecret(secretName, token)
		// The last 64 bytes printed begin 20 bytes into the token: masked
		// first, the output is shorter than that, and kept whole.
		run := controllertest.NewRun("progress-cut", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", `printf 'x%s%044d' "$GH_TOKEN" 0; sleep 60`, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		Eventually(func(g Gomega) {
			g.Expect(controllertest.Get(ctx, run).Status.Output).To(HaveSuffix("0000"))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		out := controllertest.Get(ctx, run).Status.Output
		Expect(out).To(Equal("x***"+strings.Repeat("0", 44)), "token %s", token)
	}, SpecTimeout(2*time.Minute))
})

var _ = Describe("A run that prints hundreds of MiB", func() {
	It("ends normally with the end of its output recorded, and frees its slot", func(ctx SpecContext) {
		const host = "host-flood"
		cfg := controllertest.HostConfig(host, controllertest.Podman, true, 1) // kept, to measure its log
		cfg.ProgressPeriod = time.Second
		Expect(cfg.Policy.LogMaxBytes).To(BeNumerically(">", 0), "the suite's hosts bound their containers' logs")
		DeferCleanup(controllertest.StartHostConfig(cfg))
		// 300 MiB in lines of a kilobyte, read while it runs and at its end.
		flood := controllertest.NewRun("flood", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"sh", "-c", `yes "$(printf %01023d 0)" | head -c 314572800; echo END-OF-OUTPUT`, "sh"}
		})
		next := controllertest.NewRun("after-flood", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = host })
		Expect(controllertest.K8s.Create(ctx, flood)).To(Succeed())
		controllertest.CleanUp(flood)
		Expect(controllertest.K8s.Create(ctx, next)).To(Succeed())
		controllertest.CleanUp(next)

		done := controllertest.WaitForPhase(ctx, flood, agentsv1alpha1.PhaseSucceeded, 4*time.Minute)
		Expect(done.Status.Output).To(HaveSuffix("\nEND-OF-OUTPUT\n"))
		Expect(len(done.Status.Output)).To(BeNumerically("<=", cfg.OutputTailBytes))
		all, err := controllertest.Podman.Logs(ctx, done.Status.ContainerID, 1<<30)
		Expect(err).NotTo(HaveOccurred())
		Expect(len(all)).To(BeNumerically("<=", cfg.Policy.LogMaxBytes), "what the host keeps of its output")
		// The host runs one run at a time: the next one ran once the slot
		// was freed.
		controllertest.WaitForPhase(ctx, next, agentsv1alpha1.PhaseSucceeded, time.Minute)
	}, SpecTimeout(6*time.Minute))
})
