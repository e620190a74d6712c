package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +kubebuilder:object:root=true

// Configuration is the manager's settings file, given with --config. One file
// serves every mode: a process reads the shared sections and the section of
// what it runs (host, fleet) and ignores the other. What an operator passes
// per machine stays on the command line: --mode (comma-separated webhook,
// fleet and host, the last also called reconciler; default all, the three),
// --host-name (a lower-case DNS name, which names the host's PodmanHost and
// heartbeat Lease; default the machine's host name, lower-cased),
// --kubeconfig and the logging flags.
type Configuration struct {
	metav1.TypeMeta `json:",inline"`

	// LeaseNamespace holds the hosts' heartbeat Leases, and the leader
	// election leases unless leaderElection.resourceNamespace names another.
	// Hosts and the fleet must name the same one. Default: agentrun-system.
	// +optional
	LeaseNamespace string `json:"leaseNamespace,omitempty"`

	// Metrics is the Prometheus metrics endpoint.
	// +optional
	Metrics MetricsConfiguration `json:"metrics,omitempty"`

	// Health is the endpoint of the liveness and readiness probes.
	// +optional
	Health HealthConfiguration `json:"health,omitempty"`

	// Pprof is Go's profiling endpoint (/debug/pprof/), which make bench
	// reads a heap profile from.
	// +optional
	Pprof PprofConfiguration `json:"pprof,omitempty"`

	// LeaderElection elects one manager among those started for the same
	// host (or among the fleet's replicas), so that only one acts.
	// +optional
	LeaderElection LeaderElectionConfiguration `json:"leaderElection,omitempty"`

	// Webhook is the validating webhook's server (modes webhook and all).
	// +optional
	Webhook WebhookConfiguration `json:"webhook,omitempty"`

	// Host is how this machine runs AgentRuns: read in modes host and all.
	// It is the host owner's protection against anyone who can create
	// AgentRuns, so it stays a local, read-only file.
	// +optional
	Host HostConfiguration `json:"host,omitempty"`

	// Fleet is the cluster-wide placement, failover and run records: read
	// in modes fleet and all.
	// +optional
	Fleet FleetConfiguration `json:"fleet,omitempty"`
}

// MetricsConfiguration is the metrics endpoint.
type MetricsConfiguration struct {
	// BindAddress is the metrics endpoint's address, host:port; "0"
	// disables it. Default: 127.0.0.1:8080.
	// +optional
	BindAddress string `json:"bindAddress,omitempty"`
}

// HealthConfiguration is the probes' endpoint.
type HealthConfiguration struct {
	// BindAddress is the address of /healthz and /readyz, host:port.
	// Default: 127.0.0.1:8081.
	// +optional
	BindAddress string `json:"bindAddress,omitempty"`
}

// PprofConfiguration is the profiling endpoint.
type PprofConfiguration struct {
	// BindAddress is the address of the profiling endpoints, host:port;
	// empty disables them. Default: empty.
	// +optional
	BindAddress string `json:"bindAddress,omitempty"`
}

// LeaderElectionConfiguration is the leader election among a host's managers,
// or among the fleet's replicas. Client-go refuses timings where
// leaseDuration is not longer than renewDeadline, or renewDeadline not longer
// than 1.2 times retryPeriod.
type LeaderElectionConfiguration struct {
	// LeaderElect turns leader election on: one active manager per host
	// (lease agentrun-host-NAME for host NAME), or one active fleet among the
	// cluster's replicas (lease agentrun-cluster), released on shutdown.
	// Two managers started for one host without it would each count the
	// host's slots and launch runs on their own: false only when a single
	// manager can ever run. Default: true.
	// +optional
	LeaderElect *bool `json:"leaderElect,omitempty"`

	// ResourceNamespace is the namespace of the leader election leases;
	// required outside a cluster. Default: leaseNamespace.
	// +optional
	ResourceNamespace string `json:"resourceNamespace,omitempty"`

	// LeaseDuration is how long a standby waits, after the leader's last
	// renewal, before it takes over (a crashed leader's successor, or the
	// same manager restarted, waits this long before it launches or fences;
	// a stopped leader releases its lease at once). The host's heartbeat
	// does not wait for it, so the fleet does not take a restart for the
	// host's loss. Default: 15s.
	// +optional
	LeaseDuration *metav1.Duration `json:"leaseDuration,omitempty"`

	// RenewDeadline is how long the leader tries to renew its lease before
	// it stops leading. Default: 10s.
	// +optional
	RenewDeadline *metav1.Duration `json:"renewDeadline,omitempty"`

	// RetryPeriod is how often candidates try to acquire or renew the
	// lease. Default: 2s.
	// +optional
	RetryPeriod *metav1.Duration `json:"retryPeriod,omitempty"`
}

