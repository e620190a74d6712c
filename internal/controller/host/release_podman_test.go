package host_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("A host's cache", func() {
	It("lets go of its finished runs once their containers are removed, and the fleet deletes them at their TTL", func(ctx SpecContext) {
		const host = "host-release"
		mgr, stop := controllertest.StartHostManager(controllertest.HostConfig(host, controllertest.Podman, false, 0))
		DeferCleanup(func() { stop() })
		var runs []*agentsv1alpha1.AgentRun
		for i := range 5 {
			run := controllertest.NewRun(fmt.Sprintf("released%d", i), func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = host })
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			runs = append(runs, run)
		}
		withTTL := controllertest.NewRun("released-ttl", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.TTLSecondsAfterFinished = ptr.To[int32](4)
		})
		Expect(controllertest.K8s.Create(ctx, withTTL)).To(Succeed())
		controllertest.CleanUp(withTTL)

		By("releasing each run once it succeeded and its container is gone")
		for _, run := range runs {
			controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
			Eventually(func(g Gomega) {
				got := controllertest.Get(ctx, run)
				g.Expect(got.Labels).To(HaveKeyWithValue(agentsv1alpha1.LabelReleased, "true"))
				g.Expect(got.Finalizers).NotTo(ContainElement("agents.agentrun.dev/container"))
				g.Expect(controllertest.RunContainers(ctx, run)).To(BeEmpty())
			}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
		}

		By("holding none of them in the host's cache")
		Eventually(func(g Gomega) {
			cached := &agentsv1alpha1.AgentRunList{}
			g.Expect(mgr.GetCache().List(ctx, cached)).To(Succeed())
			ours := 0
			for _, r := range cached.Items {
				if r.Spec.HostName == host {
					ours++
				}
			}
			g.Expect(ours).To(BeZero(), "the host's cache holds %d of its %d finished runs", ours, len(runs)+1)
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())

		By("deleting the run whose TTL expired, though its host no longer watches it")
		Eventually(func(g Gomega) {
			err := controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(withTTL), &agentsv1alpha1.AgentRun{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the run with a 4s TTL is still there: %v", err)
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})
})
