package host

import (
	"slices"
	"time"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/internal/config"
	"github.com/agentrun/agentrun/internal/containers"
)

// ConfigFromFile is the configuration of host name's reconciler, over rt,
// from a defaulted and validated configuration file (its host section and
// leaseNamespace): what the manager binary runs with --mode=host, and what
// make scale's simulated hosts run (test/scale/simhosts).
func ConfigFromFile(c *configv1alpha1.Configuration, name string, rt containers.Runtime) (HostConfig, error) {
	h := &c.Host
	notifyAllowed, err := config.NotifyAllowed(h)
	if err != nil {
		return HostConfig{}, err
	}
	endpoint, fieldErr := config.LogEndpoint(&h.Logs)
	if fieldErr != nil {
		return HostConfig{}, fieldErr
	}
	proxy, err := config.EgressProxy(h)
	if err != nil {
		return HostConfig{}, err
	}
	var logs *LogEndpoint
	if endpoint != nil {
		logs = &LogEndpoint{BindAddress: endpoint.BindAddress, URL: endpoint.URL, CertDir: endpoint.CertDir, ClientCAFile: endpoint.ClientCAFile}
	}
	return HostConfig{
		Host:                name,
		Runtime:             containers.WithCallTimeout(rt, h.PodmanCallTimeout.Duration),
		DiscardOutput:       !*h.Output.Capture,
		Defaults:            Defaults{Image: h.Runs.DefaultImage, Command: h.Runs.DefaultCommand},
		OutputTailBytes:     int(*h.Output.TailBytes),
		ProgressPeriod:      h.Output.ProgressPeriod.Duration,
		KeepContainers:      h.Runs.KeepContainers,
		StopGracePeriod:     h.Runs.StopGracePeriod.Duration,
		ResyncPeriod:        h.Runs.ResyncPeriod.Duration,
		RecheckPeriod:       h.Runs.RecheckPeriod.Duration,
		DefaultTimeout:      h.Runs.DefaultTimeout.Duration,
		RetryBackoff:        h.Runs.RetryBackoff.Duration,
		MaxRetryBackoff:     h.Runs.MaxRetryBackoff.Duration,
		MaxConcurrentRuns:   int(*h.Runs.MaxConcurrent),
		Policy:              config.Policy(h),
		Workers:             int(*h.Runs.Workers),
		EventRetryPeriod:    2 * time.Second,
		Labels:              config.Labels(h),
		LeaseNamespace:      c.LeaseNamespace,
		HeartbeatPeriod:     h.Heartbeat.Period.Duration,
		GracePeriod:         h.Heartbeat.GracePeriod.Duration,
		RecordRuns:          true,
		SessionDir:          *h.Sessions.Dir,
		SessionCopyMaxBytes: h.Sessions.CopyMaxBytes.Value(),
		SessionCopyMaxFiles: int(*h.Sessions.CopyMaxFiles),
		LogEndpoint:         logs,
		NotifyAllowedCIDRs:  notifyAllowed,
		Egress:              config.HostEgress(h),
		EgressProxy: EgressProxy{
			SocketDir: *h.Egress.SocketDir, Forwarder: *h.Egress.Forwarder, Proxy: proxy,
			UpstreamCAFile: h.Egress.UpstreamCAFile, CABundlePaths: slices.Clone(h.Egress.CABundlePaths),
		},
	}, nil
}
