package host

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/config"
	"github.com/agentrun/agentrun/internal/containerevents"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/egressgate"
	"github.com/agentrun/agentrun/internal/hostagent"
	"github.com/agentrun/agentrun/internal/logserver"
	"github.com/agentrun/agentrun/internal/policy"
	"github.com/agentrun/agentrun/internal/redact"
)

// Where a host keeps sessions by default, and its limits for a session
// copy: those of the configuration file (internal/config says why), for
// suites that leave a setting zero.
const (
	DefaultSessionDir          = config.DefaultSessionDir
	DefaultSessionCopyMaxBytes = config.DefaultSessionCopyMaxBytes
	DefaultSessionCopyMaxFiles = config.DefaultSessionCopyMaxFiles
)

// HostConfig is what one Podman host's reconciler is set up from: the
// manager's configuration file (host section), or a suite's settings.
type HostConfig struct {
	// Host is this host's name: runs pinned to it or claimed by it are its.
	Host string
	// Runtime is the host's container engine.
	Runtime  containers.Runtime
	Defaults Defaults
	// OutputTailBytes bounds status.output.
	OutputTailBytes int
	// ProgressPeriod is how often, at most, a running run's status.output
	// is refreshed with the end of its output so far, masked; it is written
	// only when it changed. Zero leaves status.output to the run's end.
	ProgressPeriod time.Duration
	// DiscardOutput keeps a run's output and its agent result out of status
	// altogether (host.output.capture: false), for hosts where even masked
	// output may not leave the host.
	DiscardOutput bool
	// RecordRuns holds each run the host launches for the fleet's run
	// recorder (RecordFinalizer), and ends a new run whose manifest a
	// deleted run already ran as that run ended (reason AlreadyRan),
	// instead of launching it again. The manager always sets it: whether
	// the fleet writes records, and how long it keeps them, is the fleet's
	// setting alone (fleet.runRecordRetention), which hosts are not told.
	// Suites that run no fleet leave it off.
	RecordRuns bool
	// SessionDir holds the runs' Claude Code state, a directory per
	// session, so that a later run can continue one (spec.continueFrom);
	// empty keeps none. Directories no run refers to go after
	// SessionMinAge, looked for every SessionGCPeriod (defaults 10m, 5m);
	// so do the egress socket directories of runs gone while no manager ran.
	SessionDir                     string
	SessionMinAge, SessionGCPeriod time.Duration
	// SessionCopyMaxBytes and SessionCopyMaxFiles bound the transcripts a
	// run that continues or forks a session copies (defaults 1 GiB and
	// 10,000 files); past them the run fails (SessionTooLarge).
	SessionCopyMaxBytes int64
	SessionCopyMaxFiles int
	// NotifyAttempts is how many times a completion callback is tried, and
	// NotifyRetryBackoff the pause after the first failed try, doubled after
	// each further one (defaults 8 and 5s: about ten minutes in all).
	NotifyAttempts     int
	NotifyRetryBackoff time.Duration
	// NotifyWorkers is how many callbacks are delivered at once (default
	// 4), apart from the reconcile workers; NotifyTimeout bounds one try
	// (default 10s).
	NotifyWorkers int
	NotifyTimeout time.Duration
	// NotifyAllowedCIDRs are the loopback, link-local, private or host's
	// own addresses callbacks may reach nonetheless; any other such
	// destination is refused.
	NotifyAllowedCIDRs []netip.Prefix
	// KeepContainers leaves finished containers for inspection; they are
	// removed when their AgentRun is deleted.
	KeepContainers bool
	// StopGracePeriod is how long a container has after SIGTERM.
	StopGracePeriod time.Duration
	// ResyncPeriod is how often a running run is checked when no Podman
	// event arrives; events normally make this unnecessary.
	ResyncPeriod time.Duration
	// RecheckPeriod is how often a run that waits (for a secret, an image or
	// a free slot) looks again.
	RecheckPeriod time.Duration
	// DefaultTimeout bounds runs that set no spec.timeout.
	DefaultTimeout time.Duration
	// RetryBackoff is the wait before a failed attempt's first retry; it
	// doubles for each further failure, up to MaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// MaxConcurrentRuns caps the runs this host runs at once; 0 means no cap.
	MaxConcurrentRuns int
	// Policy is the hardening and the limits every container gets.
	Policy policy.Policy
	// Workers is how many runs are reconciled at once (at least 1).
	Workers int
	// EventRetryPeriod is the pause before reconnecting a broken Podman
	// event stream.
	EventRetryPeriod time.Duration
	// Clock tells the time; nil means the real clock.
	Clock clock.Clock
	// Labels are the host's PodmanHost labels, which runs' hostSelector
	// matches.
	Labels map[string]string
	// LeaseNamespace holds the host's heartbeat Lease, named after the host
	// (DefaultLeaseNamespace when empty; the zero periods are defaults too).
	LeaseNamespace string
	// HeartbeatPeriod is how often the host renews its Lease and refreshes
	// its PodmanHost; GracePeriod is how long the fleet waits for a renewal
	// before declaring the host lost (the host fences itself past it).
	HeartbeatPeriod, GracePeriod time.Duration
	// LogEndpoint serves the host's runs' output live; nil: none.
	LogEndpoint *LogEndpoint
	// Egress is the host's egress policy: the mode of runs that set
	// neither spec.egress nor spec.podman.network (empty: proxy), the
	// names every proxied run may reach, and the ceiling of those a run
	// may ask for. The PodmanHost publishes it (status.egress), for
	// placement to send runs with spec.egress only where the ceiling
	// covers them.
	Egress agentsv1alpha1.HostEgress
	// EgressProxy is the proxy that proxied runs reach the network through.
	EgressProxy EgressProxy
}

