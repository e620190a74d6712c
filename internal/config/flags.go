package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/internal/policy"
)

// A DeprecatedFlag is one of the manager's flags from before the
// configuration file. It keeps working for one release: given on the command
// line, it overrides its field of the file (as jobset's flags override its
// file), and the manager warns that it names Field.
type DeprecatedFlag struct {
	// Name is the flag's name, without dashes.
	Name string
	// Field is the file's field it sets, as a path (host.runs.workers).
	Field string
	// Bool flags may be given without a value (--leader-elect).
	Bool bool
	set  func(c *configv1alpha1.Configuration, value string) error
}

// Apply sets the flag's field of c from the flag's value, written as the
// flag always took it (Podman's memory units, comma-separated lists, "0"
// for a disabled endpoint).
func (f DeprecatedFlag) Apply(c *configv1alpha1.Configuration, value string) error {
	if err := f.set(c, value); err != nil {
		return fmt.Errorf("--%s: %w", f.Name, err)
	}
	return nil
}

// DeprecatedFlags are every flag the file replaced, in the order they had.
var DeprecatedFlags = []DeprecatedFlag{
	stringFlag("podman-socket", "host.podmanSocket", func(c *configv1alpha1.Configuration) *string { return &c.Host.PodmanSocket }),
	stringFlag("default-image", "host.runs.defaultImage", func(c *configv1alpha1.Configuration) *string { return &c.Host.Runs.DefaultImage }),
	{Name: "default-command", Field: "host.runs.defaultCommand", set: func(c *configv1alpha1.Configuration, v string) error {
		c.Host.Runs.DefaultCommand = append([]string{}, strings.Fields(v)...)
		return nil
	}},
	int32Flag("output-tail-bytes", "host.output.tailBytes", func(c *configv1alpha1.Configuration) **int32 { return &c.Host.Output.TailBytes }),
	durationFlag("progress-period", "host.output.progressPeriod", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Output.ProgressPeriod }),
	boolFlag("keep-containers", "host.runs.keepContainers", func(c *configv1alpha1.Configuration) *bool { return &c.Host.Runs.KeepContainers }),
	durationFlag("stop-grace-period", "host.runs.stopGracePeriod", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Runs.StopGracePeriod }),
	durationFlag("resync-period", "host.runs.resyncPeriod", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Runs.ResyncPeriod }),
	durationFlag("recheck-period", "host.runs.recheckPeriod", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Runs.RecheckPeriod }),
	stringFlag("metrics-bind-address", "metrics.bindAddress", func(c *configv1alpha1.Configuration) *string { return &c.Metrics.BindAddress }),
	stringFlag("pprof-bind-address", "pprof.bindAddress", func(c *configv1alpha1.Configuration) *string { return &c.Pprof.BindAddress }),
	stringFlag("health-probe-bind-address", "health.bindAddress", func(c *configv1alpha1.Configuration) *string { return &c.Health.BindAddress }),
	boolPtrFlag("leader-elect", "leaderElection.leaderElect", func(c *configv1alpha1.Configuration) **bool { return &c.LeaderElection.LeaderElect }),
	durationFlag("leader-elect-lease-duration", "leaderElection.leaseDuration", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.LeaderElection.LeaseDuration }),
	durationFlag("leader-elect-renew-deadline", "leaderElection.renewDeadline", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.LeaderElection.RenewDeadline }),
	durationFlag("leader-elect-retry-period", "leaderElection.retryPeriod", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.LeaderElection.RetryPeriod }),
	stringFlag("leader-election-namespace", "leaderElection.resourceNamespace", func(c *configv1alpha1.Configuration) *string { return &c.LeaderElection.ResourceNamespace }),
	stringFlag("webhook-host", "webhook.host", func(c *configv1alpha1.Configuration) *string { return &c.Webhook.Host }),
	int32Flag("webhook-port", "webhook.port", func(c *configv1alpha1.Configuration) **int32 { return &c.Webhook.Port }),
	stringFlag("webhook-cert-dir", "webhook.certDir", func(c *configv1alpha1.Configuration) *string { return &c.Webhook.CertDir }),
	durationFlag("default-timeout", "host.runs.defaultTimeout", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Runs.DefaultTimeout }),
	durationFlag("retry-backoff", "host.runs.retryBackoff", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Runs.RetryBackoff }),
	durationFlag("max-retry-backoff", "host.runs.maxRetryBackoff", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Runs.MaxRetryBackoff }),
	int32Flag("max-concurrent-runs", "host.runs.maxConcurrent", func(c *configv1alpha1.Configuration) **int32 { return &c.Host.Runs.MaxConcurrent }),
	listFlag("allowed-volume-paths", "host.volumes.allowedPaths", func(c *configv1alpha1.Configuration) *[]string { return &c.Host.Volumes.AllowedPaths }),
	boolFlag("allow-volume-relabel", "host.volumes.allowRelabel", func(c *configv1alpha1.Configuration) *bool { return &c.Host.Volumes.AllowRelabel }),
	listFlag("allowed-networks", "host.containers.allowedNetworks", func(c *configv1alpha1.Configuration) *[]string { return &c.Host.Containers.AllowedNetworks }),
	stringFlag("container-user", "host.containers.user", func(c *configv1alpha1.Configuration) *string { return &c.Host.Containers.User }),
	stringFlag("userns", "host.containers.userNS", func(c *configv1alpha1.Configuration) *string { return &c.Host.Containers.UserNS }),
	listFlag("blocked-container-paths", "host.volumes.blockedContainerPaths", func(c *configv1alpha1.Configuration) *[]string { return &c.Host.Volumes.BlockedContainerPaths }),
	listFlag("allowed-images", "host.containers.allowedImages", func(c *configv1alpha1.Configuration) *[]string { return &c.Host.Containers.AllowedImages }),
	memoryFlag("default-memory", "host.resources.defaultMemory", func(c *configv1alpha1.Configuration) **resource.Quantity { return &c.Host.Resources.DefaultMemory }),
	memoryFlag("max-memory", "host.resources.maxMemory", func(c *configv1alpha1.Configuration) **resource.Quantity { return &c.Host.Resources.MaxMemory }),
	cpusFlag("default-cpus", "host.resources.defaultCPUs", func(c *configv1alpha1.Configuration) **resource.Quantity { return &c.Host.Resources.DefaultCPUs }),
	cpusFlag("max-cpus", "host.resources.maxCPUs", func(c *configv1alpha1.Configuration) **resource.Quantity { return &c.Host.Resources.MaxCPUs }),
	int64Flag("pids-limit", "host.containers.pidsLimit", func(c *configv1alpha1.Configuration) **int64 { return &c.Host.Containers.PidsLimit }),
	memoryFlag("container-log-max-size", "host.containers.logMaxSize", func(c *configv1alpha1.Configuration) **resource.Quantity { return &c.Host.Containers.LogMaxSize }),
	listFlag("capabilities", "host.containers.capabilities", func(c *configv1alpha1.Configuration) *[]string { return &c.Host.Containers.Capabilities }),
	int32Flag("workers", "host.runs.workers", func(c *configv1alpha1.Configuration) **int32 { return &c.Host.Runs.Workers }),
	boolPtrFlag("capture-output", "host.output.capture", func(c *configv1alpha1.Configuration) **bool { return &c.Host.Output.Capture }),
	durationFlag("podman-call-timeout", "host.podmanCallTimeout", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.PodmanCallTimeout }),
	{Name: "host-labels", Field: "host.labels", set: setLabels},
	stringFlag("lease-namespace", "leaseNamespace", func(c *configv1alpha1.Configuration) *string { return &c.LeaseNamespace }),
	durationFlag("heartbeat-period", "host.heartbeat.period", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Heartbeat.Period }),
	durationFlag("host-grace-period", "host.heartbeat.gracePeriod", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Host.Heartbeat.GracePeriod }),
	{Name: "session-dir", Field: "host.sessions.dir", set: func(c *configv1alpha1.Configuration, v string) error {
		c.Host.Sessions.Dir = ptr.To(v)
		return nil
	}},
	{Name: "session-copy-max-bytes", Field: "host.sessions.copyMaxBytes", set: func(c *configv1alpha1.Configuration, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		c.Host.Sessions.CopyMaxBytes = resource.NewQuantity(n, resource.BinarySI)
		return err
	}},
	int32Flag("session-copy-max-files", "host.sessions.copyMaxFiles", func(c *configv1alpha1.Configuration) **int32 { return &c.Host.Sessions.CopyMaxFiles }),
	durationFlag("run-record-retention", "fleet.runRecordRetention", func(c *configv1alpha1.Configuration) **metav1.Duration { return &c.Fleet.RunRecordRetention }),
	boolFlag("pinned-runs-wait-for-lost-host", "fleet.pinnedRunsWaitForLostHost", func(c *configv1alpha1.Configuration) *bool { return &c.Fleet.PinnedRunsWaitForLostHost }),
	addressFlag("logs-bind-address", "host.logs.bindAddress", func(c *configv1alpha1.Configuration) *string { return &c.Host.Logs.BindAddress }),
	stringFlag("logs-url", "host.logs.url", func(c *configv1alpha1.Configuration) *string { return &c.Host.Logs.URL }),
	stringFlag("logs-cert-dir", "host.logs.certDir", func(c *configv1alpha1.Configuration) *string { return &c.Host.Logs.CertDir }),
	listFlag("notify-allowed-cidrs", "host.notify.allowedCIDRs", func(c *configv1alpha1.Configuration) *[]string { return &c.Host.Notify.AllowedCIDRs }),
	stringFlag("logs-client-ca-file", "host.logs.clientCAFile", func(c *configv1alpha1.Configuration) *string { return &c.Host.Logs.ClientCAFile }),
	addressFlag("logs-api-bind-address", "fleet.logsAPI.bindAddress", func(c *configv1alpha1.Configuration) *string { return &c.Fleet.LogsAPI.BindAddress }),
	stringFlag("logs-api-cert-dir", "fleet.logsAPI.certDir", func(c *configv1alpha1.Configuration) *string { return &c.Fleet.LogsAPI.CertDir }),
	stringFlag("logs-client-cert-dir", "fleet.logsAPI.clientCertDir", func(c *configv1alpha1.Configuration) *string { return &c.Fleet.LogsAPI.ClientCertDir }),
}

