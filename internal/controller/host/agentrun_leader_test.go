package host_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

// electedHost is one of several managers started for the same host with
// leader election, as leaderElection.leaderElect runs them (short lease times, to keep
// the test quick).
type electedHost struct {
	mgr  ctrl.Manager
	stop func()
}

func startElectedHost(host string) *electedHost {
	GinkgoHelper()
	opts := controllertest.HostManagerOptions(host)
	opts.LeaderElection = true
	opts.LeaderElectionID = "agentrun-host-" + host
	opts.LeaderElectionNamespace = "default"
	opts.LeaderElectionReleaseOnCancel = true
	opts.LeaseDuration = ptr.To(4 * time.Second)
	opts.RenewDeadline = ptr.To(3 * time.Second)
	opts.RetryPeriod = ptr.To(500 * time.Millisecond)
	mgr, err := ctrl.NewManager(controllertest.Config, opts)
	Expect(err).NotTo(HaveOccurred())
	Expect(controllertest.AddHost(mgr, host, controllertest.Podman, true)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := controllertest.StartManager(ctx, mgr)
	return &electedHost{mgr: mgr, stop: func() { cancel(); <-stopped }}
}

func (h *electedHost) elected() bool {
	select {
	case <-h.mgr.Elected():
		return true
	default:
		return false
	}
}

var _ = Describe("Two managers started for the same host", func() {
	It("run each AgentRun once, and the other takes over when the leader stops", func(ctx SpecContext) {
		const host = "host-elected"
		first, second := startElectedHost(host), startElectedHost(host)
		DeferCleanup(func() { first.stop(); second.stop() })

		var leader, standby *electedHost
		Eventually(func() bool { return first.elected() || second.elected() }).WithTimeout(15 * time.Second).Should(BeTrue())
		leader, standby = first, second
		if second.elected() {
			leader, standby = second, first
		}
		Consistently(standby.elected).WithTimeout(2 * time.Second).Should(BeFalse())

		runOnce := func(prefix string) {
			GinkgoHelper()
			run := controllertest.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
				r.Spec.HostName = host
				r.Spec.Command = []string{"sh", "-c", "sleep 1", "sh"}
			})
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
			Expect(controllertest.RunContainers(ctx, run)).To(HaveLen(1))
		}
		runOnce("elected")

		By("stopping the leader, which releases its lease")
		leader.stop()
		leader.stop = func() {}
		Eventually(standby.elected).WithTimeout(15 * time.Second).Should(BeTrue())
		runOnce("failover")
	})
})
