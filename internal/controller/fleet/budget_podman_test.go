package fleet_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("An AgentRunBudget", func() {
	It("lets the runs that fit run, holds the rest BudgetExceeded, and starts them once finished runs' costs replace their reservations", func(ctx SpecContext) {
		selector := map[string]string{"budget": "b-" + rand.String(5)}
		b := &agentsv1alpha1.AgentRunBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "team-" + rand.String(5), Namespace: "default"},
			Spec: agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: time.Hour}, MaxCostUSD: "0.05",
				DefaultRunCapUSD: "0.02", Selector: &metav1.LabelSelector{MatchLabels: selector}},
		}
		Expect(controllertest.K8s.Create(ctx, b)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(controllertest.K8s.Delete(ctx, b))).To(Succeed()) })
		// The fake agent reports total_cost_usd 0.0012 after working.
		newRun := func(prefix, host, seconds string) *agentsv1alpha1.AgentRun {
			run := controllertest.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
				r.Labels = selector
				r.Spec.HostName = host
				r.Spec.Command = []string{"fake-agent"}
				r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"FAKE_AGENT_SLEEP": agentsv1alpha1.EnvValue(seconds)}
			})
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			return run
		}
		// Placed by the fleet, each reserving the default cap, 0.02.
		first, second := newRun("budget-a", "", "8"), newRun("budget-b", "", "8")
		Eventually(func(g Gomega) {
			for _, run := range []*agentsv1alpha1.AgentRun{first, second} {
				got := controllertest.Get(ctx, run)
				g.Expect(got.Status.Budget).To(HaveField("ReservedUSD", "0.02"))
				g.Expect(got.Status.Host).NotTo(BeEmpty())
			}
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		// Pinned: its host claims it only once the fleet reserved, which
		// it cannot while the two run.
		held := newRun("budget-held", controllertest.HostA, "1")
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, held)
			g.Expect(got.Status.Host).To(BeEmpty())
			g.Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonBudgetExceeded))
			g.Expect(got.Status.Message).To(ContainSubstring("0.01 of 0.05 USD left"))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())

		done := controllertest.WaitForPhase(ctx, held, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
		Expect(done.Status.Budget).To(HaveField("CapUSD", "0.02"))
		Eventually(func(g Gomega) {
			got := &agentsv1alpha1.AgentRunBudget{}
			g.Expect(controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(b), got)).To(Succeed())
			g.Expect(got.Status.SpentUSD).To(Equal("0.0036"))
			g.Expect(got.Status.ReservedUSD).To(Equal("0"))
			g.Expect(got.Status.Runs).To(Equal(int32(3)))
			g.Expect(got.Status.NextReleaseTime).NotTo(BeNil())
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})

	It("is refused by the API server when its fields are out of range, naming the rule", func(ctx SpecContext) {
		for _, tc := range []struct {
			edit func(*agentsv1alpha1.AgentRunBudgetSpec)
			rule string
		}{
			{func(s *agentsv1alpha1.AgentRunBudgetSpec) { s.Window.Duration = 10 * time.Second }, "(rule: budget window)"},
			{func(s *agentsv1alpha1.AgentRunBudgetSpec) { s.MaxCostUSD = "0.000" }, "(rule: positive budget)"},
			{func(s *agentsv1alpha1.AgentRunBudgetSpec) { s.DefaultRunCapUSD = "6" }, "(rule: cap within budget)"},
			{func(s *agentsv1alpha1.AgentRunBudgetSpec) { s.MaxCostUSD = "1e3" }, "spec.maxCostUSD"},
			{func(s *agentsv1alpha1.AgentRunBudgetSpec) {
				s.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Equals", Values: []string{"a"}}}}
			}, "(rule: budget selector)"},
			{func(s *agentsv1alpha1.AgentRunBudgetSpec) {
				s.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn}}}
			}, "(rule: budget selector)"},
		} {
			b := &agentsv1alpha1.AgentRunBudget{
				ObjectMeta: metav1.ObjectMeta{Name: "bad-" + rand.String(5), Namespace: "default"},
				Spec:       agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: time.Hour}, MaxCostUSD: "5"},
			}
			tc.edit(&b.Spec)
			Expect(controllertest.K8s.Create(ctx, b)).To(MatchError(ContainSubstring(tc.rule)))
		}
		valid := &agentsv1alpha1.AgentRunBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "good-" + rand.String(5), Namespace: "default"},
			Spec: agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: 24 * time.Hour}, MaxCostUSD: "50", DefaultRunCapUSD: "2",
				Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"a"}}, {Key: "nobudget", Operator: metav1.LabelSelectorOpDoesNotExist},
				}}},
		}
		// It selects no run of the suite: every other spec's run lacks the label.
		Expect(controllertest.K8s.Create(ctx, valid)).To(Succeed())
		Expect(controllertest.K8s.Delete(ctx, valid)).To(Succeed())
	})
})