// field is how a flag reaches its field of a configuration.
type fieldOf[T any] func(c *configv1alpha1.Configuration) T

func stringFlag(name, path string, f fieldOf[*string]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		*f(c) = v
		return nil
	}}
}

// addressFlag is a bind address that "0" disabled, as the field's emptiness
// does now.
func addressFlag(name, path string, f fieldOf[*string]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		if v == "0" {
			v = ""
		}
		*f(c) = v
		return nil
	}}
}

// listFlag is a comma-separated list; empty items are dropped, and an empty
// value is an empty list (none), not the default.
func listFlag(name, path string, f fieldOf[*[]string]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		*f(c) = splitList(v)
		return nil
	}}
}

func splitList(s string) []string {
	out := []string{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func durationFlag(name, path string, f fieldOf[**metav1.Duration]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		d, err := time.ParseDuration(v)
		*f(c) = &metav1.Duration{Duration: d}
		return err
	}}
}

func boolFlag(name, path string, f fieldOf[*bool]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, Bool: true, set: func(c *configv1alpha1.Configuration, v string) error {
		b, err := strconv.ParseBool(v)
		*f(c) = b
		return err
	}}
}

func boolPtrFlag(name, path string, f fieldOf[**bool]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, Bool: true, set: func(c *configv1alpha1.Configuration, v string) error {
		b, err := strconv.ParseBool(v)
		*f(c) = ptr.To(b)
		return err
	}}
}

