package agent

import (
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	names "k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// reportedCost is what the CLI reported the run cost.
func reportedCost(run *agentsv1alpha1.AgentRun) float64 {
	GinkgoHelper()
	Expect(run.Status.AgentResult).NotTo(BeNil(), "run %s reported no result; output:\n%s", run.Name, run.Status.Output)
	cost, err := strconv.ParseFloat(run.Status.AgentResult.CostUSD, 64)
	Expect(err).NotTo(HaveOccurred(), "run %s's cost", run.Name)
	return cost
}

var _ = Describe("An AgentRunBudget over what Claude Code reports it spent", func() {
	It("starts the runs that fit, holds the rest BudgetExceeded, and starts them once the window frees their cost", func(ctx SpecContext) {
		const (
			limit  = 0.05  // the budget's maxCostUSD
			runCap = 0.025 // its defaultRunCapUSD: two runs' caps fill it
			// perRun is what each run should cost: two of them leave
			// less than a cap, so no third starts until they leave the
			// window, and each stays under its cap, so the CLI ends it
			// with a success.
			perRun = 0.018
			window = time.Minute
		)
		_, secret, api := standIn("Spent.")

		By("pricing a call: the CLI charges for the tokens the stand-in reports, at its own prices")
		const probeTokens = 10000
		api.ReportInputTokens(probeTokens)
		probeCost := reportedCost(runToEnd(ctx, standInRun("What does a call cost?", secret, api)))
		Expect(probeCost).To(BeNumerically(">", 0), "the CLI priced the stand-in's tokens at nothing")
		api.ReportInputTokens(int(probeTokens * perRun / probeCost))

		team := "budget-" + names.String(5)
		budget := &agentsv1alpha1.AgentRunBudget{
			ObjectMeta: metav1.ObjectMeta{Name: team, Namespace: "default"},
			Spec: agentsv1alpha1.AgentRunBudgetSpec{
				Window: metav1.Duration{Duration: window}, MaxCostUSD: "0.05", DefaultRunCapUSD: "0.025",
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": team}},
			},
		}
		Expect(k8s.Create(ctx, budget)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, budget))).To(Succeed()) })

		By("creating four runs under it: the caps of two fill it")
		runs := make([]*agentsv1alpha1.AgentRun, 4)
		for i := range runs {
			runs[i] = standInRun("Spend some of the team's budget.", secret, api)
			runs[i].Labels = map[string]string{"team": team}
			Expect(k8s.Create(ctx, runs[i])).To(Succeed())
			DeferCleanup(deleteRun, runs[i])
		}
		phases := func(g Gomega) map[agentsv1alpha1.AgentRunPhase][]*agentsv1alpha1.AgentRun {
			out := map[agentsv1alpha1.AgentRunPhase][]*agentsv1alpha1.AgentRun{}
			for _, run := range runs {
				got := &agentsv1alpha1.AgentRun{}
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(run), got)).To(Succeed())
				out[got.Status.Phase] = append(out[got.Status.Phase], got)
			}
			return out
		}
		var first, held []*agentsv1alpha1.AgentRun
		Eventually(func(g Gomega) {
			by := phases(g)
			first, held = by[agentsv1alpha1.PhaseSucceeded], by[agentsv1alpha1.PhasePending]
			g.Expect(first).To(HaveLen(2), "two runs fit and ran")
			g.Expect(held).To(HaveLen(2), "two runs wait")
			for _, run := range held {
				started := meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionStarted)
				g.Expect(started).NotTo(BeNil())
				g.Expect(started.Reason).To(Equal(agentsv1alpha1.ReasonBudgetExceeded), "%s waits: %s", run.Name, run.Status.Message)
			}
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(250 * time.Millisecond).Should(Succeed())

		By("charging the budget what the CLI reported, and holding the rest with what is left and when it frees")
		spent := reportedCost(first[0]) + reportedCost(first[1])
		Expect(limit-spent).To(BeNumerically("<", runCap), "the first two runs cost %v together: a third would fit, and the spec proves nothing", spent)
		got := &agentsv1alpha1.AgentRunBudget{}
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(budget), got)).To(Succeed())
			g.Expect(strconv.ParseFloat(got.Status.SpentUSD, 64)).To(BeNumerically("~", spent, 0.000001))
			g.Expect(got.Status.Runs).To(BeEquivalentTo(2))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(got.Status.Entries).NotTo(BeEmpty())
		frees := got.Status.Entries[0].Time.Add(window)
		for _, run := range held {
			Expect(run.Status.Host).To(BeEmpty(), "a held run is given to no host")
			Expect(run.Status.Message).To(And(ContainSubstring("AgentRunBudget "+team), ContainSubstring("of 0.05 USD left in its 1m0s window"),
				ContainSubstring("this run reserves 0.025")))
		}

		By("starting the held runs by themselves once the first runs' cost leaves the window, never before")
		Expect(time.Until(frees)).To(BeNumerically(">", 5*time.Second), "the first runs took most of the window: nothing is left to watch")
		Consistently(func(g Gomega) {
			g.Expect(phases(g)[agentsv1alpha1.PhasePending]).To(HaveLen(2))
		}).WithContext(ctx).WithTimeout(time.Until(frees) - 2*time.Second).WithPolling(time.Second).Should(Succeed())
		for _, run := range held {
			done := awaitEnd(ctx, run)
			Expect(done.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "%s", done.Status.Message)
			Expect(done.Status.StartTime.Time).NotTo(BeTemporally("<", frees), "it started before the window freed the first runs' cost")
		}
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(budget), got)).To(Succeed())
			g.Expect(got.Status.Runs).To(BeEquivalentTo(2), "the first two left the window; the last two count")
			g.Expect(got.Status.ReservedUSD).To(BeElementOf("", "0"))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	})
})
