package fleet_test

import (
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// gracePeriod is how long the suite's fleet waits for a host's heartbeat
// (renewed every 2 s) before it declares the host lost: short, so that the
// failover specs take seconds, and five heartbeats long, so that a loaded
// machine does not lose hosts that are fine.
const gracePeriod = 10 * time.Second

// The suite's fleet has names and addresses of its own, so that it runs
// beside a fleet make up HOSTS=3 started (local-N, 10.203.0.0/16).
var opts = fleet.Options{Hosts: 3, HostPrefix: "smoke", Net: "10.204",
	ManagerConfig: &configv1alpha1.Configuration{Host: configv1alpha1.HostConfiguration{
		Heartbeat: configv1alpha1.HeartbeatConfiguration{Period: &metav1.Duration{Duration: 2 * time.Second}, GracePeriod: &metav1.Duration{Duration: gracePeriod}},
	}}}

var f *fleet.Fleet

func TestFleet(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "local fleet suite (hack/local-stack.sh, 3 hosts)")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter)))
	dir, err := os.MkdirTemp("", "agentrun-fleet-")
	Expect(err).NotTo(HaveOccurred())
	o := opts
	o.StateDir = dir
	f, err = fleet.New(o)
	Expect(err).NotTo(HaveOccurred())
	// Registered before up: a fleet that came up halfway is brought down too.
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			f.PrintLogs(GinkgoWriter, 4000)
		}
		Expect(f.Down()).To(Succeed())
		Expect(os.RemoveAll(dir)).To(Succeed())
	})
	Expect(f.Up()).To(Succeed())
})
