package controllers_test

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
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
	"github.com/agentrun/agentrun/controllers"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/testenv"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// The suite runs the reconcilers of two simulated Podman hosts against a real
// kube-apiserver (with the validating webhook) and the machine's real Podman
// API service. Both hosts share the one Podman; each only touches containers
// labelled with its own host name.
const (
	hostA     = "host-a"
	hostB     = "host-b"
	testImage = "localhost/agentrun-test:latest"
	// The hosts renew their heartbeat every second, and the fleet declares
	// a host lost after hostGracePeriod without one.
	leaseNamespace  = "agentrun-system"
	heartbeatPeriod = time.Second
	hostGracePeriod = 6 * time.Second
)

var (
	env         *envtest.Environment
	cfg         *rest.Config
	scheme      = runtime.NewScheme()
	k8s         client.Client
	rt          *podman.Runtime
	cancelAll   context.CancelFunc
	managerLogs = &testenv.SyncBuffer{}
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "AgentRun controller suite (envtest + Podman "+testenv.PodmanVersion()+")")
}

var _ = BeforeSuite(func() {
	// Debug-level logs of every manager, kept to check that no secret value
	// reaches them.
	logf.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(GinkgoWriter, managerLogs)), zap.UseDevMode(true)))
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(agentsv1alpha1.AddToScheme(scheme)).To(Succeed())

	rt = podman.New(testenv.PodmanSocket())
	Expect(rt.Ping(context.Background())).To(Succeed(), "the Podman API service must answer on %s: run hack/podman-setup.sh", testenv.PodmanSocket())
	Expect(rt.ImageExists(context.Background(), testImage)).To(BeTrue(), "the test image is built by hack/podman-setup.sh")

	var err error
	env, err = testenv.New(true)
	Expect(err).NotTo(HaveOccurred())
	cfg, err = env.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	var ctx context.Context
	ctx, cancelAll = context.WithCancel(context.Background())

	webhookMgrOpts := testenv.ManagerOptions(env, scheme)
	webhookMgrOpts.Cache = controllers.CacheOptions()
	webhookMgr, err := ctrl.NewManager(cfg, webhookMgrOpts)
	Expect(err).NotTo(HaveOccurred())
	Expect(webhookv1alpha1.SetupAgentRunWebhookWithManager(webhookMgr)).To(Succeed())
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: leaseNamespace}})).To(Succeed())
	Expect(controllers.SetupFleet(webhookMgr, controllers.FleetConfig{
		LeaseNamespace: leaseNamespace, GracePeriod: hostGracePeriod, RecheckPeriod: time.Minute,
		RunRecordRetention: time.Hour,
	})).To(Succeed())
	Expect(addHost(webhookMgr, hostA, rt, true)).To(Succeed())
	startManager(ctx, webhookMgr)
	Expect(testenv.WaitForWebhookServer(env, 20*time.Second)).To(Succeed())

	hostBMgr := newHostManager()
	Expect(addHost(hostBMgr, hostB, rt, true)).To(Succeed())
	startManager(ctx, hostBMgr)
})

var _ = AfterSuite(func() {
	if cancelAll != nil {
		cancelAll()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// hostManagerOptions are the options of a manager for one more simulated
// host, without the webhook, caching AgentRuns as the manager binary does.
func hostManagerOptions() ctrl.Options {
	return ctrl.Options{
		Scheme:     scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache:      controllers.CacheOptions(),
	}
}

// newHostManager is a manager for one more simulated host.
func newHostManager() ctrl.Manager {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(cfg, hostManagerOptions())
	Expect(err).NotTo(HaveOccurred())
	return mgr
}

// startManager starts mgr until ctx ends; the returned channel closes once
// it has stopped.
func startManager(ctx context.Context, mgr ctrl.Manager) <-chan struct{} {
	stopped := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(stopped)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	return stopped
}

// startHost runs one more host's manager until the returned stop function
// is called; stop returns once the manager has stopped.
func startHost(host string, runtime containers.Runtime, keepContainers bool) (stop func()) {
	GinkgoHelper()
	return startHostWith(host, runtime, keepContainers, 0)
}

// startHostWith is startHost with a cap on concurrent runs.
func startHostWith(host string, runtime containers.Runtime, keepContainers bool, maxRuns int) (stop func()) {
	GinkgoHelper()
	return startHostConfig(hostConfig(host, runtime, keepContainers, maxRuns))
}

// startHostConfig runs one more host's manager, set up from cfg, until the
// returned stop function is called; stop returns once the manager stopped.
func startHostConfig(cfg controllers.HostConfig) (stop func()) {
	GinkgoHelper()
	mgr := newHostManager()
	_, err := controllers.SetupHost(mgr, cfg)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := startManager(ctx, mgr)
	return func() {
		cancel()
		<-stopped
	}
}

// addHost sets up the reconciler of one host as the manager binary does.
// Hosts A and B keep finished containers so tests can count them.
func addHost(mgr ctrl.Manager, host string, runtime containers.Runtime, keepContainers bool) error {
	_, err := controllers.SetupHost(mgr, hostConfig(host, runtime, keepContainers, 0))
	return err
}

// hostConfig is a host's configuration in this suite: quick rechecks and
// heartbeats, and exits seen through Podman's events only.
func hostConfig(host string, runtime containers.Runtime, keepContainers bool, maxRuns int) controllers.HostConfig {
	return controllers.HostConfig{
		Host:               host,
		Runtime:            recordingCreates{Runtime: runtime, host: host},
		Defaults:           controllers.Defaults{Image: testImage, Command: []string{"sh", "-c", `echo "agent got: $1"`, "agent"}},
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
		LeaseNamespace:     leaseNamespace,
		HeartbeatPeriod:    heartbeatPeriod,
		GracePeriod:        hostGracePeriod,
		RunRecordRetention: time.Hour,
		NotifyAttempts:     4,
		NotifyRetryBackoff: 200 * time.Millisecond,
		NotifyAllowedCIDRs: receiversNetwork, // the receivers listen on loopback
	}
}

// hostCreates are the container creates each simulated host asked for, by
// container name. The hosts share one Podman, where a second create of a
// run's container fails on its name and the host then adopts the first: the
// containers alone never show a run launched twice, the hosts' calls do.
var hostCreates = &createLog{hosts: map[string][]string{}}

type createLog struct {
	mu    sync.Mutex
	hosts map[string][]string
}

// of are the hosts that asked to create the container, once per call.
func (l *createLog) of(container string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts[container])
}

// withPrefix is how many creates of containers named with prefix the hosts
// asked for.
func (l *createLog) withPrefix(prefix string) int {
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

// recordingCreates is a host's runtime that notes its creates in hostCreates.
type recordingCreates struct {
	containers.Runtime
	host string
}

func (r recordingCreates) Create(ctx context.Context, spec containers.Spec) (string, error) {
	hostCreates.mu.Lock()
	hostCreates.hosts[spec.Name] = append(hostCreates.hosts[spec.Name], r.host)
	hostCreates.mu.Unlock()
	return r.Runtime.Create(ctx, spec)
}
