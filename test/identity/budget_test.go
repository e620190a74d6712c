package identity_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// A budget's ledger and a run's reservation (status.budget) are the
// fleet's: a host that wrote either could start its runs past the budget.
var _ = Describe("A host and AgentRunBudgets", func() {
	admitted := func(st *agentsv1alpha1.AgentRunStatus) {
		st.Budget = &agentsv1alpha1.RunBudget{Budgets: []string{"team"}, ReservedUSD: "0.5"}
	}

	It("may not admit its run under a budget, nor change or drop what the fleet recorded; the fleet may write it", func(ctx SpecContext) {
		key := newRun(ctx, "a", "")
		expectRefused(writeStatus(ctx, hostA, key, admitted), runsPolicy, "only the fleet admits budgets")
		Expect(writeStatus(ctx, fleet, key, admitted)).To(Succeed())
		// Claiming it, and running it, keep the reservation as it is.
		Expect(writeStatus(ctx, hostA, key, claimBy("a"))).To(Succeed())
		Expect(writeStatus(ctx, hostA, key, running)).To(Succeed())
		expectRefused(writeStatus(ctx, hostA, key, func(st *agentsv1alpha1.AgentRunStatus) { st.Budget.CapUSD = "9" }),
			runsPolicy, "only the fleet admits budgets")
		expectRefused(writeStatus(ctx, hostA, key, func(st *agentsv1alpha1.AgentRunStatus) { st.Budget = nil }),
			runsPolicy, "only the fleet admits budgets")
		Expect(get(ctx, key).Status.Budget).To(HaveField("ReservedUSD", "0.5"))
	})

	It("may read a budget but not write its ledger; the fleet writes it", func(ctx SpecContext) {
		b := &agentsv1alpha1.AgentRunBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: runNamespace},
			Spec:       agentsv1alpha1.AgentRunBudgetSpec{Window: metav1.Duration{Duration: time.Hour}, MaxCostUSD: "5"},
		}
		Expect(admin.Create(ctx, b)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(admin.Delete(ctx, b)).To(Succeed()) })
		write := func(c client.Client) error {
			got := &agentsv1alpha1.AgentRunBudget{}
			Expect(c.Get(ctx, client.ObjectKeyFromObject(b), got)).To(Succeed())
			base := got.DeepCopy()
			got.Status.SpentUSD = "0"
			return c.Status().Patch(ctx, got, client.MergeFrom(base))
		}
		expectRefusedByRBAC(write(hostB))
		Expect(write(fleet)).To(Succeed())
	})
})
