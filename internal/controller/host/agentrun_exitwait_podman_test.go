package host_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers/runtimetest"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("A host whose Podman event log says nothing", func() {
	// Podman's event log lags under load, so a host awaits each running
	// container's end with a blocking wait of its own. The suite's hosts
	// resync once an hour: here, only the wait can bring an exit.
	It("records each exit within moments of it, also after its manager restarts", func(ctx SpecContext) {
		const host = "host-silent-events"
		cfg := controllertest.HostConfig(host, runtimetest.SilentEvents(controllertest.Podman), true, 0)
		stop := controllertest.StartHostConfig(cfg)
		DeferCleanup(func() { stop() })

		running := func(prefix, sleep string) *agentsv1alpha1.AgentRun {
			run := controllertest.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
				r.Spec.HostName = host
				r.Spec.Command = []string{"sh", "-c", "sleep " + sleep + "; echo done", "sh"}
			})
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 30*time.Second)
			return run
		}
		expectRecordedPromptly(ctx, running("waited", "1"))

		// A run whose container outlives its host's manager: the next
		// manager's first pass finds it running and awaits it again.
		slow := running("rewaited", "6")
		stop()
		stop = controllertest.StartHostConfig(cfg)
		expectRecordedPromptly(ctx, slow)
	}, SpecTimeout(2*time.Minute))
})

// expectRecordedPromptly waits for a running run to succeed and checks that
// its phase was written soon after its container exited: well within the
// time Podman's event log may lag (about 30 s at the 95th percentile under
// load), with room for a machine shared with other suites (1.9 s seen).
func expectRecordedPromptly(ctx context.Context, run *agentsv1alpha1.AgentRun) {
	GinkgoHelper()
	var seen time.Time
	Eventually(func(g Gomega) {
		got := &agentsv1alpha1.AgentRun{}
		g.Expect(controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(run), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "message: %s", got.Status.Message)
		seen = time.Now()
	}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
	c, err := controllertest.Podman.Inspect(ctx, controllertest.Get(ctx, run).Status.ContainerName)
	Expect(err).NotTo(HaveOccurred())
	Expect(seen.Sub(c.FinishedAt)).To(BeNumerically("<", 10*time.Second),
		"the phase of %s was seen %s after its container exited", run.Name, seen.Sub(c.FinishedAt))
	GinkgoWriter.Printf("%s: exit -> Succeeded seen after %s\n", run.Name, seen.Sub(c.FinishedAt))
}
