// Package placement decides which Podman host an unpinned AgentRun goes to:
// a pure function of the run and the hosts as their PodmanHosts report them,
// so the fleet's scheduler and its tests share one set of rules.
package placement

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/policy"
)

// Host is one Podman host as placement sees it.
type Host struct {
	Name          string
	Labels        map[string]string
	Ready         bool
	Unschedulable bool
	// Capacity is how many unfinished runs the host takes; 0 means no cap.
	Capacity int
	// Load is how many unfinished runs the host holds now.
	Load         int
	Secrets      []string
	Images       []string
	DefaultImage string
	// Egress is the host's published egress policy; nil for a host from
	// before egress, which would not hold a run to its spec.egress.
	Egress *agentsv1alpha1.HostEgress
	// Policy is what the host admits of a run's container; nil for a host
	// from before it was published, which placement does not hold runs to.
	Policy *agentsv1alpha1.HostPolicy
}

// FromPodmanHost reads a PodmanHost; load is counted by the caller, from
// the runs themselves, which are fresher than the host's own report.
func FromPodmanHost(h *agentsv1alpha1.PodmanHost, load int) Host {
	return Host{
		Name: h.Name, Labels: h.Labels, Ready: meta.IsStatusConditionTrue(h.Status.Conditions, agentsv1alpha1.HostConditionReady),
		Unschedulable: h.Spec.Unschedulable,
		Capacity:      int(h.Status.Capacity), Load: load,
		Secrets: h.Status.Secrets, Images: h.Status.Images, DefaultImage: h.Status.DefaultImage,
		Egress: h.Status.Egress, Policy: h.Status.Policy,
	}
}

// Lacks says what h lacks to run run now, or "" when it can run it.
func Lacks(run *agentsv1alpha1.AgentRun, h Host) string {
	why, _ := lacks(run, h)
	return why
}

// CouldRun tells whether h could run run once it has a free slot: a free
// slot is all it lacks, if anything.
func CouldRun(run *agentsv1alpha1.AgentRun, h Host) bool {
	why, onlyASlot := lacks(run, h)
	return why == "" || onlyASlot
}

// Full tells whether h runs as many runs as it may.
func (h Host) Full() bool {
	return h.Capacity > 0 && h.Load >= h.Capacity
}

// lacks says what h lacks to run run now, and whether a free slot is all
// of it. The slot's part names the capacity, not the load, so that the
// message of a run that waits for a slot stays the same while the hosts
// stay full.
func lacks(run *agentsv1alpha1.AgentRun, h Host) (why string, onlyASlot bool) {
	switch {
	case !h.Ready:
		return "not Ready", false
	case h.Unschedulable:
		return "unschedulable (cordoned)", false
	}
	var lacks []string
	if sel := run.Spec.HostSelector; sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return "spec.hostSelector is invalid: " + err.Error(), false
		}
		if !s.Matches(labels.Set(h.Labels)) {
			lacks = append(lacks, "labels matching spec.hostSelector")
		}
	}
	var missing []string
	for _, name := range run.Spec.Podman.SecretsEnv {
		if !slices.Contains(h.Secrets, string(name)) && !slices.Contains(missing, string(name)) {
			missing = append(missing, string(name))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		lacks = append(lacks, "secret(s) "+strings.Join(missing, ", "))
	}
	image := run.Spec.Image
	if image == "" {
		image = h.DefaultImage
	}
	if image != "" && !HasImage(h.Images, image) {
		lacks = append(lacks, "image "+image)
	}
	if run.Spec.Egress != nil {
		if why := egressLacks(run.Spec.Egress.Allow, h.Egress); why != "" {
			lacks = append(lacks, why)
		}
	}
	if why := refusedBy(run, h); why != "" {
		lacks = append(lacks, why)
	}
	if !h.Full() {
		return strings.Join(lacks, ", "), false
	}
	onlyASlot = len(lacks) == 0
	lacks = append(lacks, fmt.Sprintf("a free slot (all %d in use)", h.Capacity))
	return strings.Join(lacks, ", "), onlyASlot
}

