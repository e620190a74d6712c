// Package controllertest is the envtest and Podman harness that the host's and
// the fleet's suites share (internal/controller/host, internal/controller/fleet):
// a real kube-apiserver with the validating webhook, the fleet's controllers,
// and two simulated Podman hosts on the machine's real Podman API service, set
// up as the manager binary sets them up. Tests only: product code never
// imports it (make lint-imports).
package controllertest

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/fleet"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/kueueapi"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/testing/kueuetest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// A suite runs the reconcilers of two simulated Podman hosts against a real
// kube-apiserver (with the validating webhook) and the machine's real Podman
// API service. Both hosts share the one Podman; each only touches containers
// labelled with its own host name.
const (
	Image = "localhost/agentrun-test:latest"
	// The hosts renew their heartbeat every second, and the fleet declares
	// a host lost after HostGracePeriod without one.
	LeaseNamespace  = "agentrun-system"
	HeartbeatPeriod = time.Second
	HostGracePeriod = 6 * time.Second
)

// HostA and HostB are the suite's two hosts, named by Start after the suite:
// go test runs the host's and the fleet's suites at once on the machine's one
// Podman, and a host touches only the containers labelled with its name.
var HostA, HostB string

var (
	env         *envtest.Environment
	Config      *rest.Config
	Scheme      = runtime.NewScheme()
	K8s         client.WithWatch
	Podman      *podman.Runtime
	cancelAll   context.CancelFunc
	stopAll     []func()
	ManagerLogs = &testenv.SyncBuffer{}
	// KueueLogs is the log of Kueue's manager, when the suite runs it.
	KueueLogs = &testenv.SyncBuffer{}
)

// Options are what a suite runs beside the fleet and the two hosts.
type Options struct {
	// Kueue runs Kueue's own manager (internal/testing/kueuetest), and the
	// fleet's Kueue integration (FleetConfig.Kueue).
	Kueue bool
}

// Start starts the API server, the webhook's manager with the fleet and host
// A, and host B's manager: a suite's BeforeSuite. suite names the hosts.
func Start(suite string) { StartWith(suite, Options{}) }

// StartWith is Start with what opts add.
func StartWith(suite string, opts Options) {
	HostA, HostB = suite+"-host-a", suite+"-host-b"
	// Debug-level logs of every manager, kept to check that no secret value
	// reaches them.
	logf.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(GinkgoWriter, ManagerLogs)), zap.UseDevMode(true)))
	Expect(clientgoscheme.AddToScheme(Scheme)).To(Succeed())
	Expect(agentsv1alpha1.AddToScheme(Scheme)).To(Succeed())

	Podman = podman.New(testenv.PodmanSocket())
	Expect(Podman.Ping(context.Background())).To(Succeed(), "the Podman API service must answer on %s: run hack/podman-setup.sh", testenv.PodmanSocket())
	Expect(Podman.ImageExists(context.Background(), Image)).To(BeTrue(), "the test image is built by hack/podman-setup.sh")

	var err error
	env, err = testenv.New(true)
	Expect(err).NotTo(HaveOccurred())
	var kueue *kueuetest.Kueue
	if opts.Kueue {
		Expect(kueueapi.AddToScheme(Scheme)).To(Succeed())
		kueue, err = kueuetest.Build(GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
	}
	Config, err = testenv.Start(env)
	Expect(err).NotTo(HaveOccurred())
	K8s, err = client.NewWithWatch(Config, client.Options{Scheme: Scheme})
	Expect(err).NotTo(HaveOccurred())

	var ctx context.Context
	ctx, cancelAll = context.WithCancel(context.Background())
	if kueue != nil {
		Expect(kueue.Install(ctx, Config, K8s)).To(Succeed())
		stopKueue, err := kueue.Start(ctx, Config, K8s, GinkgoT().TempDir(), KueueLogs)
		Expect(err).NotTo(HaveOccurred(), "Kueue's manager; its log:\n%s", KueueLogs)
		stopAll = append(stopAll, stopKueue)
	}

	webhookMgrOpts := testenv.ManagerOptions(env, Scheme)
	webhookMgrOpts.Cache = agentruns.CacheOptions()
	webhookMgr, err := ctrl.NewManager(Config, webhookMgrOpts)
	Expect(err).NotTo(HaveOccurred())
	Expect(webhookv1alpha1.SetupAgentRunWebhookWithManager(webhookMgr)).To(Succeed())
	Expect(K8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: LeaseNamespace}})).To(Succeed())
	Expect(fleet.SetupFleet(webhookMgr, fleet.FleetConfig{
		LeaseNamespace: LeaseNamespace, GracePeriod: HostGracePeriod, RecheckPeriod: time.Minute,
		RunRecordRetention: time.Hour, Kueue: opts.Kueue,
	})).To(Succeed())
	Expect(AddHost(webhookMgr, HostA, Podman, true)).To(Succeed())
	StartManager(ctx, webhookMgr)
	Expect(testenv.WaitForWebhookServer(env, 20*time.Second)).To(Succeed())

	hostBMgr := NewHostManager(HostB)
	Expect(AddHost(hostBMgr, HostB, Podman, true)).To(Succeed())
	StartManager(ctx, hostBMgr)
}

