package config

import (
	"maps"
	"net/netip"
	"path/filepath"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
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
	cidrs, errs := notifyAllowed(h.Notify.AllowedCIDRs, field.NewPath("host", "notify", "allowedCIDRs"))
	return cidrs, errs.ToAggregate()
}

// Labels is a copy of host.labels, never nil.
func Labels(h *configv1alpha1.HostConfiguration) map[string]string {
	out := map[string]string{}
	maps.Copy(out, h.Labels)
	return out
}
