package host_test

import (
	"context"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/testing/argocdhealth"
)

// gitopsView is what Flux (kstatus) and Argo CD (the shipped health script)
// make of a run as the API server serves it.
func gitopsView(ctx context.Context, run *agentsv1alpha1.AgentRun) (status.Status, argocdhealth.Health) {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(agentsv1alpha1.GroupVersion.WithKind("AgentRun"))
	Expect(controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(run), u)).To(Succeed())
	res, err := status.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	script, err := os.ReadFile("../../../config/gitops/argocd/health.lua")
	Expect(err).NotTo(HaveOccurred())
	health, err := argocdhealth.Evaluate(string(script), u.Object)
	Expect(err).NotTo(HaveOccurred())
	return res.Status, health
}

// expectGitopsView waits until kstatus and Argo CD see the run as given.
func expectGitopsView(ctx context.Context, run *agentsv1alpha1.AgentRun, kstatus status.Status, argo string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		k, a := gitopsView(ctx, run)
		g.Expect(k).To(Equal(kstatus))
		g.Expect(a.Status).To(Equal(argo), "message %q", a.Message)
	}).WithContext(ctx).WithTimeout(5 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

var _ = Describe("An AgentRun as GitOps tools see it", func() {
	It("is in progress for kstatus and Argo CD until it ends, then Current and Healthy, or Failed and Degraded", func(ctx SpecContext) {
		By("a run no host has taken yet, before any controller wrote its status")
		unclaimed := controllertest.NewRun("unclaimed", func(r *agentsv1alpha1.AgentRun) { r.Spec.HostName = "no-such-host" })
		Expect(controllertest.K8s.Create(ctx, unclaimed)).To(Succeed())
		controllertest.CleanUp(unclaimed)
		k, a := gitopsView(ctx, unclaimed)
		Expect(k).To(Equal(status.InProgressStatus))
		Expect(a.Status).To(Equal("Progressing"))

		By("a run waiting for a secret")
		waiting := controllertest.NewRun("waiting", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName("absent-" + rand.String(6))}
		})
		Expect(controllertest.K8s.Create(ctx, waiting)).To(Succeed())
		controllertest.CleanUp(waiting)
		Eventually(func() string {
			return controllertest.ConditionOf(controllertest.Get(ctx, waiting), agentsv1alpha1.ConditionReconciling).Reason
		}).
			WithContext(ctx).WithTimeout(10 * time.Second).Should(Equal(agentsv1alpha1.ReasonSecretNotFound))
		expectGitopsView(ctx, waiting, status.InProgressStatus, "Progressing")

		By("a running run, then cancelled")
		long := controllertest.NewRun("long", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "sleep 60", "sh"} })
		Expect(controllertest.K8s.Create(ctx, long)).To(Succeed())
		controllertest.CleanUp(long)
		controllertest.WaitForPhase(ctx, long, agentsv1alpha1.PhaseRunning, 30*time.Second)
		expectGitopsView(ctx, long, status.InProgressStatus, "Progressing")
		patch := client.MergeFrom(controllertest.Get(ctx, long))
		cancelled := controllertest.Get(ctx, long)
		cancelled.Spec.Cancel = true
		Expect(controllertest.K8s.Patch(ctx, cancelled, patch)).To(Succeed())
		controllertest.WaitForPhase(ctx, long, agentsv1alpha1.PhaseCancelled, 30*time.Second)
		expectGitopsView(ctx, long, status.FailedStatus, "Degraded")
		Expect(controllertest.ConditionOf(controllertest.Get(ctx, long), agentsv1alpha1.ConditionStalled).Reason).To(Equal(agentsv1alpha1.ReasonCancelled))

		By("a run that succeeds")
		ok := controllertest.NewRun("ok", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"true"} })
		Expect(controllertest.K8s.Create(ctx, ok)).To(Succeed())
		controllertest.CleanUp(ok)
		controllertest.WaitForPhase(ctx, ok, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		expectGitopsView(ctx, ok, status.CurrentStatus, "Healthy")
		Expect(controllertest.ConditionOf(controllertest.Get(ctx, ok), agentsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))

		By("a run that fails")
		failing := controllertest.NewRun("fails", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "exit 3"} })
		Expect(controllertest.K8s.Create(ctx, failing)).To(Succeed())
		controllertest.CleanUp(failing)
		controllertest.WaitForPhase(ctx, failing, agentsv1alpha1.PhaseFailed, 30*time.Second)
		expectGitopsView(ctx, failing, status.FailedStatus, "Degraded")
		Expect(controllertest.ConditionOf(controllertest.Get(ctx, failing), agentsv1alpha1.ConditionStalled).Reason).To(Equal(agentsv1alpha1.ReasonExitedNonZero))
	})

	It("does not run a manifest again when its run is deleted and applied again, unless asked to", func(ctx SpecContext) {
		manifest := controllertest.NewRun("once", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "echo ran; exit 3"} })
		// The hosts' own create calls, counted as they are made: Podman's
		// events of them can come many seconds late.
		creates := func() int { return controllertest.HostCreates.WithPrefix("agentrun-default-" + manifest.Name + "-") }
		apply := func(edit func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
			run := manifest.DeepCopy()
			if edit != nil {
				edit(run)
			}
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			return run
		}
		deleteAndWait := func(run *agentsv1alpha1.AgentRun) {
			Expect(controllertest.K8s.Delete(ctx, run)).To(Succeed())
			Eventually(func() error {
				return controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{})
			}).
				WithContext(ctx).WithTimeout(30 * time.Second).ShouldNot(Succeed())
		}

		first := apply(nil)
		controllertest.CleanUp(first)
		done := controllertest.WaitForPhase(ctx, first, agentsv1alpha1.PhaseFailed, 30*time.Second)
		deleteAndWait(first)

		again := apply(nil)
		ended := controllertest.WaitForPhase(ctx, again, agentsv1alpha1.PhaseFailed, 30*time.Second)
		Expect(controllertest.ConditionOf(ended, agentsv1alpha1.ConditionFinished).Reason).To(Equal(agentsv1alpha1.ReasonAlreadyRan))
		Expect(ended.Status.Message).To(ContainSubstring(string(done.UID)))
		Expect(*ended.Status.ExitCode).To(BeEquivalentTo(3))
		expectGitopsView(ctx, again, status.FailedStatus, "Degraded")
		Expect(creates()).To(Equal(1), "containers created for the manifest")

		By("run again on purpose, with a new value of the rerun annotation")
		deleteAndWait(again)
		rerun := apply(func(r *agentsv1alpha1.AgentRun) {
			r.Annotations = map[string]string{agentsv1alpha1.AnnotationRerun: "2"}
		})
		ran := controllertest.WaitForPhase(ctx, rerun, agentsv1alpha1.PhaseFailed, 30*time.Second)
		Expect(controllertest.ConditionOf(ran, agentsv1alpha1.ConditionFinished).Reason).To(Equal(agentsv1alpha1.ReasonExitedNonZero))
		Expect(ran.Status.Output).To(ContainSubstring("ran"))
		Expect(creates()).To(Equal(2), "containers created for the manifest")
	})
})