// Stop stops what Start started: a suite's AfterSuite.
func Stop() {
	if cancelAll != nil {
		cancelAll()
	}
	for _, stop := range stopAll {
		stop()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
	_ = os.RemoveAll(egressDir())
}

// HostManagerOptions are the options of a manager for one more simulated
// host, without the webhook, caching AgentRuns as the manager binary does in
// --mode=host (the host's own, unreleased).
func HostManagerOptions(host string) ctrl.Options {
	opts := ctrl.Options{
		Scheme:     Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	agentruns.UseHostCache(&opts, host)
	return opts
}

// NewHostManager is a manager for one more simulated host.
func NewHostManager(host string) ctrl.Manager {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(Config, HostManagerOptions(host))
	Expect(err).NotTo(HaveOccurred())
	return mgr
}

// StartManager starts mgr until ctx ends; the returned channel closes once
// it has stopped.
func StartManager(ctx context.Context, mgr ctrl.Manager) <-chan struct{} {
	stopped := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(stopped)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	return stopped
}

// StartHost runs one more host's manager until the returned stop function
// is called; stop returns once the manager has stopped.
func StartHost(name string, runtime containers.Runtime, keepContainers bool) (stop func()) {
	GinkgoHelper()
	return StartHostWith(name, runtime, keepContainers, 0)
}

// StartHostWith is StartHost with a cap on concurrent runs.
func StartHostWith(name string, runtime containers.Runtime, keepContainers bool, maxRuns int) (stop func()) {
	GinkgoHelper()
	return StartHostConfig(HostConfig(name, runtime, keepContainers, maxRuns))
}

// StartHostConfig runs one more host's manager, set up from cfg, until the
// returned stop function is called; stop returns once the manager stopped.
func StartHostConfig(cfg host.HostConfig) (stop func()) {
	GinkgoHelper()
	_, stop = StartHostManager(cfg)
	return stop
}

// StartHostManager is StartHostConfig that also returns the host's manager,
// whose cache a test can read.
func StartHostManager(cfg host.HostConfig) (ctrl.Manager, func()) {
	GinkgoHelper()
	mgr := NewHostManager(cfg.Host)
	_, err := host.SetupHost(mgr, cfg)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := StartManager(ctx, mgr)
	return mgr, func() {
		cancel()
		<-stopped
	}
}

// AddHost sets up the reconciler of one host as the manager binary does.
// Hosts A and B keep finished containers so tests can count them.
func AddHost(mgr ctrl.Manager, name string, runtime containers.Runtime, keepContainers bool) error {
	_, err := host.SetupHost(mgr, HostConfig(name, runtime, keepContainers, 0))
	return err
}

// HostConfig is a host's configuration in this suite: quick rechecks and
// heartbeats, and exits seen through Podman's events only.
func HostConfig(name string, runtime containers.Runtime, keepContainers bool, maxRuns int) host.HostConfig {
	return host.HostConfig{
		Host:               name,
		Runtime:            recordingCreates{Runtime: runtime, host: name},
		Defaults:           host.Defaults{Image: Image, Command: []string{"sh", "-c", `echo "agent got: $1"`, "agent"}},
		OutputTailBytes:    4096,
		KeepContainers:     keepContainers,
		StopGracePeriod:    5 * time.Second,
		ResyncPeriod:       time.Hour, // completion must come from Podman's events
		RecheckPeriod:      time.Second,
		DefaultTimeout:     time.Hour,
		RetryBackoff:       time.Second,
		MaxRetryBackoff:    time.Second,
		MaxConcurrentRuns:  maxRuns,
		Policy:             testenv.Policy(),
		Workers:            4,
		EventRetryPeriod:   time.Second,
		LeaseNamespace:     LeaseNamespace,
		HeartbeatPeriod:    HeartbeatPeriod,
		GracePeriod:        HostGracePeriod,
		RecordRuns:         true,
		NotifyAttempts:     4,
		NotifyRetryBackoff: 200 * time.Millisecond,
		NotifyAllowedCIDRs: ReceiversNetwork, // the receivers listen on loopback
		// The product's default: runs that ask for no network go through
		// the proxy, which lets them reach nothing here.
		Egress:      agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy},
		EgressProxy: EgressProxy(name),
	}
}

// egressDir holds the suite's hosts' egress socket directories, under /tmp
// (Podman 5 sees no other directory of the machine's but /home and the
// checkout) and short: a socket's path has at most 107 bytes.
var egressDir = sync.OnceValue(func() string {
	dir, err := os.MkdirTemp("/tmp", "egress-")
	Expect(err).NotTo(HaveOccurred())
	return dir
})

// EgressProxy is the egress proxy of the suite's host name: the forwarder
// built from the checkout and a socket directory of the host's own.
func EgressProxy(name string) host.EgressProxy {
	GinkgoHelper()
	forwarder, err := testenv.Forwarder()
	Expect(err).NotTo(HaveOccurred())
	return host.EgressProxy{SocketDir: filepath.Join(egressDir(), name), Forwarder: forwarder}
}

// HostCreates are the container creates each simulated host asked for, by
// container name. The hosts share one Podman, where a second create of a
// run's container fails on its name and the host then adopts the first: the
// containers alone never show a run launched twice, the hosts' calls do.
var HostCreates = &createLog{hosts: map[string][]string{}}

type createLog struct {
	mu    sync.Mutex
	hosts map[string][]string
}

// Of are the hosts that asked to create the container, once per call.
func (l *createLog) Of(container string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts[container])
}

// WithPrefix is how many creates of containers named with prefix the hosts
// asked for.
func (l *createLog) WithPrefix(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for name, hosts := range l.hosts {
		if strings.HasPrefix(name, prefix) {
			n += len(hosts)
		}
	}
	return n
}

// recordingCreates is a host's runtime that notes its creates in HostCreates.
type recordingCreates struct {
	containers.Runtime
	host string
}

func (r recordingCreates) Create(ctx context.Context, spec containers.Spec) (string, error) {
	HostCreates.mu.Lock()
	HostCreates.hosts[spec.Name] = append(HostCreates.hosts[spec.Name], r.host)
	HostCreates.mu.Unlock()
	return r.Runtime.Create(ctx, spec)
}

// ReceiversNetwork is where the suite's receivers listen: the loopback, which
// the suite's hosts allow callbacks to reach (a host refuses it by default).
var ReceiversNetwork = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
