package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/leaderelection"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/agentrun/agentrun/internal/agentimage"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/fleet"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/policy"
)

// What one manager process does, as a comma-separated --mode. The webhook
// and the fleet (placement and host lifecycle) are cluster-wide services, run
// by the in-cluster Deployment; a host's reconciler runs on each Podman host.
// all is the three in one process, for a single host.
const (
	modeAll     = "all"
	modeWebhook = "webhook"
	modeFleet   = "fleet"
	modeHost    = "host"
	// modeReconciler is the name host had before the fleet existed.
	modeReconciler = "reconciler"
)

// options are the manager's command-line settings.
type options struct {
	mode                 string
	podmanSocket         string
	hostName             string
	defaultImage         string
	defaultCommand       string
	outputTailBytes      int
	progressPeriod       time.Duration
	keepContainers       bool
	stopGracePeriod      time.Duration
	resyncPeriod         time.Duration
	recheckPeriod        time.Duration
	metricsAddr          string
	pprofAddr            string
	probeAddr            string
	leaderElect          bool
	leaderElectNamespace string
	leaseDuration        time.Duration
	renewDeadline        time.Duration
	retryPeriod          time.Duration
	webhookHost          string
	webhookPort          int
	webhookCertDir       string

	defaultTimeout        time.Duration
	retryBackoff          time.Duration
	maxRetryBackoff       time.Duration
	maxConcurrentRuns     int
	allowedVolumePaths    string
	blockedContainerPaths string
	allowedImages         string
	defaultMemory         string
	containerLogMaxSize   string
	maxMemory             string
	defaultCPUs           string
	maxCPUs               string
	pidsLimit             int64
	capabilities          string
	workers               int
	captureOutput         bool
	allowVolumeRelabel    bool
	allowedNetworks       string
	containerUser         string
	userNS                string
	podmanCallTimeout     time.Duration
	hostLabels            string
	leaseNamespace        string
	heartbeatPeriod       time.Duration
	hostGracePeriod       time.Duration
	pinnedRunsWait        bool
	runRecordRetention    time.Duration
	sessionDir            string
	sessionCopyMaxBytes   int64
	sessionCopyMaxFiles   int
	logsBindAddress       string
	logsURL               string
	logsCertDir           string
	notifyAllowedCIDRs    string
	logsClientCAFile      string
	logsAPIBindAddress    string
	logsAPICertDir        string
	logsClientCertDir     string
}

