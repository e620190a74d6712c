// Package agent runs the real Claude Code CLI end to end: the reconciler
// launches the image hack/agent-image.sh builds, with its default command, on
// the machine's Podman, and the CLI talks to a stand-in for the Anthropic
// Messages API that the suite serves on loopback.
package agent

import (
	"context"
	"os"
	"testing"
	"time"

	"net/netip"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/agentimage"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/fleet"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/netguard"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/testing/internet"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

const (
	// hostName keeps this suite's containers apart from other suites'
	// on the shared Podman.
	hostName = "agent-suite"
	// agentImage is what hack/agent-image.sh builds and the manager's
	// host.runs.defaultImage.
	agentImage = agentimage.Image
)

// agentCommand is the manager's host.runs.defaultCommand.
var agentCommand = []string{"claude", "-p", "--output-format", "json", "--"}

// sessionMinAge is how long the host leaves a session directory no run
// refers to: short, so a spec sees it go, and still longer than a launch
// takes to record the directory it made.
const sessionMinAge = 5 * time.Second

var (
	env       *envtest.Environment
	k8s       client.Client
	cancelMgr context.CancelFunc
	// sessionDir is the host's host.sessions.dir.
	sessionDir string
	// inet is the simulated internet the host's egress proxy resolves
	// names in and reaches; nil when not run as root.
	inet *internet.Internet
)

func TestAgent(t *testing.T) {
	// Made here, not in BeforeSuite: it lives as long as t.
	if os.Geteuid() == 0 {
		simulateInternet(t)
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "Claude Code agent suite (envtest + Podman "+testenv.PodmanVersion()+" + the real CLI)")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(agentsv1alpha1.AddToScheme(scheme)).To(Succeed())

	rt := podman.New(testenv.PodmanSocket())
	Expect(rt.Ping(ctx)).To(Succeed(), "the Podman API service must answer on %s: run hack/podman-setup.sh", testenv.PodmanSocket())
	Expect(rt.ImageExists(ctx, agentImage)).To(BeTrue(), "%s is not in Podman's storage: build it with `make agent-image`", agentImage)

	var err error
	env, err = testenv.New(false)
	Expect(err).NotTo(HaveOccurred())
	cfg, err := testenv.Start(env)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// The agent reaches the Messages API stand-in on the host's loopback:
	// this host lists the host network, which hosts do not by default.
	agentPolicy := testenv.Policy()
	agentPolicy.AllowedNetworks = append(agentPolicy.AllowedNetworks, "host")

	// The host's Claude sessions, on a path the Podman 5 service sees too.
	sessionDir, err = os.MkdirTemp("/tmp", "agentrun-agent-sessions-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = os.RemoveAll(sessionDir) })

	// The host's egress proxy, whose internet is the simulated one (its
	// addresses are allowed although netguard refuses 198.18.0.0/15), and
	// the forwarder and the runs' sockets where either Podman sees them.
	hostEgress := agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy, Default: []string{"api.anthropic.com"}, Permitted: []string{"*.test", "api.github.com", "github.com"}}
	var proxy host.EgressProxy
	if inet != nil {
		egressDir, err := os.MkdirTemp("/tmp", "agentrun-agent-egress-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, egressDir)
		Expect(os.Chmod(egressDir, 0o755)).To(Succeed())
		forwarder, err := testenv.Forwarder()
		Expect(err).NotTo(HaveOccurred())
		proxy = host.EgressProxy{SocketDir: egressDir + "/sockets", Forwarder: forwarder, Proxy: egress.Config{
			Resolver:     inet.Resolver(),
			Destinations: netguard.Destinations{Allowed: []netip.Prefix{inet.Prefix()}},
		},
			// The internet's sites, api.github.com among them, have
			// certificates from its CA, which the proxy and credentialed
			// runs trust as a host trusts the public CAs; the bundle goes
			// where the agent image's system bundle is.
			UpstreamCAFile: inet.CAFile(),
			CABundlePaths:  []string{"/etc/ssl/certs/ca-certificates.crt"},
		}
	}

	// One host's manager, set up as the manager binary sets it up.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   agentruns.CacheOptions(),
	})
	Expect(err).NotTo(HaveOccurred())
	// The fleet's controllers too, as --mode=all runs them: the run is
	// placed on this host once its PodmanHost lists the run's secret.
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentruns.DefaultLeaseNamespace}})).To(Succeed())
	Expect(fleet.SetupFleet(mgr, fleet.FleetConfig{})).To(Succeed())
	_, err = host.SetupHost(mgr, host.HostConfig{
		HeartbeatPeriod: time.Second,
		Host:            hostName,
		Runtime:         rt,
		Defaults:        host.Defaults{Image: agentImage, Command: agentCommand},
		OutputTailBytes: 4096,
		StopGracePeriod: 5 * time.Second,
		ResyncPeriod:    time.Minute,
		RecheckPeriod:   time.Second,
		// A CLI that hangs ends the run well within the spec's wait.
		DefaultTimeout:   2 * time.Minute,
		RetryBackoff:     time.Second,
		MaxRetryBackoff:  time.Second,
		Policy:           agentPolicy,
		Workers:          2,
		EventRetryPeriod: time.Second,
		SessionDir:       sessionDir,
		SessionMinAge:    sessionMinAge,
		SessionGCPeriod:  time.Second,
		Egress:           hostEgress,
		EgressProxy:      proxy,
	})
	Expect(err).NotTo(HaveOccurred())

	var mgrCtx context.Context
	mgrCtx, cancelMgr = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(mgrCtx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	if cancelMgr != nil {
		cancelMgr()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