// WebhookConfiguration is the webhook server.
type WebhookConfiguration struct {
	// Host is the address the webhook server binds; empty: all.
	// +optional
	Host string `json:"host,omitempty"`

	// Port is the webhook server's port. Default: 9443.
	// +optional
	Port *int32 `json:"port,omitempty"`

	// CertDir holds the webhook server's tls.crt and tls.key. Default:
	// controller-runtime's (the system's temporary directory,
	// k8s-webhook-server/serving-certs).
	// +optional
	CertDir string `json:"certDir,omitempty"`
}

// HostConfiguration is one Podman host's settings and security policy.
type HostConfiguration struct {
	// PodmanSocket is the path of the rootful Podman API service's Unix
	// socket. Its directory is never mounted into a run, whatever
	// volumes.allowedPaths says. Default: /run/podman/podman.sock.
	// +optional
	PodmanSocket string `json:"podmanSocket,omitempty"`

	// PodmanCallTimeout is how long one Podman API call may take before it
	// fails and Podman counts as unavailable (a stop gets its grace period
	// on top). Default: 2m.
	// +optional
	PodmanCallTimeout *metav1.Duration `json:"podmanCallTimeout,omitempty"`

	// Labels are this host's PodmanHost labels, which runs'
	// spec.hostSelector matches (for example gpu: "true"). Keys and values
	// are checked as Kubernetes checks labels.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Heartbeat is how the host shows the fleet it is alive.
	// +optional
	Heartbeat HeartbeatConfiguration `json:"heartbeat,omitempty"`

	// Runs is how the host runs AgentRuns.
	// +optional
	Runs RunsConfiguration `json:"runs,omitempty"`

	// Output is what of a run's output reaches its status.
	// +optional
	Output OutputConfiguration `json:"output,omitempty"`

	// Containers is the hardening every container of this host gets.
	// +optional
	Containers ContainersConfiguration `json:"containers,omitempty"`

	// Resources are the limits runs get, and the most they may ask for.
	// +optional
	Resources ResourcesConfiguration `json:"resources,omitempty"`

	// Volumes are the host paths runs may mount, and where.
	// +optional
	Volumes VolumesConfiguration `json:"volumes,omitempty"`

	// Sessions is where the host keeps the runs' Claude Code state, so that
	// a later run can continue a session (spec.continueFrom).
	// +optional
	Sessions SessionsConfiguration `json:"sessions,omitempty"`

	// Logs is the endpoint that streams this host's runs' output to the
	// fleet, which serves it to users through the API server (kubectl
	// agentrun logs).
	// +optional
	Logs LogEndpointConfiguration `json:"logs,omitempty"`

	// Notify is what completion callbacks may reach.
	// +optional
	Notify NotifyConfiguration `json:"notify,omitempty"`

	// Egress is where runs' connections may go: the host's egress proxy,
	// the names every run may reach, and the ceiling of names runs may ask
	// for.
	// +optional
	Egress EgressConfiguration `json:"egress,omitempty"`
}