// parseOptions reads the flags in args; hostname supplies the default host
// name.
func parseOptions(fs *flag.FlagSet, args []string, hostname func() (string, error)) (*options, error) {
	o := &options{}
	defaultHost, _ := hostname()
	// Host names are object names (the PodmanHost, the Lease), so lower
	// case, as the kubelet lower-cases a machine's name for its Node.
	defaultHost = strings.ToLower(defaultHost)
	fs.StringVar(&o.mode, "mode", modeAll, "what this process does, comma-separated: webhook (serve the validating webhook), fleet (place runs on hosts and declare hosts lost; once per cluster), host (run AgentRuns on this Podman host; reconciler is an alias); all is the three")
	fs.StringVar(&o.podmanSocket, "podman-socket", "/run/podman/podman.sock", "path of the rootful Podman API service's Unix socket")
	fs.StringVar(&o.hostName, "host-name", defaultHost, "this Podman host's name: runs pinned to it (spec.hostName) or claimed by it are run here")
	fs.StringVar(&o.defaultImage, "default-image", agentimage.Image, "image for runs that set no spec.image (make agent-image builds it)")
	fs.StringVar(&o.defaultCommand, "default-command", "claude -p --output-format json --", "command, split on spaces, for runs that set no spec.command; the prompt is appended (after --, so a prompt that starts with - is not read as a flag)")
	fs.IntVar(&o.outputTailBytes, "output-tail-bytes", 4096, "how many bytes of the end of a run's output are kept in status.output (at most 65536)")
	fs.DurationVar(&o.progressPeriod, "progress-period", 10*time.Second, "how often, at most, a running run's status.output is refreshed with its output so far (masked), written only when it changed; 0 leaves status.output to the run's end")
	fs.BoolVar(&o.keepContainers, "keep-containers", false, "keep finished containers for inspection (they are removed when their AgentRun is deleted)")
	fs.DurationVar(&o.stopGracePeriod, "stop-grace-period", 10*time.Second, "how long a container has after SIGTERM before SIGKILL")
	fs.DurationVar(&o.resyncPeriod, "resync-period", time.Minute, "how often a running run is checked when no Podman event arrives")
	fs.DurationVar(&o.recheckPeriod, "recheck-period", 3*time.Second, "how often a run that waits (for a missing secret or image, or a free slot) looks again")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "127.0.0.1:8080", "address of the metrics endpoint; 0 disables it")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "", "address of Go's profiling endpoints (/debug/pprof/), for make bench's heap profile; empty disables them")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", "127.0.0.1:8081", "address of the health and readiness probes")
	// On by default: two managers started for one host without it would
	// each count the host's slots and launch runs on their own.
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader among managers for the same host (or among the fleet's replicas), so only one acts; false only when a single manager can ever run")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a standby waits, after the leader's last renewal, before it takes over (a crashed leader's successor waits this long; a stopped leader releases its lease at once)")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader tries to renew its lease before it stops leading")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire or renew the lease")
	fs.StringVar(&o.leaderElectNamespace, "leader-election-namespace", "", "namespace of the leader election lease; required outside a cluster")
	fs.StringVar(&o.webhookHost, "webhook-host", "", "address the webhook server binds (empty: all)")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the webhook server")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "", "directory holding tls.crt and tls.key for the webhook server (default: controller-runtime's)")
	fs.DurationVar(&o.defaultTimeout, "default-timeout", 30*time.Minute, "timeout of runs that set no spec.timeout")
	fs.DurationVar(&o.retryBackoff, "retry-backoff", 10*time.Second, "wait before retrying a failed attempt; doubles with each further failure")
	fs.DurationVar(&o.maxRetryBackoff, "max-retry-backoff", 5*time.Minute, "the longest wait before a retry")
	fs.IntVar(&o.maxConcurrentRuns, "max-concurrent-runs", 4, "how many runs this host runs at once (0: no cap); others wait, in creation order")
	fs.StringVar(&o.allowedVolumePaths, "allowed-volume-paths", "", "comma-separated host directories volumes may come from; empty: runs may mount no host path")
	fs.BoolVar(&o.allowVolumeRelabel, "allow-volume-relabel", false, "let volumes use the options U (chown host files) and z/Z (SELinux relabel)")
	fs.StringVar(&o.allowedNetworks, "allowed-networks", strings.Join(policy.DefaultNetworks, ","), "comma-separated networks (or modes) runs may ask for; add host only to give runs the host's network")
	fs.StringVar(&o.containerUser, "container-user", policy.DefaultUser, "user:group every container runs as")
	fs.StringVar(&o.userNS, "userns", "", "user namespace mode of every container (for example auto, which needs /etc/subuid and /etc/subgid entries); empty: Podman's default")
	fs.StringVar(&o.blockedContainerPaths, "blocked-container-paths", "/proc,/sys,/dev,/etc,/usr,/bin,/sbin,/lib,/lib64,/boot,/run/secrets",
		"comma-separated container paths volumes may not mount over")
	fs.StringVar(&o.allowedImages, "allowed-images", "localhost/*", "comma-separated image patterns runs may use ('*' matches anything)")
	fs.StringVar(&o.defaultMemory, "default-memory", "512m", "memory limit of runs that set none")
	fs.StringVar(&o.maxMemory, "max-memory", "8g", "the most memory a run may ask for")
	fs.StringVar(&o.defaultCPUs, "default-cpus", "1", "CPU limit of runs that set none")
	fs.StringVar(&o.maxCPUs, "max-cpus", "4", "the most CPUs a run may ask for")
	fs.Int64Var(&o.pidsLimit, "pids-limit", 1024, "the most processes a container may have")
	fs.StringVar(&o.containerLogMaxSize, "container-log-max-size", "64m", "the most a container's log takes on the host (at least 1m): past it, Podman starts the log afresh, so a run that prints without end keeps only its latest output, and reading its end stays quick")
	fs.StringVar(&o.capabilities, "capabilities", strings.Join(policy.DefaultCapabilities, ","),
		"comma-separated capabilities containers keep; all others are dropped")
	fs.IntVar(&o.workers, "workers", 16, "how many runs are reconciled at once; more than --max-concurrent-runs, so exits are recorded while launches wait on Podman")
	fs.BoolVar(&o.captureOutput, "capture-output", true, "keep the tail of each run's output and its agent result in status, with secret values masked; false keeps both on the host only")
	fs.DurationVar(&o.podmanCallTimeout, "podman-call-timeout", 2*time.Minute, "how long one Podman API call may take before it fails and Podman counts as unavailable (a stop gets its grace period on top)")
	fs.StringVar(&o.hostLabels, "host-labels", "", "comma-separated key=value labels of this host's PodmanHost, for runs' spec.hostSelector (for example gpu=true,zone=a)")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", agentruns.DefaultLeaseNamespace, "namespace of the hosts' heartbeat Leases (and of the leader election leases, unless --leader-election-namespace says otherwise)")
	fs.DurationVar(&o.heartbeatPeriod, "heartbeat-period", agentruns.DefaultHeartbeatPeriod, "how often a host renews its heartbeat Lease and refreshes its PodmanHost (its secret names are listed then)")
	fs.DurationVar(&o.hostGracePeriod, "host-grace-period", agentruns.DefaultHostGracePeriod, "how long a host may go without renewing its heartbeat before the fleet declares it lost and fails its runs over (a host cut off this long fences itself when it comes back)")
	fs.StringVar(&o.sessionDir, "session-dir", host.DefaultSessionDir, "where this host keeps the runs' Claude Code state, a directory per session, so that a later run can continue one (spec.continueFrom); each host needs its own; empty keeps none")
	fs.Int64Var(&o.sessionCopyMaxBytes, "session-copy-max-bytes", host.DefaultSessionCopyMaxBytes, "the most bytes of conversation transcripts a run that continues or forks a session copies; past it the run fails (SessionTooLarge)")
	fs.IntVar(&o.sessionCopyMaxFiles, "session-copy-max-files", host.DefaultSessionCopyMaxFiles, "the most transcript files a run that continues or forks a session copies; past it the run fails (SessionTooLarge)")
	fs.DurationVar(&o.runRecordRetention, "run-record-retention", fleet.DefaultRunRecordRetention, "how long the record of a finished AgentRun outlives the last run of its name and manifest; while it exists, that manifest applied again (a GitOps sync recreating a deleted run) is not run again but ends AlreadyRan; 0 keeps no records")
	fs.BoolVar(&o.pinnedRunsWait, "pinned-runs-wait-for-lost-host", false, "fleet: keep runs pinned to a lost host (spec.hostName) waiting for it instead of failing them with reason HostLost")
	fs.StringVar(&o.logsBindAddress, "logs-bind-address", "0", "host: address (host:port) of the HTTPS endpoint that streams this host's runs' output to the fleet (which serves it to users through the API server: kubectl agentrun logs); 0 disables it")
	fs.StringVar(&o.logsURL, "logs-url", "", "host: the URL clients reach the log endpoint at, published in the PodmanHost (default: https:// and --logs-bind-address, when that names a host)")
	fs.StringVar(&o.logsCertDir, "logs-cert-dir", "", "host: directory with the log endpoint's tls.crt, tls.key and ca.crt (default: a certificate the host makes at start for --logs-url's host)")
	fs.StringVar(&o.notifyAllowedCIDRs, "notify-allowed-cidrs", "", "host: comma-separated CIDRs completion callbacks may reach although loopback, link-local, private or the host's own (for example 127.0.0.1/32 for a receiver on this host); empty: callbacks reach public addresses only")
	fs.StringVar(&o.logsClientCAFile, "logs-client-ca-file", "", "host: PEM file of the CA that signs the fleet's client certificate (--logs-client-cert-dir), the only caller the log endpoint accepts; required with --logs-bind-address")
	fs.StringVar(&o.logsAPIBindAddress, "logs-api-bind-address", "0", "fleet: address (host:port) of the aggregated API logs.agentrun.dev that the API server proxies users' log requests to (an APIService); 0 disables it")
	fs.StringVar(&o.logsAPICertDir, "logs-api-cert-dir", "", "fleet: directory with the aggregated API's serving tls.crt and tls.key (the APIService's caBundle signs them)")
	fs.StringVar(&o.logsClientCertDir, "logs-client-cert-dir", "", "fleet: directory with the tls.crt and tls.key the fleet shows hosts' log endpoints (signed by their --logs-client-ca-file)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return o, o.validate()
}

func (o *options) validate() error {
	var errs []error
	for _, m := range list(o.mode) {
		if !slices.Contains([]string{modeAll, modeWebhook, modeFleet, modeHost, modeReconciler}, m) {
			errs = append(errs, fmt.Errorf("--mode must list some of webhook, fleet and host (or be all), not %q", o.mode))
			break
		}
	}
	if len(list(o.mode)) == 0 {
		errs = append(errs, errors.New("--mode is empty"))
	}
	if o.runRecordRetention < 0 {
		errs = append(errs, errors.New("--run-record-retention must not be negative (0 keeps no records)"))
	}
	if o.heartbeatPeriod <= 0 || o.hostGracePeriod <= o.heartbeatPeriod {
		errs = append(errs, errors.New("--heartbeat-period must be positive and --host-grace-period longer than it"))
	}
	// client-go's leader election refuses other values at start; saying so
	// here names the flags.
	if o.retryPeriod <= 0 || o.renewDeadline <= time.Duration(leaderelection.JitterFactor*float64(o.retryPeriod)) || o.leaseDuration <= o.renewDeadline {
		errs = append(errs, errors.New("--leader-elect-lease-duration must be longer than --leader-elect-renew-deadline, and that longer than 1.2 times --leader-elect-retry-period (positive)"))
	}
	if msgs := validation.IsDNS1123Label(o.leaseNamespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--lease-namespace %q: %s", o.leaseNamespace, strings.Join(msgs, "; ")))
	}
	if _, _, err := o.logAPI(); err != nil && o.runsFleet() {
		errs = append(errs, err)
	}
	if o.runsReconciler() {
		switch msgs := validation.IsDNS1123Subdomain(o.leaderElectionID()); {
		case o.hostName == "":
			errs = append(errs, errors.New("--host-name is empty and the machine's host name is unknown"))
		case len(validation.IsDNS1123Subdomain(o.hostName)) > 0 || len(msgs) > 0:
			errs = append(errs, fmt.Errorf("--host-name %q must be a lower-case DNS name (letters, digits, '-' and '.') of at most %d characters: "+
				"it names the host's PodmanHost and Leases", o.hostName, validation.DNS1123SubdomainMaxLength-len(hostLeasePrefix)))
		}
		if _, err := o.labels(); err != nil {
			errs = append(errs, err)
		}
		if strings.TrimSpace(o.defaultImage) == "" || len(o.command()) == 0 {
			errs = append(errs, errors.New("--default-image and --default-command must not be empty"))
		}
		if o.outputTailBytes < 0 || o.outputTailBytes > 65536 {
			errs = append(errs, fmt.Errorf("--output-tail-bytes must be between 0 and 65536, not %d", o.outputTailBytes))
		}
		if o.resyncPeriod <= 0 || o.recheckPeriod <= 0 || o.stopGracePeriod < 0 || o.progressPeriod < 0 {
			errs = append(errs, errors.New("--resync-period and --recheck-period must be positive, --stop-grace-period and --progress-period not negative"))
		}
		if o.defaultTimeout <= 0 || o.retryBackoff <= 0 || o.maxRetryBackoff < o.retryBackoff {
			errs = append(errs, errors.New("--default-timeout and --retry-backoff must be positive, --max-retry-backoff at least --retry-backoff"))
		}
		if o.podmanCallTimeout <= 0 {
			errs = append(errs, errors.New("--podman-call-timeout must be positive"))
		}
		if o.maxConcurrentRuns < 0 || o.pidsLimit < 0 || o.workers < 1 {
			errs = append(errs, errors.New("--max-concurrent-runs and --pids-limit must not be negative, --workers at least 1"))
		}
		if _, err := o.policy(); err != nil {
			errs = append(errs, err)
		}
		if _, err := o.logEndpoint(); err != nil {
			errs = append(errs, err)
		}
		if _, err := o.notifyAllowed(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (o *options) does(mode string) bool {
	modes := list(o.mode)
	return slices.Contains(modes, modeAll) || slices.Contains(modes, mode) || mode == modeHost && slices.Contains(modes, modeReconciler)
}

func (o *options) runsReconciler() bool { return o.does(modeHost) }
func (o *options) servesWebhook() bool  { return o.does(modeWebhook) }
func (o *options) runsFleet() bool      { return o.does(modeFleet) }
func (o *options) command() []string    { return strings.Fields(o.defaultCommand) }

// hostLeasePrefix starts the leader election lease of a host's managers.
const hostLeasePrefix = "agentrun-host-"

// leaderElectionID is per host for reconcilers, so that two managers started
// for one host never run the same AgentRun, while managers of different hosts
// work side by side. Host names are DNS names already (validate), so the
// lease is named after the host unchanged and two hosts never share one.
func (o *options) leaderElectionID() string {
	if !o.runsReconciler() {
		return "agentrun-cluster"
	}
	return hostLeasePrefix + o.hostName
}

// labels parses --host-labels, checking each key and value as Kubernetes
// checks labels.
func (o *options) labels() (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range list(o.hostLabels) {
		k, v, ok := strings.Cut(kv, "=")
		msgs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...)
		if !ok || len(msgs) > 0 {
			return nil, fmt.Errorf("--host-labels: %q is not a valid key=value label: %s", kv, strings.Join(msgs, "; "))
		}
		out[k] = v
	}
	return out, nil
}

func (o *options) managerOptions(scheme *runtime.Scheme) ctrl.Options {
	return ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		PprofBindAddress:              o.pprofAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              o.leaderElectionID(),
		LeaderElectionNamespace:       cmp.Or(o.leaderElectNamespace, o.leaseNamespace),
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.leaseDuration,
		RenewDeadline:                 &o.renewDeadline,
		RetryPeriod:                   &o.retryPeriod,
		Cache:                         agentruns.CacheOptions(),
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    o.webhookHost,
			Port:    o.webhookPort,
			CertDir: o.webhookCertDir,
		}),
	}
}

// policy builds the hardening and limits every container of this host gets.
func (o *options) policy() (policy.Policy, error) {
	p := policy.Policy{
		AllowedVolumePaths:    list(o.allowedVolumePaths),
		ForbiddenVolumePaths:  []string{filepath.Dir(o.podmanSocket)},
		AllowVolumeRelabel:    o.allowVolumeRelabel,
		AllowedNetworks:       list(o.allowedNetworks),
		User:                  o.containerUser,
		UserNS:                o.userNS,
		BlockedContainerPaths: list(o.blockedContainerPaths),
		AllowedImages:         list(o.allowedImages),
		PidsLimit:             o.pidsLimit,
		Capabilities:          list(o.capabilities),
	}
	var errs []error
	for _, m := range []struct {
		flag, value string
		into        *int64
		parse       func(string) (int64, error)
	}{
		{"--default-memory", o.defaultMemory, &p.DefaultMemoryBytes, policy.ParseMemory},
		{"--max-memory", o.maxMemory, &p.MaxMemoryBytes, policy.ParseMemory},
		{"--default-cpus", o.defaultCPUs, &p.DefaultNanoCPUs, policy.ParseCPUs},
		{"--max-cpus", o.maxCPUs, &p.MaxNanoCPUs, policy.ParseCPUs},
		{"--container-log-max-size", o.containerLogMaxSize, &p.LogMaxBytes, policy.ParseMemory},
	} {
		v, err := m.parse(m.value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.flag, err))
		}
		*m.into = v
	}
	if p.LogMaxBytes < minContainerLogBytes {
		// Smaller, a log started afresh near the run's end could hold
		// less than the host reads for the agent's result.
		errs = append(errs, fmt.Errorf("--container-log-max-size must be at least 1m, not %q", o.containerLogMaxSize))
	}
	if p.MaxMemoryBytes > 0 && p.DefaultMemoryBytes > p.MaxMemoryBytes || p.MaxNanoCPUs > 0 && p.DefaultNanoCPUs > p.MaxNanoCPUs {
		errs = append(errs, errors.New("the default memory and CPUs must not exceed the maximums"))
	}
	return p, errors.Join(errs...)
}