// LogEndpoint is where a host serves its runs' output, over HTTPS.
type LogEndpoint struct {
	// BindAddress is the address it listens on, host:port.
	BindAddress string
	// URL is where clients reach it (https://host:port), published in the
	// PodmanHost with the CA of its certificate.
	URL string
	// CertDir holds its tls.crt and tls.key (and ca.crt); empty: a
	// certificate the host makes for URL's host.
	CertDir string
	// ClientCAFile is the CA bundle that signs the fleet's client
	// certificate: the endpoint serves no one else.
	ClientCAFile string
}

// SetupHost adds one host's reconciler to mgr, with everything it runs with:
// the Podman calls counted, the event source that reports exits, the index
// its capacity checks list by, the agent that keeps the host's PodmanHost and
// heartbeat current and fences it, and the agentrun_runs metric while it
// leads.
// mgr must have been made with CacheOptions.
func SetupHost(mgr ctrl.Manager, cfg HostConfig) (*AgentRunReconciler, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	cfg.LeaseNamespace = cmp.Or(cfg.LeaseNamespace, agentruns.DefaultLeaseNamespace)
	cfg.HeartbeatPeriod = cmp.Or(cfg.HeartbeatPeriod, agentruns.DefaultHeartbeatPeriod)
	cfg.GracePeriod = cmp.Or(cfg.GracePeriod, agentruns.DefaultHostGracePeriod)
	cfg.SessionMinAge = cmp.Or(cfg.SessionMinAge, 10*time.Minute)
	cfg.SessionGCPeriod = cmp.Or(cfg.SessionGCPeriod, 5*time.Minute)
	cfg.SessionCopyMaxBytes = cmp.Or(cfg.SessionCopyMaxBytes, DefaultSessionCopyMaxBytes)
	cfg.SessionCopyMaxFiles = cmp.Or(cfg.SessionCopyMaxFiles, DefaultSessionCopyMaxFiles)
	cfg.NotifyAttempts = cmp.Or(cfg.NotifyAttempts, 8)
	cfg.NotifyRetryBackoff = cmp.Or(cfg.NotifyRetryBackoff, 5*time.Second)
	cfg.NotifyWorkers = cmp.Or(cfg.NotifyWorkers, 4)
	cfg.NotifyTimeout = cmp.Or(cfg.NotifyTimeout, 10*time.Second)
	cfg.Runtime = containers.Instrument(cfg.Runtime)
	events := containerevents.NewSource(cfg.Runtime, cfg.Host, cfg.EventRetryPeriod)
	if err := mgr.Add(events); err != nil {
		return nil, err
	}
	r := &AgentRunReconciler{
		Client:     mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Recorder:   mgr.GetEventRecorder("agentrun-" + cfg.Host),
		HostConfig: cfg,
		Exits:      events,
	}
	if err := r.setupEgress(mgr); err != nil {
		return nil, err
	}
	if err := agentruns.IndexQueues(mgr); err != nil {
		return nil, err
	}
	if err := r.setupCallbacks(mgr); err != nil {
		return nil, err
	}
	var err error
	agent := &hostagent.Agent{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: r.Recorder, Runtime: cfg.Runtime,
		Host: cfg.Host, Labels: cfg.Labels, LeaseNamespace: cfg.LeaseNamespace,
		Capacity: cfg.MaxConcurrentRuns, DefaultImage: cfg.Defaults.Image, Egress: &cfg.Egress,
		Policy:          cfg.Policy.Published(cfg.keepsSessions()),
		HeartbeatPeriod: cfg.HeartbeatPeriod, GracePeriod: cfg.GracePeriod, StopGracePeriod: cfg.StopGracePeriod,
		Running: r.running, Released: func(key types.NamespacedName) { r.forget(context.Background(), key) },
		Clock: cfg.Clock,
	}
	if cfg.LogEndpoint != nil {
		r.logReaders = &logserver.Readers{}
		if agent.LogCABundle, err = setupLogEndpoint(mgr, cfg, r.logReaders, r.progress.held); err != nil {
			return nil, fmt.Errorf("setting up the log endpoint: %w", err)
		}
		agent.LogEndpoint = cfg.LogEndpoint.URL
	}
	if err := mgr.Add(agent); err != nil {
		return nil, err
	}
	if err := mgr.Add(agent.Heartbeat()); err != nil {
		return nil, err
	}
	r.admission = agent.Admission
	if cfg.SessionDir != "" || r.egress.gate != nil {
		if err := mgr.Add(manager.RunnableFunc(r.collector)); err != nil {
			return nil, err
		}
	}
	if err := r.SetupWithManager(mgr, events.Requests()); err != nil {
		return nil, err
	}
	if progress := r.progressReconciler(); progress != nil {
		if err := progress.SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}
	if err := mgr.Add(registeredWhileLeading{NewRunsCollector(mgr.GetClient(), cfg.Host)}); err != nil {
		return nil, err
	}
	return r, nil
}

