// Package policy is what a Podman host allows and imposes on every container
// it runs: hardening, resource limits and their parsing, and the allowlists of
// images and volume paths. A run cannot loosen it.
package policy

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// Policy is what a host allows and imposes on every container, set by the
// manager's flags; a run cannot loosen it.
type Policy struct {
	// AllowedVolumePaths are the host directories volumes may come from
	// (each path and what is below it, after resolving symlinks).
	AllowedVolumePaths []string
	// BlockedContainerPaths may not be mounted over, nor anything below them.
	BlockedContainerPaths []string
	// AllowedImages are glob patterns; '*' matches any run of characters,
	// slashes included.
	AllowedImages []string
	// DefaultMemoryBytes and DefaultNanoCPUs apply when a run sets no limit;
	// a run may ask for up to MaxMemoryBytes and MaxNanoCPUs.
	DefaultMemoryBytes, MaxMemoryBytes int64
	DefaultNanoCPUs, MaxNanoCPUs       int64
	// PidsLimit caps the processes in a container.
	PidsLimit int64
	// Capabilities are the only capabilities a container keeps.
	Capabilities []string
	// ResolveHostPath resolves a volume's host path (symlinks) before it is
	// checked; nil means the real file system.
	ResolveHostPath func(string) (string, error)
}

// DefaultCapabilities is enough for an agent that edits files, runs git and
// build tools as root inside its container, without network, admin or
// device capabilities.
var DefaultCapabilities = []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"}

// Refusal says why a host will not run a container; Reason is one of the API's
// Reason* constants.
type Refusal struct{ Reason, Message string }

func (r *Refusal) Error() string { return r.Message }

// Apply fills in the defaults and hardening, then checks the container
// against the policy, returning a refusal that names what is not allowed.
func (p Policy) Apply(spec *containers.Spec) *Refusal {
	hostPath := p.ResolveHostPath
	if hostPath == nil {
		hostPath = filepath.EvalSymlinks
	}
	spec.NoNewPrivileges = true
	spec.CapDrop = []string{"ALL"}
	spec.CapAdd = append([]string(nil), p.Capabilities...)
	spec.PidsLimit = p.PidsLimit
	if spec.MemoryBytes == 0 {
		spec.MemoryBytes = p.DefaultMemoryBytes
	}
	if spec.NanoCPUs == 0 {
		spec.NanoCPUs = p.DefaultNanoCPUs
	}

	if !matchesAny(p.AllowedImages, spec.Image) {
		return &Refusal{agentsv1alpha1.ReasonImageNotAllowed, fmt.Sprintf(
			"image %s is not allowed on this host; allowed: %s", spec.Image, strings.Join(p.AllowedImages, ", "))}
	}
	if p.MaxMemoryBytes > 0 && spec.MemoryBytes > p.MaxMemoryBytes {
		return &Refusal{agentsv1alpha1.ReasonResourcesNotAllowed, fmt.Sprintf(
			"spec.podman.memory asks for %d bytes; this host allows at most %d", spec.MemoryBytes, p.MaxMemoryBytes)}
	}
	if p.MaxNanoCPUs > 0 && spec.NanoCPUs > p.MaxNanoCPUs {
		return &Refusal{agentsv1alpha1.ReasonResourcesNotAllowed, fmt.Sprintf(
			"spec.podman.cpus asks for %g CPUs; this host allows at most %g", float64(spec.NanoCPUs)/1e9, float64(p.MaxNanoCPUs)/1e9)}
	}
	for _, m := range spec.Mounts {
		if under(m.Destination, p.BlockedContainerPaths) {
			return &Refusal{agentsv1alpha1.ReasonVolumeNotAllowed, fmt.Sprintf(
				"volume %s:%s mounts over %s in the container, which this host blocks (%s)",
				m.Source, m.Destination, m.Destination, strings.Join(p.BlockedContainerPaths, ", "))}
		}
		resolved, err := hostPath(m.Source)
		if err != nil {
			return &Refusal{agentsv1alpha1.ReasonVolumeNotAllowed, fmt.Sprintf("volume host path %s: %v", m.Source, err)}
		}
		if !under(m.Source, p.AllowedVolumePaths) || !under(resolved, p.AllowedVolumePaths) {
			return &Refusal{agentsv1alpha1.ReasonVolumeNotAllowed, fmt.Sprintf(
				"volume host path %s is outside the paths this host allows (%s)", m.Source, strings.Join(p.AllowedVolumePaths, ", "))}
		}
	}
	return nil
}

// under tells whether p is one of dirs or below one of them.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		d = filepath.Clean(d)
		if p == d || d == "/" || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func matchesAny(patterns []string, s string) bool {
	for _, p := range patterns {
		re := "^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$"
		if regexp.MustCompile(re).MatchString(s) {
			return true
		}
	}
	return false
}
