package fleet_test

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// containersOf lists the names of a run's containers on one host's Podman.
func containersOf(host string, run *agentsv1alpha1.AgentRun) string {
	GinkgoHelper()
	out, err := f.Podman(host, "", "ps", "-a", "--format", "{{.Names}}", "--filter", "label="+agentsv1alpha1.LabelUID+"="+string(run.UID))
	Expect(err).NotTo(HaveOccurred(), out)
	return strings.TrimSpace(out)
}

// fencingEvents returns the notes of the Fencing events about a run.
func fencingEvents(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun) []eventsv1.Event {
	GinkgoHelper()
	list := &eventsv1.EventList{}
	Expect(c.List(ctx, list, client.InNamespace(run.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == run.Name && e.Reason == agentsv1alpha1.ReasonFencing {
			out = append(out, e)
		}
	}
	return out
}

// failsOver checks that a run whose host was lost is HostLost and running on
// another host within the grace period and 15 s, as a new attempt that does
// not count against backoffLimit, and returns it.
func failsOver(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun, lost string, since time.Time) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	got := &agentsv1alpha1.AgentRun{}
	Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(run), got)).To(Succeed())
		g.Expect(cond(got.Status.Conditions, agentsv1alpha1.ConditionHostLost).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhaseRunning), got.Status.Message)
		g.Expect(got.Status.Host).NotTo(BeElementOf(lost, ""))
	}).WithContext(ctx).WithTimeout(gracePeriod + 15*time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	GinkgoWriter.Printf("%s: running on %s %s after %s was lost (grace %s)\n", run.Name, got.Status.Host, time.Since(since).Round(time.Millisecond), lost, gracePeriod)
	Expect(got.Status.Attempts).To(Equal(int32(2)))
	Expect(got.Status.DisruptedAttempts).To(Equal(int32(1)))
	return got
}

var _ = Describe("A host that is lost", Ordered, ContinueOnFailure, func() {
	var c client.Client
	BeforeAll(func() { c = k8sClient() })

	longRun := func(prefix string) *agentsv1alpha1.AgentRun {
		return newRun(prefix, func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", "sleep 25; echo finished"}
			r.Spec.BackoffLimit = new(int32) // a disruption is not a failure
		})
	}

	It("when its manager is SIGKILLed, has its unpinned run relaunched on another host, and removes the old container when it comes back", func(ctx SpecContext) {
		r := longRun("killed")
		create(ctx, c, r)
		running := waitFor(ctx, c, r, agentsv1alpha1.PhaseRunning, 90*time.Second)
		lost := running.Status.Host
		Expect(f.KillHost(lost)).To(Succeed())
		killedAt := time.Now()
		failsOver(ctx, c, r, lost, killedAt)

		Expect(containersOf(lost, running)).NotTo(BeEmpty(), "the killed manager's container outlives it")
		Expect(f.Up()).To(Succeed()) // restarts the killed manager
		Eventually(func() string { return containersOf(lost, running) }).WithContext(ctx).WithTimeout(60 * time.Second).Should(BeEmpty())
		Eventually(func() []eventsv1.Event { return fencingEvents(ctx, c, r) }).WithContext(ctx).WithTimeout(20 * time.Second).ShouldNot(BeEmpty())
		done := waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 90*time.Second)
		Expect(done.Status.Output).To(ContainSubstring("finished"))
	})

	It("when its network is cut, has its unpinned run relaunched on another host, and on its return stops and removes the old container before it takes any run", func(ctx SpecContext) {
		r := longRun("cut")
		create(ctx, c, r)
		running := waitFor(ctx, c, r, agentsv1alpha1.PhaseRunning, 90*time.Second)
		lost := running.Status.Host
		Expect(f.Cut(lost)).To(Succeed())
		cutAt := time.Now()
		restored := false
		DeferCleanup(func() {
			if !restored {
				_ = f.Restore(lost)
			}
		})
		failsOver(ctx, c, r, lost, cutAt)
		Expect(containersOf(lost, running)).NotTo(BeEmpty(), "the cut host's container runs on")

		Expect(f.Restore(lost)).To(Succeed())
		restored = true
		Eventually(func() string { return containersOf(lost, running) }).WithContext(ctx).WithTimeout(60 * time.Second).Should(BeEmpty())
		var fenced time.Time
		Eventually(func(g Gomega) {
			evs := fencingEvents(ctx, c, r)
			g.Expect(evs).NotTo(BeEmpty())
			fenced = evs[0].EventTime.Time
			g.Expect(evs[0].Note).To(ContainSubstring("given to host " + failsOverHost(ctx, c, r)))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		// The host is Ready again, so the fleet may give it runs, only
		// after it fenced.
		Eventually(func(g Gomega) {
			host := &agentsv1alpha1.PodmanHost{}
			g.Expect(c.Get(ctx, client.ObjectKey{Name: lost}, host)).To(Succeed())
			ready := cond(host.Status.Conditions, agentsv1alpha1.HostConditionReady)
			g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(ready.LastTransitionTime.Time).NotTo(BeTemporally("<", fenced.Truncate(time.Second)))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		done := waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 90*time.Second)
		Expect(done.Status.Host).NotTo(Equal(lost))
	})
})

func failsOverHost(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun) string {
	got := &agentsv1alpha1.AgentRun{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(run), got); err != nil {
		return "?"
	}
	return got.Status.Host
}