// minContainerLogBytes is the smallest --container-log-max-size.
const minContainerLogBytes = 1 << 20

// list splits a comma-separated flag value, dropping empty items.
func list(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// hostConfig is the reconciler's configuration for this host, over rt.
func (o *options) hostConfig(rt containers.Runtime) host.HostConfig {
	hostPolicy, _ := o.policy() // validated by parseOptions
	hostLabels, _ := o.labels()
	logs, _ := o.logEndpoint()
	notifyAllowed, _ := o.notifyAllowed()
	return host.HostConfig{
		Host:                o.hostName,
		Runtime:             containers.WithCallTimeout(rt, o.podmanCallTimeout),
		DiscardOutput:       !o.captureOutput,
		Defaults:            host.Defaults{Image: o.defaultImage, Command: o.command()},
		OutputTailBytes:     o.outputTailBytes,
		ProgressPeriod:      o.progressPeriod,
		KeepContainers:      o.keepContainers,
		StopGracePeriod:     o.stopGracePeriod,
		ResyncPeriod:        o.resyncPeriod,
		RecheckPeriod:       o.recheckPeriod,
		DefaultTimeout:      o.defaultTimeout,
		RetryBackoff:        o.retryBackoff,
		MaxRetryBackoff:     o.maxRetryBackoff,
		MaxConcurrentRuns:   o.maxConcurrentRuns,
		Policy:              hostPolicy,
		Workers:             o.workers,
		EventRetryPeriod:    2 * time.Second,
		Labels:              hostLabels,
		LeaseNamespace:      o.leaseNamespace,
		HeartbeatPeriod:     o.heartbeatPeriod,
		GracePeriod:         o.hostGracePeriod,
		RunRecordRetention:  o.runRecordRetention,
		SessionDir:          o.sessionDir,
		SessionCopyMaxBytes: o.sessionCopyMaxBytes,
		SessionCopyMaxFiles: o.sessionCopyMaxFiles,
		LogEndpoint:         logs,
		NotifyAllowedCIDRs:  notifyAllowed,
	}
}

// notifyAllowed parses --notify-allowed-cidrs.
func (o *options) notifyAllowed() ([]netip.Prefix, error) {
	var cidrs []netip.Prefix
	for _, item := range list(o.notifyAllowedCIDRs) {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("--notify-allowed-cidrs: %q is not a CIDR (such as 127.0.0.1/32 or 10.20.0.0/16)", item)
		}
		cidrs = append(cidrs, p.Masked())
	}
	return cidrs, nil
}

