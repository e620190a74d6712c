// Package policy is what a Podman host allows and imposes on every container
// it runs: hardening, resource limits and their parsing, and the allowlists of
// images and volume paths. A run cannot loosen it.
package policy

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// Policy is what a host allows and imposes on every container, set by the
// manager's flags; a run cannot loosen it.
type Policy struct {
	// AllowedVolumePaths are the host directories volumes may come from
	// (each path and what is below it). Empty: no volume at all.
	AllowedVolumePaths []string
	// ForbiddenVolumePaths may never be mounted, nor anything below them,
	// nor any directory that holds them, whatever AllowedVolumePaths says;
	// AlwaysForbiddenVolumePaths are added to them.
	ForbiddenVolumePaths []string
	// AllowVolumeRelabel lets volumes use U (chown the host files to the
	// container's user) and z/Z (relabel them for SELinux).
	AllowVolumeRelabel bool
	// BlockedContainerPaths may not be mounted over, nor anything below them.
	BlockedContainerPaths []string
	// AllowedImages are glob patterns; '*' matches any run of characters,
	// slashes included.
	AllowedImages []string
	// AllowedNetworks are the networks (or network modes) runs may ask for;
	// a run that names none gets Podman's default bridge network.
	AllowedNetworks []string
	// User is the user:group every container runs as; UserNS, when set, is
	// its user namespace mode (auto needs /etc/subuid and /etc/subgid
	// entries for the containers user).
	User, UserNS string
	// DefaultMemoryBytes and DefaultNanoCPUs apply when a run sets no limit;
	// a run may ask for up to MaxMemoryBytes and MaxNanoCPUs.
	DefaultMemoryBytes, MaxMemoryBytes int64
	DefaultNanoCPUs, MaxNanoCPUs       int64
	// PidsLimit caps the processes in a container.
	PidsLimit int64
	// LogMaxBytes bounds a container's log on the host, so that a run that
	// prints without end neither fills the host's storage nor makes the
	// reads of its output grow with it; zero leaves Podman's default (no
	// bound).
	LogMaxBytes int64
	// Capabilities are the only capabilities a container keeps.
	Capabilities []string
	// ResolveHostPath resolves a volume's host path (symlinks) to check
	// that it is the path handed to Podman; nil means the real file system.
	ResolveHostPath func(string) (string, error)
}

// AlwaysForbiddenVolumePaths are host paths no run may mount: the host's
// kernel interfaces, devices, runtime state (Podman's sockets among it),
// configuration and Podman's storage.
var AlwaysForbiddenVolumePaths = []string{"/proc", "/sys", "/dev", "/run", "/etc", "/var/lib/containers"}

// DefaultUser is the user containers run as unless the host says otherwise:
// not root, so that a process that escapes its task cannot write as root
// into a bind mount; the agent image's own user has this ID.
const DefaultUser = "1000:1000"

// DefaultNetworks are the networks runs may name unless the host says
// otherwise: none only. A run on a Podman network (bridge, say) reaches
// whatever that network does, past the egress proxy, so it is the host
// owner's choice (host.containers.allowedNetworks), not a run's.
var DefaultNetworks = []string{"none"}

// DefaultCapabilities is none. Podman hands the capabilities it adds to a
// non-root user's ambient set, so any capability kept here would be held in
// full by the agent's processes: with SETUID one becomes root, with CHOWN or
// FOWNER one takes over files in a bind mount. A host that runs containers
// as root and needs some lists them in host.containers.capabilities.
var DefaultCapabilities []string

// Refusal says why a host will not run a container; Reason is one of the API's
// Reason* constants.
type Refusal struct{ Reason, Message string }

func (r *Refusal) Error() string { return r.Message }

// Apply fills in the defaults and hardening, then checks the container
// against the policy (Admit, then the host's file system), returning a
// refusal that names what is not allowed.
func (p Policy) Apply(spec *containers.Spec) *Refusal {
	spec.NoNewPrivileges = true
	spec.CapDrop = []string{"ALL"}
	spec.CapAdd = append([]string(nil), p.Capabilities...)
	spec.PidsLimit = p.PidsLimit
	spec.LogMaxBytes = p.LogMaxBytes
	spec.User, spec.UserNS = p.User, p.UserNS
	spec.MemoryBytes = cmp.Or(spec.MemoryBytes, p.DefaultMemoryBytes)
	spec.NanoCPUs = cmp.Or(spec.NanoCPUs, p.DefaultNanoCPUs)
	if refused := p.Admit(*spec); refused != nil {
		return refused
	}
	for _, m := range spec.Mounts {
		if refused := p.checkLinks(m); refused != nil {
			return refused
		}
	}
	return nil
}

