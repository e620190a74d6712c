package kueue_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/kueueapi"
)

// How long a spec waits for what Kueue and the hosts do, on a machine whose
// cores other suites share.
const within = 3 * time.Minute

var _ = Describe("Runs queued in Kueue", func() {
	It("are held in their LocalQueue until Kueue admits them: a ClusterQueue of 2 runs 6 runs of two teams 2 at a time, each once, and an unlabelled run is not held", func(ctx SpecContext) {
		cq := "two-runs-" + rand.String(5)
		apply(ctx, flavor(cq)+"\n---\n"+clusterQueue(cq, cq, 2, "", ""))
		teamA, teamB := namespace(ctx, "team-a"), namespace(ctx, "team-b")
		apply(ctx, localQueue(teamA, "runs", cq)+"\n---\n"+localQueue(teamB, "runs", cq))

		var runs []*agentsv1alpha1.AgentRun
		for i := range 6 {
			ns := teamA
			if i%2 == 1 {
				ns = teamB
			}
			run := queuedRun("queued", ns, "runs", "sleep 4; echo done", nil)
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			runs = append(runs, run)
		}
		free := controllertest.NewRun("unqueued", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = "" })
		Expect(controllertest.K8s.Create(ctx, free)).To(Succeed())
		controllertest.CleanUp(free)

		sawQueued := false
		Eventually(func(g Gomega) {
			placed, succeeded := 0, 0
			for _, run := range runs {
				got := controllertest.Get(ctx, run)
				switch {
				case got.Status.Phase == agentsv1alpha1.PhaseSucceeded:
					succeeded++
				case got.Status.Host != "":
					placed++
				case controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted).Reason == agentsv1alpha1.ReasonQueued:
					sawQueued = true
					Expect(got.Status.Message).To(ContainSubstring("waiting in LocalQueue runs"), controllertest.DescribeStatus(got))
				}
			}
			// The invariant holds at every look, not only at the end.
			Expect(placed).To(BeNumerically("<=", 2), "runs placed at once")
			g.Expect(succeeded).To(Equal(len(runs)))
		}).WithContext(ctx).WithTimeout(within).WithPolling(200 * time.Millisecond).Should(Succeed())
		Expect(sawQueued).To(BeTrue(), "no run was seen waiting in its queue")

		for _, run := range runs {
			got := controllertest.Get(ctx, run)
			Expect(got.Status.Attempts).To(Equal(int32(1)), controllertest.DescribeStatus(got))
			Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionAdmitted).Reason).To(Equal(agentsv1alpha1.ReasonAdmitted))
			wl, err := workloadOf(ctx, run)
			Expect(err).NotTo(HaveOccurred())
			Expect(wl.Spec.QueueName).To(Equal("runs"))
			Expect(meta.IsStatusConditionTrue(wl.Status.Conditions, kueueapi.WorkloadFinished)).To(BeTrue(), "the finished run's Workload releases its quota")
		}
		// kubectl shows each run's Workload, its queue and where it was
		// admitted.
		for _, ns := range []string{teamA, teamB} {
			out := kubectl("get", "workloads", "-n", ns)
			for _, run := range runs {
				if run.Namespace == ns {
					Expect(out).To(MatchRegexp(`agentrun-%s\s+runs\s+%s\s+`, run.Name, cq))
				}
			}
		}
		done := controllertest.WaitForPhase(ctx, free, agentsv1alpha1.PhaseSucceeded, within)
		Expect(meta.FindStatusCondition(done.Status.Conditions, agentsv1alpha1.ConditionAdmitted)).To(BeNil())
		_, err := workloadOf(ctx, free)
		Expect(err).To(HaveOccurred(), "an unlabelled run has no Workload")
	})

	It("are preempted by a run of higher priority: the lower one's container is stopped and removed, and it runs again later without counting against backoffLimit 0", func(ctx SpecContext) {
		cq := "one-run-" + rand.String(5)
		apply(ctx, flavor(cq)+"\n---\n"+clusterQueue(cq, cq, 1, "", "    withinClusterQueue: LowerPriority"))
		low, high := "low-"+rand.String(5), "high-"+rand.String(5)
		apply(ctx, priorityClass(low, 10)+"\n---\n"+priorityClass(high, 1000))
		ns := namespace(ctx, "team")
		apply(ctx, localQueue(ns, "runs", cq))

		lowRun := queuedRun("low", ns, "runs", "sleep 20; echo low done", func(r *agentsv1alpha1.AgentRun) {
			r.Labels[agentsv1alpha1.LabelPriorityClass] = low
			r.Spec.BackoffLimit = new(int32)
		})
		Expect(controllertest.K8s.Create(ctx, lowRun)).To(Succeed())
		controllertest.CleanUp(lowRun)
		running := controllertest.WaitForPhase(ctx, lowRun, agentsv1alpha1.PhaseRunning, within)
		firstContainer := running.Status.ContainerName

		highRun := queuedRun("high", ns, "runs", "echo high done", func(r *agentsv1alpha1.AgentRun) {
			r.Labels[agentsv1alpha1.LabelPriorityClass] = high
		})
		Expect(controllertest.K8s.Create(ctx, highRun)).To(Succeed())
		controllertest.CleanUp(highRun)

		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, lowRun)
			g.Expect(got.Status.DisruptedAttempts).To(Equal(int32(1)), controllertest.DescribeStatus(got))
			g.Expect(eventsWithReason(ctx, lowRun, agentsv1alpha1.ReasonEvicted)).To(ContainElement(ContainSubstring("Preempted")))
			// Really stopped and removed on Podman.
			for _, c := range controllertest.RunContainers(ctx, lowRun) {
				g.Expect(c.Name).NotTo(Equal(firstContainer))
			}
		}).WithContext(ctx).WithTimeout(within).Should(Succeed())

		Expect(controllertest.WaitForPhase(ctx, highRun, agentsv1alpha1.PhaseSucceeded, within).Status.Output).To(ContainSubstring("high done"))
		done := controllertest.WaitForPhase(ctx, lowRun, agentsv1alpha1.PhaseSucceeded, within)
		Expect(done.Status.Attempts).To(Equal(int32(2)), controllertest.DescribeStatus(done))
		Expect(done.Status.Output).To(ContainSubstring("low done"))
		wl, err := workloadOf(ctx, lowRun)
		Expect(err).NotTo(HaveOccurred())
		Expect(*wl.Spec.Priority).To(Equal(int32(10)))
	})

	It("are held on the host they are pinned to, without a container, until their queue has quota", func(ctx SpecContext) {
		cq := "no-runs-" + rand.String(5)
		apply(ctx, flavor(cq)+"\n---\n"+clusterQueue(cq, cq, 0, "", ""))
		ns := namespace(ctx, "team")
		apply(ctx, localQueue(ns, "runs", cq))
		run := queuedRun("pinned", ns, "runs", "echo pinned done", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = controllertest.HostA })
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)

		// Kueue has looked at it and found no quota; its host has not
		// taken it.
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, run)
			g.Expect(got.Status.Message).To(ContainSubstring("insufficient"), controllertest.DescribeStatus(got))
			g.Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonQueued))
		}).WithContext(ctx).WithTimeout(within).Should(Succeed())
		got := controllertest.Get(ctx, run)
		Expect(got.Status.Host).To(BeEmpty(), controllertest.DescribeStatus(got))
		Expect(controllertest.RunContainers(ctx, run)).To(BeEmpty())

		update(ctx, clusterQueue(cq, cq, 1, "", ""))
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, within)
		Expect(done.Status.Host).To(Equal(controllertest.HostA))
	})

	It("borrow unused quota from their cohort, and give it back when its owner's queue needs it", func(ctx SpecContext) {
		cohort := "cohort-" + rand.String(5)
		lender, borrower := "lender-"+rand.String(5), "borrower-"+rand.String(5)
		apply(ctx, flavor(cohort))
		apply(ctx, clusterQueue(lender, cohort, 1, cohort, "    reclaimWithinCohort: Any"))
		apply(ctx, clusterQueue(borrower, cohort, 1, cohort, ""))
		nsLender, nsBorrower := namespace(ctx, "lender"), namespace(ctx, "borrower")
		apply(ctx, localQueue(nsLender, "runs", lender)+"\n---\n"+localQueue(nsBorrower, "runs", borrower))

		// Both of the borrower's runs run at once: one on its own quota,
		// one on the lender's.
		var borrowed []*agentsv1alpha1.AgentRun
		for range 2 {
			run := queuedRun("borrow", nsBorrower, "runs", "sleep 20; echo borrowed", nil)
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			borrowed = append(borrowed, run)
		}
		Eventually(func(g Gomega) {
			for _, run := range borrowed {
				got := controllertest.Get(ctx, run)
				g.Expect(got.Status.Phase).To(Equal(agentsv1alpha1.PhaseRunning), controllertest.DescribeStatus(got))
			}
		}).WithContext(ctx).WithTimeout(within).Should(Succeed())

		// The lender's run takes its quota back: one borrowed run is evicted.
		owner := queuedRun("owner", nsLender, "runs", "echo reclaimed", nil)
		Expect(controllertest.K8s.Create(ctx, owner)).To(Succeed())
		controllertest.CleanUp(owner)
		Expect(controllertest.WaitForPhase(ctx, owner, agentsv1alpha1.PhaseSucceeded, within).Status.Output).To(ContainSubstring("reclaimed"))
		evicted := 0
		for _, run := range borrowed {
			done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, within)
			evicted += int(done.Status.DisruptedAttempts)
			Expect(done.Status.Output).To(ContainSubstring("borrowed"))
		}
		Expect(evicted).To(Equal(1), "borrowed runs evicted for the lender's")
	})
})
