package fleet_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// These specs are issue 12's "done when", on the suite's fleet: three hosts,
// each its own Podman service (the third Podman 5) and storage in its own
// network namespace, each its own manager process; the cluster-side manager
// places runs and declares hosts lost.

func k8sClient() client.Client {
	GinkgoHelper()
	c, err := f.Client()
	Expect(err).NotTo(HaveOccurred())
	return c
}

func newRun(prefix string, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	return fleet.NewRun(prefix, mutate)
}

func create(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun) {
	GinkgoHelper()
	Expect(fleet.Create(ctx, c, run)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) { _ = c.Delete(ctx, run) })
}

func waitFor(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun, phase agentsv1alpha1.AgentRunPhase, within time.Duration) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	got := &agentsv1alpha1.AgentRun{}
	Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(run), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase), "%s: %s", got.Status.Host, got.Status.Message)
	}).WithContext(ctx).WithTimeout(within).WithPolling(200 * time.Millisecond).Should(Succeed())
	return got
}

func cond(conds []metav1.Condition, t string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// secret creates a Podman secret on one host, removed after the spec.
func secret(host, name, value string) {
	GinkgoHelper()
	out, err := f.Podman(host, value, "secret", "create", name, "-")
	Expect(err).NotTo(HaveOccurred(), out)
	DeferCleanup(func() { _, _ = f.Podman(host, "", "secret", "rm", name) })
}

var _ = Describe("The fleet", Ordered, ContinueOnFailure, func() {
	var c client.Client
	BeforeAll(func() { c = k8sClient() })

	It("shows every host Ready with its secret names, never their values", func(ctx SpecContext) {
		secret(f.Host(2), "shown-"+rand.String(4), "value-never-shown-"+rand.String(8))
		Eventually(func(g Gomega) {
			out, err := f.Kubectl("get", "podmanhosts", "-o", "wide")
			g.Expect(err).NotTo(HaveOccurred(), out)
			for _, h := range f.Hosts() {
				g.Expect(out).To(MatchRegexp(`(?m)^%s\s+True\s+\d+\s+4\s+\S+`, h))
			}
			g.Expect(out).To(ContainSubstring("shown-"))
			g.Expect(out).NotTo(ContainSubstring("value-never-shown"))
			all, err := f.Kubectl("get", "podmanhosts", "-o", "yaml")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(all).NotTo(ContainSubstring("value-never-shown"))
		}).WithContext(ctx).WithTimeout(60 * time.Second).Should(Succeed())
		out, _ := f.Kubectl("get", "podmanhosts", "-o", "wide")
		GinkgoWriter.Println(out)
	})

	It("runs a run that needs a secret only host 2 holds on host 2, every time, and one that needs an image only host 3 has on host 3", func(ctx SpecContext) {
		name := "only-two-" + rand.String(4)
		secret(f.Host(2), name, "v")
		image := "localhost/only-three:" + rand.String(4)
		out, err := f.Podman(f.Host(3), "", "tag", "localhost/agentrun-test:latest", image)
		Expect(err).NotTo(HaveOccurred(), out)
		DeferCleanup(func() { _, _ = f.Podman(f.Host(3), "", "rmi", image) })
		var runs []*agentsv1alpha1.AgentRun
		for range 3 {
			r := newRun("needs-secret", func(r *agentsv1alpha1.AgentRun) {
				r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"TOKEN": agentsv1alpha1.SecretName(name)}
			})
			create(ctx, c, r)
			runs = append(runs, r)
		}
		img := newRun("needs-image", func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = image })
		create(ctx, c, img)
		for _, r := range runs {
			Expect(waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 90*time.Second).Status.Host).To(Equal(f.Host(2)))
		}
		Expect(waitFor(ctx, c, img, agentsv1alpha1.PhaseSucceeded, 90*time.Second).Status.Host).To(Equal(f.Host(3)))
	})

	It("obeys hostSelector", func(ctx SpecContext) {
		r := newRun("selected", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"host": f.Host(1)}}
		})
		create(ctx, c, r)
		Expect(waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 90*time.Second).Status.Host).To(Equal(f.Host(1)))
	})

	It("keeps a run no host can take Unschedulable with what each host lacks, and starts it within seconds once a host gets the secret", func(ctx SpecContext) {
		name := "later-" + rand.String(4)
		r := newRun("unschedulable", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"TOKEN": agentsv1alpha1.SecretName(name)}
		})
		create(ctx, c, r)
		Eventually(func(g Gomega) {
			got := &agentsv1alpha1.AgentRun{}
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(r), got)).To(Succeed())
			g.Expect(cond(got.Status.Conditions, agentsv1alpha1.ConditionStarted).Reason).To(Equal(agentsv1alpha1.ReasonUnschedulable))
			for _, h := range f.Hosts() {
				g.Expect(got.Status.Message).To(ContainSubstring(h + ": secret(s) " + name))
			}
		}).WithContext(ctx).WithTimeout(60 * time.Second).Should(Succeed())
		secret(f.Host(1), name, "v")
		start := time.Now()
		done := waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
		GinkgoWriter.Printf("Unschedulable run succeeded %s after its secret was created\n", time.Since(start).Round(time.Millisecond))
		Expect(done.Status.Host).To(Equal(f.Host(1)))
	})

	It("spreads 30 unpinned runs over the three hosts of capacity 4, none taking more than half", func(ctx SpecContext) {
		var runs []*agentsv1alpha1.AgentRun
		for range 30 {
			r := newRun("spread", func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"sh", "-c", "sleep 1"} })
			create(ctx, c, r)
			runs = append(runs, r)
		}
		perHost := map[string]int{}
		for _, r := range runs {
			perHost[waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 5*time.Minute).Status.Host]++
		}
		GinkgoWriter.Printf("runs per host: %v\n", perHost)
		for _, h := range f.Hosts() {
			Expect(perHost[h]).To(BeNumerically(">", 0), "host %s took none: %v", h, perHost)
			Expect(perHost[h]).To(BeNumerically("<=", 15), "host %s took more than half: %v", h, perHost)
		}
	})

	It("runs each of 200 unpinned runs in exactly one container per attempt", func(ctx SpecContext) {
		since := time.Now().Add(-time.Second)
		runs := fleet.RaceRuns("race", 200)
		for _, r := range runs {
			create(ctx, c, r)
		}
		uids := map[string]string{}
		for _, r := range runs {
			done := waitFor(ctx, c, r, agentsv1alpha1.PhaseSucceeded, 10*time.Minute)
			Expect(done.Status.Attempts).To(Equal(int32(1)))
			uids[string(done.UID)] = done.Status.Host
		}
		evs, err := f.AllContainerEvents(since)
		Expect(err).NotTo(HaveOccurred())
		creates := map[string][]string{}
		for key, hosts := range fleet.CreatesByAttempt(evs) {
			if _, ours := uids[key.UID]; ours {
				creates[key.UID] = append(creates[key.UID], hosts...)
			}
		}
		for uid, host := range uids {
			Expect(creates[uid]).To(Equal([]string{host}), "run %s ran on %s: create events on %v", uid, host, creates[uid])
		}
	})
})