// Admit checks what a container asks for (Asked) against the rules that
// need nothing but the spec: the image, the network, the resources (a limit
// left out gets the default), and each volume's place, options and
// allowlist. The host holds every container to it (Apply, CheckMounts);
// placement holds a run to each host's published policy with it
// (FromPublished), so a run goes only where it would be admitted.
func (p Policy) Admit(spec containers.Spec) *Refusal {
	if !matchesAny(p.AllowedImages, spec.Image) {
		return &Refusal{agentsv1alpha1.ReasonImageNotAllowed, fmt.Sprintf(
			"image %s is not allowed on this host (allowed: %s)", spec.Image, strings.Join(p.AllowedImages, ", "))}
	}
	if spec.Network != "" && !slices.Contains(p.AllowedNetworks, spec.Network) {
		return &Refusal{agentsv1alpha1.ReasonNetworkNotAllowed, fmt.Sprintf(
			"network %q is not allowed on this host (host.containers.allowedNetworks: %s); a run on a network bypasses the egress proxy: "+
				"leave spec.podman.network empty and list the names the run needs in spec.egress.allow", spec.Network, strings.Join(p.AllowedNetworks, ", "))}
	}
	if memory := cmp.Or(spec.MemoryBytes, p.DefaultMemoryBytes); p.MaxMemoryBytes > 0 && memory > p.MaxMemoryBytes {
		return &Refusal{agentsv1alpha1.ReasonResourcesNotAllowed, fmt.Sprintf(
			"spec.podman.memory asks for %d bytes (this host allows at most %d)", memory, p.MaxMemoryBytes)}
	}
	if cpus := cmp.Or(spec.NanoCPUs, p.DefaultNanoCPUs); p.MaxNanoCPUs > 0 && cpus > p.MaxNanoCPUs {
		return &Refusal{agentsv1alpha1.ReasonResourcesNotAllowed, fmt.Sprintf(
			"spec.podman.cpus asks for %g CPUs (this host allows at most %g)", float64(cpus)/1e9, float64(p.MaxNanoCPUs)/1e9)}
	}
	for _, m := range spec.Mounts {
		if refused := p.admitMount(m); refused != nil {
			return refused
		}
	}
	return nil
}

// CheckMounts checks only the volumes, against the host's file system as it
// is now: a start of a container created earlier (a retry, an adopted
// container) calls it again, since a path can change after a check.
func (p Policy) CheckMounts(spec containers.Spec) *Refusal {
	for _, m := range spec.Mounts {
		if refused := p.admitMount(m); refused != nil {
			return refused
		}
		if refused := p.checkLinks(m); refused != nil {
			return refused
		}
	}
	return nil
}

// admitMount checks a volume's place, options and host path against the
// allowlist, without the file system.
func (p Policy) admitMount(m containers.Mount) *Refusal {
	refuse := refuser(m)
	if refused := p.checkPlace(m); refused != nil {
		return refused
	}
	if changes := (agentsv1alpha1.Volume{Options: m.Options}).HostChanges(); len(changes) > 0 && !p.AllowVolumeRelabel {
		return refuse("%s; this host does not allow that (host.volumes.allowRelabel)", strings.Join(changes, "; "))
	}
	if !under(m.Source, p.AllowedVolumePaths) {
		if len(p.AllowedVolumePaths) == 0 {
			return refuse("this host allows no volumes (its host.volumes.allowedPaths is empty)")
		}
		return refuse("host path %s is outside the paths this host allows (%s)", m.Source, strings.Join(p.AllowedVolumePaths, ", "))
	}
	return nil
}

// CheckHostMount holds a mount the host makes itself (a run's session
// directory), which no allowlist names, to the checks every volume passes
// besides the allowlist: no blocked container path, no forbidden host path,
// no symbolic link on the way.
func (p Policy) CheckHostMount(m containers.Mount) *Refusal {
	if refused := p.checkPlace(m); refused != nil {
		return refused
	}
	return p.checkLinks(m)
}

// checkPlace refuses a mount over a blocked container path or of a
// forbidden host path.
func (p Policy) checkPlace(m containers.Mount) *Refusal {
	refuse := refuser(m)
	if under(m.Destination, p.BlockedContainerPaths) {
		return refuse("mounts over %s in the container, which this host blocks (%s)", m.Destination, strings.Join(p.BlockedContainerPaths, ", "))
	}
	forbidden := append(slices.Clone(AlwaysForbiddenVolumePaths), p.ForbiddenVolumePaths...)
	for _, f := range forbidden {
		f = filepath.Clean(f)
		if under(m.Source, []string{f}) || under(f, []string{m.Source}) {
			return refuse("host path %s is or holds %s, which no run may mount", m.Source, f)
		}
	}
	return nil
}

// checkLinks refuses a mount whose host path goes through a symbolic link.
func (p Policy) checkLinks(m containers.Mount) *Refusal {
	if link, err := p.firstLink(m.Source); err != nil {
		return refuser(m)("host path %s: %v", m.Source, err)
	} else if link != "" {
		return refuser(m)("%s is a symbolic link; volumes must name the real path, which is the one Podman mounts", link)
	}
	return nil
}

// refuser makes the refusals of mount m.
func refuser(m containers.Mount) func(format string, args ...any) *Refusal {
	volume := m.Source + ":" + m.Destination
	return func(format string, args ...any) *Refusal {
		return &Refusal{agentsv1alpha1.ReasonVolumeNotAllowed, "volume " + volume + ": " + fmt.Sprintf(format, args...)}
	}
}

// firstLink returns the first component of path that is a symbolic link,
// or "" when the path resolves to itself.
func (p Policy) firstLink(path string) (string, error) {
	resolve := p.ResolveHostPath
	if resolve == nil {
		resolve = filepath.EvalSymlinks
	}
	resolved, err := resolve(path)
	if err != nil || resolved == path {
		return "", err
	}
	prefix := ""
	for _, part := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		prefix += "/" + part
		if r, err := resolve(prefix); err != nil || r != prefix {
			return prefix, nil
		}
	}
	return path, nil
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
	return slices.ContainsFunc(patterns, func(p string) bool { return globMatch(p, s) })
}

// globMatch tells whether s matches pattern, where each '*' stands for any
// run of characters and every other byte for itself. Placement asks it of
// every waiting run against every host's images as slots free, so it
// compiles nothing and allocates nothing (a regular expression compiled a
// call was half the fleet's CPU with 4,000 runs waiting, make scale).
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	star, resume := -1, 0 // the last '*' seen, and where in s it next resumes
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, resume = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			// The last star takes one more byte; what follows it is
			// matched again from there.
			resume++
			p, i = star+1, resume
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
