package config

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/netguard"
	"github.com/agentrun/agentrun/internal/policy"
)

// Policy is the hardening and the limits every container of the host gets,
// from a defaulted host section.
func Policy(h *configv1alpha1.HostConfiguration) policy.Policy {
	return policy.Policy{
		AllowedVolumePaths:    slices.Clone(h.Volumes.AllowedPaths),
		ForbiddenVolumePaths:  []string{filepath.Dir(h.PodmanSocket)},
		AllowVolumeRelabel:    h.Volumes.AllowRelabel,
		AllowedNetworks:       slices.Clone(h.Containers.AllowedNetworks),
		User:                  h.Containers.User,
		UserNS:                h.Containers.UserNS,
		BlockedContainerPaths: slices.Clone(h.Volumes.BlockedContainerPaths),
		AllowedImages:         slices.Clone(h.Containers.AllowedImages),
		PidsLimit:             *h.Containers.PidsLimit,
		Capabilities:          slices.Clone(h.Containers.Capabilities),
		DefaultMemoryBytes:    h.Resources.DefaultMemory.Value(),
		MaxMemoryBytes:        h.Resources.MaxMemory.Value(),
		DefaultNanoCPUs:       nanoCPUs(h.Resources.DefaultCPUs),
		MaxNanoCPUs:           nanoCPUs(h.Resources.MaxCPUs),
		LogMaxBytes:           h.Containers.LogMaxSize.Value(),
	}
}

func nanoCPUs(q *resource.Quantity) int64 { return q.ScaledValue(resource.Nano) }

// NotifyAllowed is host.notify.allowedCIDRs, parsed and masked.
func NotifyAllowed(h *configv1alpha1.HostConfiguration) ([]netip.Prefix, error) {
	cidrs, errs := parseCIDRs(h.Notify.AllowedCIDRs, field.NewPath("host", "notify", "allowedCIDRs"))
	return cidrs, errs.ToAggregate()
}

// EgressProxy is the host's egress proxy's settings, from host.egress.
func EgressProxy(h *configv1alpha1.HostConfiguration) (egress.Config, error) {
	e := &h.Egress
	cidrs, errs := parseCIDRs(e.AllowedCIDRs, field.NewPath("host", "egress", "allowedCIDRs"))
	if len(errs) > 0 {
		return egress.Config{}, errs.ToAggregate()
	}
	cfg := egress.Config{
		Destinations: netguard.Destinations{Allowed: cidrs},
		DialTimeout:  e.DialTimeout.Duration,
		IdleTimeout:  e.IdleTimeout.Duration,
		MaxConns:     int(*e.MaxConnectionsPerRun),
	}
	if e.Resolver != "" {
		cfg.Resolver = resolverAt(e.Resolver)
	}
	return cfg, nil
}

// resolverAt looks names up with the DNS server at addr alone, whatever the
// host's resolv.conf says.
func resolverAt(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// HostEgress is the host's egress policy as the host applies and publishes
// it: its mode, defaults and ceiling.
func HostEgress(h *configv1alpha1.HostConfiguration) agentsv1alpha1.HostEgress {
	return agentsv1alpha1.HostEgress{
		Mode:      agentsv1alpha1.EgressMode(h.Egress.Mode),
		Default:   slices.Clone(h.Egress.Default),
		Permitted: slices.Clone(h.Egress.Permitted),
	}
}

// Labels is a copy of host.labels, never nil.
func Labels(h *configv1alpha1.HostConfiguration) map[string]string {
	out := map[string]string{}
	maps.Copy(out, h.Labels)
	return out
}