// HeartbeatConfiguration is the host's heartbeat Lease. The host writes its
// grace period into the Lease (spec.leaseDurationSeconds) and the fleet reads
// it from there: the two cannot disagree.
type HeartbeatConfiguration struct {
	// Period is how often the host renews its heartbeat Lease and refreshes
	// its PodmanHost (its secret names are listed then). Default: 10s.
	// +optional
	Period *metav1.Duration `json:"period,omitempty"`

	// GracePeriod is how long the host may go without renewing its
	// heartbeat before the fleet declares it lost and fails its runs over
	// (a host cut off this long fences itself when it comes back). Longer
	// than period, in whole seconds: the host's Lease carries it to the
	// fleet (spec.leaseDurationSeconds). Default: 40s.
	// +optional
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// RunsConfiguration is how the host runs AgentRuns.
type RunsConfiguration struct {
	// DefaultImage is the image of runs that set no spec.image. Default:
	// the agent image make agent-image builds
	// (localhost/agentrun-claude, tagged with the Claude Code version it
	// holds).
	// +optional
	DefaultImage string `json:"defaultImage,omitempty"`

	// DefaultCommand is the command of runs that set no spec.command; the
	// prompt is appended (after --, so a prompt that starts with - is not
	// read as a flag). Default: [claude, -p, --output-format, json, --].
	// +optional
	DefaultCommand []string `json:"defaultCommand,omitempty"`

	// DefaultTimeout is the timeout of runs that set no spec.timeout.
	// Default: 30m.
	// +optional
	DefaultTimeout *metav1.Duration `json:"defaultTimeout,omitempty"`

	// MaxConcurrent is how many runs this host runs at once (0: no cap);
	// others wait, in creation order. Default: 4.
	// +optional
	MaxConcurrent *int32 `json:"maxConcurrent,omitempty"`

	// Workers is how many runs are reconciled at once, at least 1; more
	// than maxConcurrent, so that exits are recorded while launches wait on
	// Podman. Default: 16.
	// +optional
	Workers *int32 `json:"workers,omitempty"`

	// RetryBackoff is the wait before retrying a failed attempt; it doubles
	// with each further failure, up to maxRetryBackoff. Default: 10s.
	// +optional
	RetryBackoff *metav1.Duration `json:"retryBackoff,omitempty"`

	// MaxRetryBackoff is the longest wait before a retry, at least
	// retryBackoff. Default: 5m.
	// +optional
	MaxRetryBackoff *metav1.Duration `json:"maxRetryBackoff,omitempty"`

	// StopGracePeriod is how long a container has after SIGTERM before
	// SIGKILL. Default: 10s.
	// +optional
	StopGracePeriod *metav1.Duration `json:"stopGracePeriod,omitempty"`

	// ResyncPeriod is how often a running run is checked when no Podman
	// event arrives. Default: 1m.
	// +optional
	ResyncPeriod *metav1.Duration `json:"resyncPeriod,omitempty"`

	// RecheckPeriod is how often a run that waits (for a missing secret or
	// image, or a free slot) looks again. Default: 3s.
	// +optional
	RecheckPeriod *metav1.Duration `json:"recheckPeriod,omitempty"`

	// KeepContainers keeps finished containers for inspection; they are
	// removed when their AgentRun is deleted. Default: false.
	// +optional
	KeepContainers bool `json:"keepContainers,omitempty"`
}

// OutputConfiguration is what of a run's output reaches its status.
type OutputConfiguration struct {
	// Capture keeps the tail of each run's output and its agent result in
	// status, with secret values masked; false keeps both on the host only.
	// Default: true.
	// +optional
	Capture *bool `json:"capture,omitempty"`

	// TailBytes is how many bytes of the end of a run's output are kept in
	// status.output, from 0 to 65536. Default: 4096.
	// +optional
	TailBytes *int32 `json:"tailBytes,omitempty"`

	// ProgressPeriod is how often, at most, a running run's status.output
	// is refreshed with its output so far (masked), written only when it
	// changed; 0 leaves status.output to the run's end. Each refresh is a
	// Podman logs call, made by a controller of its own (agentrun-progress,
	// 2 workers) so that refreshes do not wait behind launches. Default:
	// 10s.
	// +optional
	ProgressPeriod *metav1.Duration `json:"progressPeriod,omitempty"`
}

// ContainersConfiguration is the hardening every container of the host gets;
// a run cannot loosen it.
type ContainersConfiguration struct {
	// AllowedImages are the image patterns runs may use ('*' matches any
	// run of characters, slashes included). Default: [localhost/*].
	// +optional
	AllowedImages []string `json:"allowedImages,omitempty"`

	// AllowedNetworks are the networks (or network modes) runs may ask
	// for in spec.podman.network. A run on a network is not proxied: it
	// reaches whatever the network does (egress mode open). Add bridge to
	// let runs have Podman's default network, host only to give them the
	// host's. Default: [none].
	// +optional
	AllowedNetworks []string `json:"allowedNetworks,omitempty"`

	// User is the user:group every container runs as. Default: 1000:1000.
	// +optional
	User string `json:"user,omitempty"`

	// UserNS is the user namespace mode of every container (for example
	// auto, which needs /etc/subuid and /etc/subgid entries); empty:
	// Podman's default.
	// +optional
	UserNS string `json:"userNS,omitempty"`

	// Capabilities are the capabilities containers keep; all others are
	// dropped. Podman hands them to a non-root user's ambient set, so any
	// capability kept is held in full by the agent. Default: none.
	// +optional
	Capabilities []string `json:"capabilities,omitempty"`

	// PidsLimit is the most processes a container may have (0: Podman's
	// default). Default: 1024.
	// +optional
	PidsLimit *int64 `json:"pidsLimit,omitempty"`

	// LogMaxSize is the most a container's log takes on the host, at least
	// 1Mi: past it, Podman starts its k8s-file log afresh, so a run that
	// prints without end keeps only its latest output, and reading its end
	// stays quick. Default: 64Mi.
	// +optional
	LogMaxSize *resource.Quantity `json:"logMaxSize,omitempty"`
}

// ResourcesConfiguration are the runs' memory and CPU limits. A zero maximum
// sets no maximum; a default may not exceed its maximum.
type ResourcesConfiguration struct {
	// DefaultMemory is the memory limit of runs that set none (0: no
	// limit). Default: 512Mi.
	// +optional
	DefaultMemory *resource.Quantity `json:"defaultMemory,omitempty"`

	// MaxMemory is the most memory a run may ask for. Default: 8Gi.
	// +optional
	MaxMemory *resource.Quantity `json:"maxMemory,omitempty"`

	// DefaultCPUs is the CPU limit of runs that set none (0: no limit).
	// Default: 1.
	// +optional
	DefaultCPUs *resource.Quantity `json:"defaultCPUs,omitempty"`

	// MaxCPUs is the most CPUs a run may ask for. Default: 4.
	// +optional
	MaxCPUs *resource.Quantity `json:"maxCPUs,omitempty"`
}

// VolumesConfiguration are the host paths runs may mount.
type VolumesConfiguration struct {
	// AllowedPaths are the host directories volumes may come from (each
	// and what is below it), absolute paths. Default: none, so runs may
	// mount no host path.
	// +optional
	AllowedPaths []string `json:"allowedPaths,omitempty"`

	// BlockedContainerPaths are the container paths volumes may not mount
	// over, nor anything below them; absolute paths. Default: [/proc, /sys,
	// /dev, /etc, /usr, /bin, /sbin, /lib, /lib64, /boot, /run/secrets].
	// +optional
	BlockedContainerPaths []string `json:"blockedContainerPaths,omitempty"`

	// AllowRelabel lets volumes use the options U (chown host files to the
	// container's user) and z/Z (SELinux relabel). Default: false.
	// +optional
	AllowRelabel bool `json:"allowRelabel,omitempty"`
}

// SessionsConfiguration is where and how much session state the host keeps.
type SessionsConfiguration struct {
	// Dir is where the host keeps the runs' Claude Code state, a directory
	// per session; each host needs its own; empty keeps none. The Podman
	// API mounts it into runs by this path, so a manager in a container
	// mounts it at the same path. The host units make the default writable
	// (agentrun-host.service with StateDirectory=): change both together.
	// Default: /var/lib/agentrun/sessions.
	// +optional
	Dir *string `json:"dir,omitempty"`

	// CopyMaxBytes is the most bytes of conversation transcripts a run that
	// continues or forks a session copies; past it the run fails
	// (SessionTooLarge). Default: 1Gi.
	// +optional
	CopyMaxBytes *resource.Quantity `json:"copyMaxBytes,omitempty"`

	// CopyMaxFiles is the most transcript files a run that continues or
	// forks a session copies; past it the run fails (SessionTooLarge).
	// Default: 10000.
	// +optional
	CopyMaxFiles *int32 `json:"copyMaxFiles,omitempty"`
}

// LogEndpointConfiguration is the host's log endpoint, over HTTPS, which
// serves the fleet alone.
type LogEndpointConfiguration struct {
	// BindAddress is the endpoint's address, host:port; empty disables it.
	// Default: empty.
	// +optional
	BindAddress string `json:"bindAddress,omitempty"`

	// URL is where clients reach the endpoint, published in the PodmanHost.
	// Default: https:// and bindAddress, which must then name a host.
	// +optional
	URL string `json:"url,omitempty"`

	// CertDir holds the endpoint's tls.crt, tls.key and ca.crt. Default: a
	// certificate the host makes at start for url's host.
	// +optional
	CertDir string `json:"certDir,omitempty"`

	// ClientCAFile is the PEM file of the CA that signs the fleet's client
	// certificate (fleet.logsAPI.clientCertDir), the only caller the
	// endpoint accepts; required with bindAddress.
	// +optional
	ClientCAFile string `json:"clientCAFile,omitempty"`
}

// NotifyConfiguration is what completion callbacks may reach.
type NotifyConfiguration struct {
	// AllowedCIDRs are the CIDRs (such as 127.0.0.1/32 for a receiver on
	// this host) completion callbacks may reach although they are
	// loopback, link-local, private or the host's own. Default: none, so
	// callbacks reach public addresses only.
	// +optional
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`
}

// EgressConfiguration is the host's egress policy and its proxy. A run in
// proxy mode has no network of its own (Podman's network none): a forwarder
// of agentrun's, mounted read-only into its container, carries each
// connection over a Unix socket to this host's proxy, which lets through
// only the names the run may reach, resolves them itself and refuses
// loopback, link-local, private and the host's own addresses.
type EgressConfiguration struct {
	// Mode is the egress of runs that set neither spec.egress nor
	// spec.podman.network: proxy (the names in default only), none (no
	// network) or open (Podman's default network, unrestricted: the
	// behaviour before egress control). A run that sets spec.egress always
	// goes through the proxy; one that names a network is open, within
	// host.containers.allowedNetworks. Default: proxy.
	// +optional
	Mode string `json:"mode,omitempty"`

	// Default are the names every proxied run may reach without asking,
	// in spec.egress.allow's form. Default: [api.anthropic.com].
	// +optional
	Default []string `json:"default,omitempty"`

	// Permitted is the ceiling of what runs may ask for in
	// spec.egress.allow: patterns in the same form, each covering what it
	// matches (*.example.com covers every name below example.com;
	// example.com covers example.com on 443 and 80, example.com:22 on 22
	// only). A run asking beyond it does not start (EgressNotPermitted).
	// Default: none, so runs reach only the defaults.
	// +optional
	Permitted []string `json:"permitted,omitempty"`

	// AllowedCIDRs are the CIDRs the proxy may connect to although they
	// are loopback, link-local, private or the host's own (a package
	// mirror on the local network, say). Default: none.
	// +optional
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`

	// MaxConnectionsPerRun is the most connections a run may hold open
	// through the proxy at once; past it the proxy answers 429. Default:
	// 256.
	// +optional
	MaxConnectionsPerRun *int32 `json:"maxConnectionsPerRun,omitempty"`

	// DialTimeout bounds the proxy's connection to a destination.
	// Default: 10s.
	// +optional
	DialTimeout *metav1.Duration `json:"dialTimeout,omitempty"`

	// IdleTimeout closes a connection through the proxy that carried
	// nothing either way for this long. Default: 10m.
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`

	// SocketDir is where the proxy's per-run sockets are, a directory per
	// run; the Podman API mounts them into runs by this path, so a manager
	// in a container mounts it at the same path. Default:
	// /var/lib/agentrun/egress.
	// +optional
	SocketDir *string `json:"socketDir,omitempty"`

	// Forwarder is the path of agentrun-forward on the host, mounted
	// read-only into proxied runs (it must be readable and executable by
	// the containers' user). Default:
	// /usr/local/libexec/agentrun/agentrun-forward.
	// +optional
	Forwarder *string `json:"forwarder,omitempty"`

	// UpstreamCAFile is the absolute path of a PEM file of CA certificates
	// the proxy trusts beside the host's system roots when it opens its own
	// TLS connection to a credentialed host (spec.egress.credentials); runs
	// that trust the run's CA trust these too. Read when the manager
	// starts, which refuses a file it cannot read or that holds no
	// certificate. Default: none.
	// +optional
	UpstreamCAFile string `json:"upstreamCAFile,omitempty"`

	// CABundlePaths are the paths in a run's container, besides the files
	// named by SSL_CERT_FILE and its kin, where the host mounts, read-only,
	// the bundle of CA certificates the run trusts (the system roots and
	// its own CA) when the run has credentials: the system bundles of the
	// agent images. At most 8 absolute, clean paths, none under
	// /run/agentrun (where the run's own directory is mounted). Default:
	// [/etc/ssl/certs/ca-certificates.crt].
	// +optional
	CABundlePaths []string `json:"caBundlePaths,omitempty"`

	// Resolver is the DNS server (host:port) the proxy resolves names
	// with; empty: the host's own resolver. For tests, which simulate the
	// internet with a resolver of their own: a host should use its own.
	// +optional
	Resolver string `json:"resolver,omitempty"`
}

// FleetConfiguration is the fleet's settings: once per cluster, in the
// cluster's manager. A host's grace period is not among them: the fleet reads
// each host's from its heartbeat Lease.
type FleetConfiguration struct {
	// PinnedRunsWaitForLostHost keeps runs pinned to a lost host
	// (spec.hostName) waiting for it instead of failing them with reason
	// HostLost. Default: false.
	// +optional
	PinnedRunsWaitForLostHost bool `json:"pinnedRunsWaitForLostHost,omitempty"`

	// RunRecordRetention is how long the record of a finished AgentRun
	// outlives the last run of its name and manifest; while it exists, that
	// manifest applied again (a GitOps sync recreating a deleted run) is
	// not run again but ends AlreadyRan; 0 keeps no records, and deletes
	// those left from before. The fleet's alone: hosts hold each run they
	// launch until the fleet has recorded it (or not), and honour every
	// record they find. Default: 720h (30 days).
	// +optional
	RunRecordRetention *metav1.Duration `json:"runRecordRetention,omitempty"`

	// LogsAPI is the aggregated API logs.agentrun.dev, which the API server
	// proxies users' log requests to (an APIService).
	// +optional
	LogsAPI LogsAPIConfiguration `json:"logsAPI,omitempty"`

	// Kueue lets Kueue (kueue.x-k8s.io) admit the runs labelled
	// kueue.x-k8s.io/queue-name: the fleet makes a Workload for each, holds
	// the run until Kueue admits it, and stops and requeues it when Kueue
	// evicts it (docs/kueue.md). Kueue must be installed, with AgentRun in
	// its integrations.externalFrameworks. Default: false.
	// +optional
	Kueue bool `json:"kueue,omitempty"`
}

// LogsAPIConfiguration is the fleet's aggregated log API.
type LogsAPIConfiguration struct {
	// BindAddress is the log API's address, host:port; empty disables it.
	// Default: empty.
	// +optional
	BindAddress string `json:"bindAddress,omitempty"`

	// CertDir holds the log API's serving tls.crt and tls.key (the
	// APIService's caBundle signs them); required with bindAddress.
	// +optional
	CertDir string `json:"certDir,omitempty"`

	// ClientCertDir holds the tls.crt and tls.key the fleet shows hosts'
	// log endpoints (signed by their host.logs.clientCAFile); required with
	// bindAddress.
	// +optional
	ClientCertDir string `json:"clientCertDir,omitempty"`
}
