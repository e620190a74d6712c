package fleet_test

import (
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("Placement by the hosts' policies", func() {
	It("sends each run to a host whose policy admits it, keeps one no host admits Unschedulable with each host's reason, and follows a host's new policy", func(ctx SpecContext) {
		pool := map[string]string{"pool": "policy-" + rand.String(4)}
		dirA, dirB := tempDir("placement-a-"), tempDir("placement-b-")
		// The suite's one image under two names: host local admits only
		// localhost/ names, host short also the short name, which Podman
		// resolves to the same image. Host local allows volumes from dirA,
		// host short from dirB.
		short := "agentrun-test:latest"
		localCfg := controllertest.HostConfig("local-"+rand.String(4), controllertest.Podman, false, 0)
		localCfg.Labels = pool
		localCfg.Policy.AllowedImages = []string{"localhost/*"}
		localCfg.Policy.AllowedVolumePaths = []string{dirA}
		shortCfg := controllertest.HostConfig("short-"+rand.String(4), controllertest.Podman, false, 0)
		shortCfg.Labels = pool
		shortCfg.Policy.AllowedImages = []string{"localhost/*", "agentrun-test:*"}
		shortCfg.Policy.AllowedVolumePaths = []string{dirB}
		DeferCleanup(controllertest.StartHostConfig(localCfg))
		stopShort := controllertest.StartHostConfig(shortCfg)
		DeferCleanup(func() { stopShort() })
		Eventually(func(g Gomega) {
			h := &agentsv1alpha1.PodmanHost{}
			g.Expect(controllertest.K8s.Get(ctx, client.ObjectKey{Name: localCfg.Host}, h)).To(Succeed())
			g.Expect(h.Status.Policy).NotTo(BeNil())
			g.Expect(h.Status.Policy.AllowedImages).To(Equal([]string{"localhost/*"}))
			g.Expect(h.Status.Policy.AllowedVolumePaths).To(Equal([]string{dirA}))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())

		newRun := func(prefix, image, volume string) *agentsv1alpha1.AgentRun {
			run := controllertest.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
				r.Spec.HostName = ""
				r.Spec.HostSelector = &metav1.LabelSelector{MatchLabels: pool}
				r.Spec.Image = image
				if volume != "" {
					r.Spec.Podman.Volumes = []string{volume + ":/data:ro"}
				}
			})
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			return run
		}
		toLocal := newRun("vol-a", "", dirA)
		toShort := newRun("vol-b", "", dirB)
		byName := newRun("short-name", short, "")
		neither := newRun("neither", short, dirA)
		for run, want := range map[*agentsv1alpha1.AgentRun]string{toLocal: localCfg.Host, toShort: shortCfg.Host, byName: shortCfg.Host} {
			done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 40*time.Second)
			Expect(done.Status.Host).To(Equal(want), "run %s", run.Name)
		}

		// A new run waits WaitingForHost for a heartbeat period, then is
		// Unschedulable; it is never placed where it would fail.
		Eventually(func(g Gomega) {
			got := controllertest.Get(ctx, neither)
			g.Expect(got.Status.Host).To(BeEmpty())
			g.Expect(controllertest.ConditionOf(got, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonUnschedulable))
			g.Expect(got.Status.Message).To(ContainSubstring(localCfg.Host + ": image " + short + " is not allowed on this host (allowed: localhost/*)"))
			g.Expect(got.Status.Message).To(ContainSubstring(shortCfg.Host + ": volume " + dirA + ":/data: host path " + dirA + " is outside the paths this host allows (" + dirB + ")"))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(controllertest.Get(ctx, neither).Status.Phase).To(Equal(agentsv1alpha1.PhasePending))

		// Host short restarts allowing dirA too: it publishes the change at
		// its start, and the run goes there.
		stopShort()
		shortCfg.Policy.AllowedVolumePaths = []string{dirA, dirB}
		restarted := time.Now()
		stopShort = controllertest.StartHostConfig(shortCfg)
		Eventually(func(g Gomega) {
			h := &agentsv1alpha1.PodmanHost{}
			g.Expect(controllertest.K8s.Get(ctx, client.ObjectKey{Name: shortCfg.Host}, h)).To(Succeed())
			g.Expect(h.Status.Policy.AllowedVolumePaths).To(Equal([]string{dirA, dirB}))
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		GinkgoWriter.Printf("host %s published its new policy %s after its restart (heartbeat %s)\n", shortCfg.Host, time.Since(restarted), controllertest.HeartbeatPeriod)
		done := controllertest.WaitForPhase(ctx, neither, agentsv1alpha1.PhaseSucceeded, 40*time.Second)
		Expect(done.Status.Host).To(Equal(shortCfg.Host))
		GinkgoWriter.Printf("the run no host admitted finished on %s %s after the restart\n", shortCfg.Host, time.Since(restarted))
	})
})

// tempDir makes a directory under /tmp, which Podman 5 sees, removed after
// the spec.
func tempDir(prefix string) string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	return dir
}
