package config

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/agentimage"
	"github.com/agentrun/agentrun/internal/policy"
)

// The defaults the controllers also fall back to when a suite leaves a
// setting zero: a Lease renewed every 10 s in a namespace of its own and 40 s
// of silence before a host is declared lost, as Kubernetes has them for
// Nodes; sessions where the host units make room for them, with limits far
// above the transcripts of any conversation Claude Code can hold and far
// below what fills a host's disk; records kept long enough for a manifest to
// stay in Git for weeks after its run was deleted (a record is a few hundred
// bytes).
const (
	DefaultLeaseNamespace      = "agentrun-system"
	DefaultHeartbeatPeriod     = 10 * time.Second
	DefaultHostGracePeriod     = 40 * time.Second
	DefaultSessionDir          = "/var/lib/agentrun/sessions"
	DefaultSessionCopyMaxBytes = 1 << 30
	DefaultSessionCopyMaxFiles = 10000
	DefaultRunRecordRetention  = 30 * 24 * time.Hour
	DefaultEgressSocketDir     = "/var/lib/agentrun/egress"
	DefaultEgressForwarder     = "/usr/local/libexec/agentrun/agentrun-forward"
	// DefaultCABundlePath is the system CA bundle of Debian, Ubuntu and
	// Alpine images, the agent image's among them.
	DefaultCABundlePath = "/etc/ssl/certs/ca-certificates.crt"
)

// defaultEgress are the names every proxied run may reach unless the file
// says otherwise: the agent's own API, without which Claude Code does nothing.
var defaultEgress = []string{"api.anthropic.com"}

// defaultBlockedContainerPaths are the container paths volumes may not mount
// over unless the file says otherwise.
var defaultBlockedContainerPaths = []string{"/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/run/secrets"}

// Default fills every field the file left out with its default: the values
// the manager's flags had before the file existed. A list the file gives
// empty ([]) stays empty: it says "none".
func Default(c *configv1alpha1.Configuration) {
	str(&c.LeaseNamespace, DefaultLeaseNamespace)
	str(&c.Metrics.BindAddress, "127.0.0.1:8080")
	str(&c.Health.BindAddress, "127.0.0.1:8081")
	le := &c.LeaderElection
	val(&le.LeaderElect, true)
	dur(&le.LeaseDuration, 15*time.Second)
	dur(&le.RenewDeadline, 10*time.Second)
	dur(&le.RetryPeriod, 2*time.Second)
	val(&c.Webhook.Port, 9443)
	defaultHost(&c.Host)
	dur(&c.Fleet.RunRecordRetention, DefaultRunRecordRetention)
}

func defaultHost(h *configv1alpha1.HostConfiguration) {
	str(&h.PodmanSocket, "/run/podman/podman.sock")
	dur(&h.PodmanCallTimeout, 2*time.Minute)
	dur(&h.Heartbeat.Period, DefaultHeartbeatPeriod)
	dur(&h.Heartbeat.GracePeriod, DefaultHostGracePeriod)
	r := &h.Runs
	str(&r.DefaultImage, agentimage.Image)
	list(&r.DefaultCommand, []string{"claude", "-p", "--output-format", "json", "--"})
	dur(&r.DefaultTimeout, 30*time.Minute)
	val(&r.MaxConcurrent, 4)
	val(&r.Workers, 16)
	dur(&r.RetryBackoff, 10*time.Second)
	dur(&r.MaxRetryBackoff, 5*time.Minute)
	dur(&r.StopGracePeriod, 10*time.Second)
	dur(&r.ResyncPeriod, time.Minute)
	dur(&r.RecheckPeriod, 3*time.Second)
	val(&h.Output.Capture, true)
	val(&h.Output.TailBytes, 4096)
	dur(&h.Output.ProgressPeriod, 10*time.Second)
	ct := &h.Containers
	list(&ct.AllowedImages, []string{"localhost/*"})
	list(&ct.AllowedNetworks, policy.DefaultNetworks)
	str(&ct.User, policy.DefaultUser)
	list(&ct.Capabilities, []string{})
	val(&ct.PidsLimit, 1024)
	qty(&ct.LogMaxSize, "64Mi")
	qty(&h.Resources.DefaultMemory, "512Mi")
	qty(&h.Resources.MaxMemory, "8Gi")
	qty(&h.Resources.DefaultCPUs, "1")
	qty(&h.Resources.MaxCPUs, "4")
	list(&h.Volumes.BlockedContainerPaths, defaultBlockedContainerPaths)
	val(&h.Sessions.Dir, DefaultSessionDir)
	qty(&h.Sessions.CopyMaxBytes, "1Gi")
	val(&h.Sessions.CopyMaxFiles, DefaultSessionCopyMaxFiles)
	defaultEgressConfiguration(&h.Egress)
}

// defaultEgressConfiguration fills host.egress: runs go through the proxy,
// reach the agent's API and ask for nothing beyond it.
func defaultEgressConfiguration(e *configv1alpha1.EgressConfiguration) {
	str(&e.Mode, string(agentsv1alpha1.EgressProxy))
	list(&e.Default, defaultEgress)
	list(&e.Permitted, []string{})
	list(&e.AllowedCIDRs, []string{})
	val(&e.MaxConnectionsPerRun, 256)
	dur(&e.DialTimeout, 10*time.Second)
	dur(&e.IdleTimeout, 10*time.Minute)
	val(&e.SocketDir, DefaultEgressSocketDir)
	val(&e.Forwarder, DefaultEgressForwarder)
	list(&e.CABundlePaths, []string{DefaultCABundlePath})
}

func str(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

func val[T any](p **T, def T) {
	if *p == nil {
		*p = ptr.To(def)
	}
}

func dur(p **metav1.Duration, def time.Duration) {
	if *p == nil {
		*p = &metav1.Duration{Duration: def}
	}
}

func qty(p **resource.Quantity, def string) {
	if *p == nil {
		*p = ptr.To(resource.MustParse(def))
	}
}

// list fills a list the file left out; one it gave empty stays so.
func list(l *[]string, def []string) {
	if *l == nil {
		*l = append([]string{}, def...)
	}
}
