package policy

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// Asked is what a run asks of a host's policy, read from its spec as the
// host builds its container: the image (defaultImage, the host's, when the
// run names none), the network, the volumes and the resources.
func Asked(run *agentsv1alpha1.AgentRun, defaultImage string) (containers.Spec, error) {
	p := run.Spec.Podman
	spec := containers.Spec{Image: run.Spec.Image, Network: p.Network}
	if spec.Image == "" {
		spec.Image = defaultImage
	}
	for i, v := range p.Volumes {
		vol, err := agentsv1alpha1.ParseVolume(v)
		if err != nil {
			return containers.Spec{}, fmt.Errorf("spec.podman.volumes[%d]: %w", i, err)
		}
		spec.Mounts = append(spec.Mounts, containers.Mount{Source: vol.HostPath, Destination: vol.ContainerPath, Options: vol.Options})
	}
	var err error
	if spec.MemoryBytes, err = ParseMemory(p.Memory); err != nil {
		return containers.Spec{}, fmt.Errorf("spec.podman.memory: %w", err)
	}
	if spec.NanoCPUs, err = ParseCPUs(p.CPUs); err != nil {
		return containers.Spec{}, fmt.Errorf("spec.podman.cpus: %w", err)
	}
	return spec, nil
}

// Published is the part of the policy that decides which runs the host
// admits (Admit), for its PodmanHost's status.policy; keepsSessions tells
// whether the host keeps its runs' Claude sessions.
func (p Policy) Published(keepsSessions bool) *agentsv1alpha1.HostPolicy {
	return &agentsv1alpha1.HostPolicy{
		AllowedImages:         slices.Clone(p.AllowedImages),
		AllowedNetworks:       slices.Clone(p.AllowedNetworks),
		AllowedVolumePaths:    slices.Clone(p.AllowedVolumePaths),
		ForbiddenVolumePaths:  slices.Clone(p.ForbiddenVolumePaths),
		BlockedContainerPaths: slices.Clone(p.BlockedContainerPaths),
		AllowVolumeRelabel:    p.AllowVolumeRelabel,
		DefaultMemory:         quantity(p.DefaultMemoryBytes, 0, resource.BinarySI),
		MaxMemory:             quantity(p.MaxMemoryBytes, 0, resource.BinarySI),
		DefaultCPUs:           quantity(p.DefaultNanoCPUs, resource.Nano, resource.DecimalSI),
		MaxCPUs:               quantity(p.MaxNanoCPUs, resource.Nano, resource.DecimalSI),
		KeepsSessions:         keepsSessions,
	}
}

// FromPublished is the policy a host published, as far as Admit needs it.
func FromPublished(h *agentsv1alpha1.HostPolicy) Policy {
	return Policy{
		AllowedImages:         h.AllowedImages,
		AllowedNetworks:       h.AllowedNetworks,
		AllowedVolumePaths:    h.AllowedVolumePaths,
		ForbiddenVolumePaths:  h.ForbiddenVolumePaths,
		BlockedContainerPaths: h.BlockedContainerPaths,
		AllowVolumeRelabel:    h.AllowVolumeRelabel,
		DefaultMemoryBytes:    value(h.DefaultMemory, 0),
		MaxMemoryBytes:        value(h.MaxMemory, 0),
		DefaultNanoCPUs:       value(h.DefaultCPUs, resource.Nano),
		MaxNanoCPUs:           value(h.MaxCPUs, resource.Nano),
	}
}

// quantity is n units of scale, or nil for zero (no limit).
func quantity(n int64, scale resource.Scale, format resource.Format) *resource.Quantity {
	if n == 0 {
		return nil
	}
	q := resource.NewScaledQuantity(n, scale)
	q.Format = format
	return q
}

// value is q in units of scale; nil is zero.
func value(q *resource.Quantity, scale resource.Scale) int64 {
	if q == nil {
		return 0
	}
	return q.ScaledValue(scale)
}

// KeepsSession tells whether a run gets a Claude session directory on a
// host that keeps sessions or not: only a run of the host's default command
// does.
func KeepsSession(hostKeeps bool, run *agentsv1alpha1.AgentRun) bool {
	return hostKeeps && len(run.Spec.Command) == 0
}

// AdmitSession refuses a run that continues a session (spec.continueFrom)
// on a host that keeps none for it.
func AdmitSession(hostKeeps bool, run *agentsv1alpha1.AgentRun) *Refusal {
	if run.Spec.ContinueFrom == "" || KeepsSession(hostKeeps, run) {
		return nil
	}
	return &Refusal{agentsv1alpha1.ReasonSessionUnavailable,
		"keeps no Claude sessions (its host.sessions.dir is empty, or its default command is not Claude Code)"}
}