// setupEgress opens the host's egress socket directory, whose runs' sockets
// are served while the manager leads the host and stop with it: a run's
// network is closed while no manager serves it, never open.
func (r *AgentRunReconciler) setupEgress(mgr ctrl.Manager) error {
	r.egress = egressRuns{host: r.Host, recorder: r.Recorder, clock: r.Clock}
	if r.EgressProxy.SocketDir == "" {
		return nil
	}
	roots, err := egressgate.SystemRoots(r.EgressProxy.UpstreamCAFile)
	if err != nil {
		return err
	}
	gate, err := egressgate.New(r.EgressProxy.SocketDir, r.EgressProxy.Proxy, roots)
	if err != nil {
		return err
	}
	r.egress.gate = gate
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return gate.Close()
	}))
}

// setupLogEndpoint adds the host's log endpoint to mgr and returns the CA
// bundle the fleet verifies it with. It serves the fleet alone (a client
// certificate from ClientCAFile): users reach it through the fleet's
// aggregated API, so no user's credential reaches the host.
func setupLogEndpoint(mgr ctrl.Manager, cfg HostConfig, readers *logserver.Readers, held func(types.NamespacedName, string) *redact.Redactor) ([]byte, error) {
	endpoint, err := url.Parse(cfg.LogEndpoint.URL)
	if err != nil || endpoint.Scheme != "https" || endpoint.Hostname() == "" {
		return nil, fmt.Errorf("the endpoint's URL %q is not https://HOST:PORT", cfg.LogEndpoint.URL)
	}
	fleet, err := logserver.ReadClientCAs(cfg.LogEndpoint.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("the fleet's client CA: %w", err)
	}
	cert, ca, err := logserver.ServingCertificate(cfg.LogEndpoint.CertDir, endpoint.Hostname())
	if err != nil {
		return nil, fmt.Errorf("the serving certificate: %w", err)
	}
	srv := &logserver.Server{Host: cfg.Host, Runtime: cfg.Runtime, Reader: cacheThenAPI{mgr.GetClient(), mgr.GetAPIReader()},
		Readers: readers, Held: held, Log: mgr.GetLogger().WithName("logs")}
	return ca, mgr.Add(&logserver.Endpoint{BindAddress: cfg.LogEndpoint.BindAddress, Certificate: cert, ClientCAs: fleet, Handler: srv.Handler()})
}

// cacheThenAPI reads from the cache, and from the API server what the cache
// does not hold: a run this host released is out of its cache, and a log
// request for it must find it, to answer that its container is gone (the
// client then shows status.output), not that it does not exist.
type cacheThenAPI struct {
	client.Reader
	api client.Reader
}

func (r cacheThenAPI) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.Reader.Get(ctx, key, obj, opts...)
	if apierrors.IsNotFound(err) {
		return r.api.Get(ctx, key, obj, opts...)
	}
	return err
}

// registeredWhileLeading serves a collector on the manager's /metrics while
// the manager leads its host, so a stopped or standby manager of the same
// host in one process never reports the host's runs twice.
type registeredWhileLeading struct{ *RunsCollector }

func (c registeredWhileLeading) Start(ctx context.Context) error {
	if err := metrics.Registry.Register(c.RunsCollector); err != nil {
		return fmt.Errorf("registering the agentrun_runs metric: %w", err)
	}
	<-ctx.Done()
	metrics.Registry.Unregister(c.RunsCollector)
	return nil
}