// egressLacks says which names of a run's spec.egress.allow a host does not
// let a run ask for, or "" when it lets it ask for all: its ceiling
// (permitted) and its default names, which every run reaches anyway, must
// cover each. A host that publishes no policy takes no such run: it would
// not hold the run to its list.
func egressLacks(allow []string, published *agentsv1alpha1.HostEgress) string {
	if published == nil {
		return "an egress proxy (it publishes no status.egress: an agentrun release from before egress)"
	}
	asked, err := egress.ParsePolicy(allow...)
	if err != nil {
		return "spec.egress.allow is invalid: " + err.Error()
	}
	ceiling, err := egress.ParsePolicy(slices.Concat(published.Permitted, published.Default)...)
	if err != nil {
		return "a readable status.egress: " + err.Error()
	}
	uncovered := ceiling.Uncovered(asked)
	if len(uncovered) == 0 {
		return ""
	}
	names := make([]string, len(uncovered))
	for i, p := range uncovered {
		names[i] = p.String()
	}
	return "egress to " + strings.Join(names, ", ") + " not permitted"
}

// refusedBy says why h's published policy refuses run, as the host would
// refuse its launch, or "" when it admits it or publishes no policy.
func refusedBy(run *agentsv1alpha1.AgentRun, h Host) string {
	if h.Policy == nil {
		return ""
	}
	asked, err := policy.Asked(run, h.DefaultImage)
	if err != nil {
		return err.Error()
	}
	refused := policy.FromPublished(h.Policy).Admit(asked)
	if refused == nil {
		refused = policy.AdmitSession(h.Policy.KeepsSessions, run)
	}
	if refused == nil {
		return ""
	}
	return refused.Message
}

// Choose picks the host for run: among the hosts that lack nothing, the one
// with the lowest share of its capacity in use (then the fewest runs, then
// the name, so the choice is stable). When none can run it, host is "" and
// why names, per host, what it lacks; waitsForSlot tells that a host lacks
// only a free slot: the run is in line, not stuck.
func Choose(run *agentsv1alpha1.AgentRun, hosts []Host) (host, why string, waitsForSlot bool) {
	var best *Host
	var reasons []string
	for i := range hosts {
		h := &hosts[i]
		if lacks, onlyASlot := lacks(run, *h); lacks != "" {
			reasons = append(reasons, h.Name+": "+lacks)
			waitsForSlot = waitsForSlot || onlyASlot
			continue
		}
		if best == nil || lessLoaded(h, best) {
			best = h
		}
	}
	if best != nil {
		return best.Name, "", false
	}
	if len(hosts) == 0 {
		return "", "no Podman host has joined the cluster (kubectl get podmanhosts)", false
	}
	slices.Sort(reasons)
	return "", "no Podman host can run it now; " + strings.Join(reasons, "; "), waitsForSlot
}

func lessLoaded(a, b *Host) bool {
	// a.Load/a.Capacity < b.Load/b.Capacity, without division; when a host
	// has no cap, the plain counts compare.
	al, bl := a.Load, b.Load
	if a.Capacity > 0 && b.Capacity > 0 {
		al, bl = a.Load*b.Capacity, b.Load*a.Capacity
	}
	if al != bl {
		return al < bl
	}
	if a.Load != b.Load {
		return a.Load < b.Load
	}
	return a.Name < b.Name
}

// HasImage tells whether image is among names, as Podman resolves a name
// against local storage: a name without a tag means ":latest", and a short
// name ("agent:1", no registry) also matches "localhost/agent:1" and Docker
// Hub's "docker.io/library/agent:1".
func HasImage(names []string, image string) bool {
	want := canonical(image)
	short := !hasRegistry(want)
	for _, n := range names {
		n = canonical(n)
		if n == want || short && (n == "localhost/"+want || n == canonical("docker.io/"+want)) {
			return true
		}
	}
	return false
}

// canonical adds the default tag, and Docker Hub's library/ to its
// one-part names.
func canonical(image string) string {
	if strings.Contains(image, "@") {
		return image // a digest names one image exactly
	}
	if slash := strings.LastIndex(image, "/"); !strings.Contains(image[slash+1:], ":") {
		image += ":latest"
	}
	if rest, ok := strings.CutPrefix(image, "docker.io/"); ok && !strings.Contains(rest, "/") {
		image = "docker.io/library/" + rest
	}
	return image
}

// hasRegistry tells whether the name starts with a registry host, which has
// a dot or a port, or is localhost.
func hasRegistry(image string) bool {
	first, _, ok := strings.Cut(image, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}