// logEndpoint is the host's log endpoint, nil when --logs-bind-address is 0.
func (o *options) logEndpoint() (*host.LogEndpoint, error) {
	if o.logsBindAddress == "0" {
		return nil, nil
	}
	bindHost, port, err := net.SplitHostPort(o.logsBindAddress)
	if err != nil {
		return nil, fmt.Errorf("--logs-bind-address %q: %w", o.logsBindAddress, err)
	}
	u := o.logsURL
	if u == "" {
		if ip := net.ParseIP(bindHost); bindHost == "" || ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("--logs-url is needed when --logs-bind-address (%q) names no host clients can reach", o.logsBindAddress)
		}
		u = "https://" + net.JoinHostPort(bindHost, port)
	}
	if o.logsClientCAFile == "" {
		return nil, errors.New("--logs-client-ca-file is needed with --logs-bind-address: the log endpoint serves the fleet alone")
	}
	return &host.LogEndpoint{BindAddress: o.logsBindAddress, URL: u, CertDir: o.logsCertDir, ClientCAFile: o.logsClientCAFile}, nil
}

// logAPI is where the fleet serves the aggregated log API; ok is false when
// --logs-api-bind-address is 0.
func (o *options) logAPI() (l logAPIOptions, ok bool, err error) {
	if o.logsAPIBindAddress == "0" {
		return l, false, nil
	}
	if o.logsAPICertDir == "" || o.logsClientCertDir == "" {
		return l, false, errors.New("--logs-api-bind-address needs --logs-api-cert-dir and --logs-client-cert-dir")
	}
	return logAPIOptions{BindAddress: o.logsAPIBindAddress, CertDir: o.logsAPICertDir, ClientCertDir: o.logsClientCertDir}, true, nil
}

// logAPIOptions are the fleet's aggregated log API's settings.
type logAPIOptions struct {
	BindAddress, CertDir, ClientCertDir string
}

// fleetConfig is the configuration of the fleet's controllers.
func (o *options) fleetConfig() fleet.FleetConfig {
	return fleet.FleetConfig{
		LeaseNamespace:     o.leaseNamespace,
		GracePeriod:        o.hostGracePeriod,
		PinnedRunsWait:     o.pinnedRunsWait,
		RecheckPeriod:      time.Minute,
		RunRecordRetention: o.runRecordRetention,
	}
}