func int32Flag(name, path string, f fieldOf[**int32]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		*f(c) = ptr.To(int32(n))
		return err
	}}
}

func int64Flag(name, path string, f fieldOf[**int64]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		*f(c) = ptr.To(n)
		return err
	}}
}

// memoryFlag takes Podman's notation (512m, 2g: powers of 1024), as the flag
// did; empty is no limit.
func memoryFlag(name, path string, f fieldOf[**resource.Quantity]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		n, err := policy.ParseMemory(v)
		*f(c) = resource.NewQuantity(n, resource.BinarySI)
		return err
	}}
}

// cpusFlag takes Podman's --cpus notation (1, 0.5); empty is no limit.
func cpusFlag(name, path string, f fieldOf[**resource.Quantity]) DeprecatedFlag {
	return DeprecatedFlag{Name: name, Field: path, set: func(c *configv1alpha1.Configuration, v string) error {
		n, err := policy.ParseCPUs(v)
		*f(c) = resource.NewScaledQuantity(n, resource.Nano)
		return err
	}}
}

// setLabels reads --host-labels, key=value pairs separated by commas; the
// keys and values are checked with the file's (host.labels).
func setLabels(c *configv1alpha1.Configuration, v string) error {
	labels := map[string]string{}
	for _, kv := range splitList(v) {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q is not a key=value label", kv)
		}
		labels[k] = val
	}
	c.Host.Labels = labels
	return nil
}
