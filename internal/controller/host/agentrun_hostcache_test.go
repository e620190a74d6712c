package host_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("A host's cache", func() {
	It("holds the runs placed on its host and those pinned to it, and no other run of the cluster", func(ctx SpecContext) {
		name := "cache-" + rand.String(5)
		mgr, stop := controllertest.StartHostManager(controllertest.HostConfig(name, controllertest.Podman, false, 0))
		DeferCleanup(stop)
		sleeps := func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "sleep 60"} }
		unplaceable := func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = ""
			r.Spec.HostSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"agentrun.test/none": "x"}}
			sleeps(r)
		}
		elsewhere := controllertest.NewRun("elsewhere", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = name + "-other" })
		unplaced := controllertest.NewRun("unplaced", unplaceable)
		pinned := controllertest.NewRun("pinned", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = name; sleeps(r) })
		placed := controllertest.NewRun("placed", unplaceable)
		for _, run := range []*agentsv1alpha1.AgentRun{elsewhere, unplaced, pinned, placed} {
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
		}
		// Placed as the fleet places a run: status.host written.
		base := placed.DeepCopy()
		placed.Status.Host = name
		Expect(controllertest.K8s.Status().Patch(ctx, placed, client.MergeFrom(base))).To(Succeed())

		cached := func(g Gomega) []string {
			list := &agentsv1alpha1.AgentRunList{}
			g.Expect(mgr.GetCache().List(ctx, list, client.InNamespace(placed.Namespace))).To(Succeed())
			return runNames(list)
		}
		// The runs not the host's were created first: a cache that held
		// them would hold them by now.
		Eventually(cached).WithContext(ctx).WithTimeout(10 * time.Second).Should(ConsistOf(pinned.Name, placed.Name))
		Expect(apierrors.IsNotFound(mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(unplaced), &agentsv1alpha1.AgentRun{}))).
			To(BeTrue(), "the cache holds a run of no host")
		// Both caches feed the reconciler: the host runs both runs.
		controllertest.WaitForPhase(ctx, pinned, agentsv1alpha1.PhaseRunning, 30*time.Second)
		controllertest.WaitForPhase(ctx, placed, agentsv1alpha1.PhaseRunning, 30*time.Second)

		// What the host's watch selects by, a user selects by too.
		onHost := &agentsv1alpha1.AgentRunList{}
		Expect(controllertest.K8s.List(ctx, onHost, client.MatchingFields{agentruns.FieldHost: name})).To(Succeed())
		Expect(runNames(onHost)).To(ConsistOf(pinned.Name, placed.Name))
	}, SpecTimeout(2*time.Minute))
})

func runNames(list *agentsv1alpha1.AgentRunList) []string {
	names := make([]string, 0, len(list.Items))
	for _, r := range list.Items {
		names = append(names, r.Name)
	}
	return names
}
