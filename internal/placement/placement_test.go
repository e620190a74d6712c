package placement

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/policy"
)

func run(image string, secrets map[string]agentsv1alpha1.SecretName, sel *metav1.LabelSelector) *agentsv1alpha1.AgentRun {
	return &agentsv1alpha1.AgentRun{Spec: agentsv1alpha1.AgentRunSpec{
		Prompt: "p", Image: image, HostSelector: sel,
		Podman: agentsv1alpha1.PodmanSpec{SecretsEnv: secrets},
	}}
}

func host(name string, load, capacity int) Host {
	return Host{Name: name, Ready: true, Capacity: capacity, Load: load,
		Images: []string{"localhost/agent:1"}, DefaultImage: "localhost/agent:1", Labels: map[string]string{"zone": name}}
}

func TestChoosePicksTheOnlyHostWithTheSecret(t *testing.T) {
	a, b := host("a", 0, 4), host("b", 3, 4)
	b.Secrets = []string{"gh"}
	got, why, _ := Choose(run("", map[string]agentsv1alpha1.SecretName{"GH_TOKEN": "gh"}, nil), []Host{a, b})
	if got != "b" || why != "" {
		t.Fatalf("Choose = %q, %q; want b", got, why)
	}
}

func TestChoosePrefersTheLessLoadedShare(t *testing.T) {
	// 2 of 8 is less busy than 1 of 2.
	got, _, _ := Choose(run("", nil, nil), []Host{host("small", 1, 2), host("big", 2, 8)})
	if got != "big" {
		t.Fatalf("Choose = %q; want big", got)
	}
	got, _, _ = Choose(run("", nil, nil), []Host{host("busy", 3, 0), host("idle", 1, 0)})
	if got != "idle" {
		t.Fatalf("uncapped hosts: Choose = %q; want idle", got)
	}
	got, _, _ = Choose(run("", nil, nil), []Host{host("b", 1, 4), host("a", 1, 4)})
	if got != "a" {
		t.Fatalf("equal loads: Choose = %q; want a, by name", got)
	}
}

func TestChooseSaysWhatEachHostLacks(t *testing.T) {
	full := host("full", 4, 4)
	down := host("down", 0, 4)
	down.Ready = false
	other := host("other", 0, 4)
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "full"}}
	got, why, _ := Choose(run("localhost/other:2", map[string]agentsv1alpha1.SecretName{"A": "s1"}, sel), []Host{full, down, other})
	if got != "" {
		t.Fatalf("Choose = %q; want none", got)
	}
	for _, want := range []string{
		"down: not Ready",
		"full: secret(s) s1, image localhost/other:2, a free slot (all 4 in use)",
		"other: labels matching spec.hostSelector, secret(s) s1, image localhost/other:2",
	} {
		if !strings.Contains(why, want) {
			t.Errorf("message %q lacks %q", why, want)
		}
	}
	if _, why, _ := Choose(run("", nil, nil), nil); !strings.Contains(why, "no Podman host") {
		t.Errorf("no hosts: message %q", why)
	}
}

func TestCordonedHostGetsNothing(t *testing.T) {
	h := host("a", 0, 4)
	h.Unschedulable = true
	if got, _, _ := Choose(run("", nil, nil), []Host{h}); got != "" {
		t.Fatalf("Choose = %q; want none", got)
	}
}

func TestHasImageResolvesAsPodmanDoes(t *testing.T) {
	names := []string{"localhost/agent:1", "docker.io/library/busybox:latest", "quay.io/x/y:2"}
	for image, want := range map[string]bool{
		"localhost/agent:1": true, "agent:1": true, "agent": false, "busybox": true,
		"docker.io/busybox": true, "quay.io/x/y:2": true, "y:2": false, "quay.io/x/y": false,
	} {
		if got := HasImage(names, image); got != want {
			t.Errorf("HasImage(%q) = %v; want %v", image, got, want)
		}
	}
}

// The message is the run's: whoever may read the run reads it. It names
// the secrets of the run a host lacks, never the other secrets hosts hold
// (other teams' keys), nor which of the run's own a host has.
func TestTheUnschedulableMessageNamesOnlyTheRunsOwnSecrets(t *testing.T) {
	a, b := host("a", 0, 4), host("b", 4, 4)
	a.Secrets = []string{"team-b-deploy-key", "run-key"}
	b.Secrets = []string{"team-c-signing-key", "run-key", "notify-key"}
	r := run("", map[string]agentsv1alpha1.SecretName{"TOKEN": "run-key", "OTHER": "absent-key"}, nil)
	r.Spec.Notify = &agentsv1alpha1.NotifySpec{URL: "https://ci.example.com/", SecretName: "notify-key"}
	got, why, _ := Choose(r, []Host{a, b})
	if got != "" {
		t.Fatalf("Choose = %q; want none", got)
	}
	for _, want := range []string{"a: secret(s) absent-key", "b: secret(s) absent-key"} {
		if !strings.Contains(why, want) {
			t.Errorf("message %q lacks %q", why, want)
		}
	}
	for _, held := range []string{"team-b-deploy-key", "team-c-signing-key", "run-key", "notify-key"} {
		if strings.Contains(why, held) {
			t.Errorf("message %q names %s, which the host holds", why, held)
		}
	}
}

func egressRun(allow ...string) *agentsv1alpha1.AgentRun {
	r := run("", nil, nil)
	r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: allow}
	return r
}

func egressHost(name string, permitted ...string) Host {
	h := host(name, 0, 4)
	h.Egress = &agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy, Default: []string{"api.anthropic.com"}, Permitted: permitted}
	return h
}

func TestARunWithEgressGoesOnlyWhereTheCeilingCoversEveryName(t *testing.T) {
	github, example, old := egressHost("github", "*.github.com"), egressHost("example", "api.example.com"), host("old", 0, 4)
	hosts := []Host{github, example, old}
	// The default names need no ceiling; a wildcard covers the names below it.
	if got, why, _ := Choose(egressRun("api.github.com", "api.anthropic.com"), hosts); got != "github" {
		t.Fatalf("Choose = %q, %q; want github", got, why)
	}
	if got, why, _ := Choose(egressRun("api.example.com"), hosts); got != "example" {
		t.Fatalf("Choose = %q, %q; want example", got, why)
	}
	got, why, _ := Choose(egressRun("api.example.com", "*.foo.test", "github.com:22"), hosts)
	if got != "" {
		t.Fatalf("Choose = %q; want none", got)
	}
	for _, want := range []string{
		"example: egress to *.foo.test, github.com:22 not permitted",
		"github: egress to api.example.com, *.foo.test, github.com:22 not permitted",
		"old: an egress proxy (it publishes no status.egress",
	} {
		if !strings.Contains(why, want) {
			t.Errorf("message %q lacks %q", why, want)
		}
	}
}

func TestAHostThatPublishesNoEgressTakesOnlyRunsWithoutIt(t *testing.T) {
	old := host("old", 0, 4)
	if got, why, _ := Choose(egressRun(), []Host{old}); got != "" || !strings.Contains(why, "old: an egress proxy") {
		t.Fatalf("a run with an empty spec.egress: Choose = %q, %q; want none, the host lacking an egress proxy", got, why)
	}
	if got, why, _ := Choose(egressRun(), []Host{old, egressHost("new")}); got != "new" {
		t.Fatalf("Choose = %q, %q; want new", got, why)
	}
	if got, why, _ := Choose(run("", nil, nil), []Host{old}); got != "old" {
		t.Fatalf("a run without spec.egress: Choose = %q, %q; want old", got, why)
	}
}

// policyHost publishes a policy that admits localhost images, no network
// but none, volumes from /srv (no relabel), up to 1Gi and 2 CPUs, and keeps
// sessions.
func policyHost(name string) Host {
	h := host(name, 0, 4)
	h.Policy = policy.Policy{
		AllowedImages: []string{"localhost/*"}, AllowedNetworks: []string{"none"},
		AllowedVolumePaths: []string{"/srv"}, ForbiddenVolumePaths: []string{"/srv/podman"}, BlockedContainerPaths: []string{"/usr"},
		DefaultMemoryBytes: 512 << 20, MaxMemoryBytes: 1 << 30, DefaultNanoCPUs: 1e9, MaxNanoCPUs: 2e9,
	}.Published(true)
	h.Images = append(h.Images, "quay.io/x/agent:1")
	return h
}

func TestARunGoesOnlyWhereTheHostsPolicyAdmitsIt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r *agentsv1alpha1.AgentRun)
		want   string
	}{
		{"image", func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = "quay.io/x/agent:1" }, "image quay.io/x/agent:1 is not allowed on this host (allowed: localhost/*)"},
		{"network", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Network = "host" }, `network "host" is not allowed on this host`},
		{"volume path", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/home/u/repo:/work"} }, "volume /home/u/repo:/work: host path /home/u/repo is outside the paths this host allows (/srv)"},
		{"forbidden path", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/srv/podman/x:/work"} }, "volume /srv/podman/x:/work: host path /srv/podman/x is or holds /srv/podman, which no run may mount"},
		{"blocked container path", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/srv/repo:/usr/local"} }, "volume /srv/repo:/usr/local: mounts over /usr/local in the container"},
		{"relabel", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/srv/repo:/work:Z"} }, "volume /srv/repo:/work: option Z relabels"},
		{"memory", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Memory = "2g" }, "spec.podman.memory asks for 2147483648 bytes (this host allows at most 1073741824)"},
		{"cpus", func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.CPUs = "3" }, "spec.podman.cpus asks for 3 CPUs (this host allows at most 2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run("", nil, nil)
			tc.change(r)
			strict, loose := policyHost("strict"), policyHost("loose")
			loose.Policy = &agentsv1alpha1.HostPolicy{
				AllowedImages: []string{"*"}, AllowedNetworks: []string{"none", "host"}, AllowedVolumePaths: []string{"/"}, AllowVolumeRelabel: true,
			}
			if got, why, _ := Choose(r, []Host{strict, loose}); got != "loose" {
				t.Fatalf("Choose = %q, %q; want loose", got, why)
			}
			got, why, _ := Choose(r, []Host{strict})
			if got != "" || !strings.Contains(why, "strict: "+tc.want) {
				t.Fatalf("Choose = %q, %q; want none, with %q", got, why, "strict: "+tc.want)
			}
		})
	}
}

func TestARunWithinTheHostsPolicyGoesThere(t *testing.T) {
	r := run("localhost/agent:1", nil, nil)
	r.Spec.Podman = agentsv1alpha1.PodmanSpec{Volumes: []string{"/srv/repo:/work:ro"}, Memory: "1g", CPUs: "2", Network: "none"}
	if got, why, _ := Choose(r, []Host{policyHost("a")}); got != "a" {
		t.Fatalf("Choose = %q, %q; want a", got, why)
	}
}

func TestARunThatContinuesASessionNeedsAHostThatKeepsThem(t *testing.T) {
	r := run("", nil, nil)
	r.Spec.ContinueFrom = "earlier"
	keeps, keepsNone := policyHost("keeps"), policyHost("none")
	keepsNone.Policy.KeepsSessions = false
	if got, why, _ := Choose(r, []Host{keeps}); got != "keeps" {
		t.Fatalf("Choose = %q, %q; want keeps", got, why)
	}
	if got, why, _ := Choose(r, []Host{keepsNone}); got != "" || !strings.Contains(why, "none: keeps no Claude sessions") {
		t.Fatalf("Choose = %q, %q; want none, the host keeping no sessions", got, why)
	}
	if got, why, _ := Choose(run("", nil, nil), []Host{keepsNone}); got != "none" {
		t.Fatalf("a run that continues nothing: Choose = %q, %q; want none", got, why)
	}
}

// A host from before status.policy is held to nothing it did not publish,
// as before; its own launch still checks.
func TestAHostThatPublishesNoPolicyIsNotHeldToOne(t *testing.T) {
	r := run("quay.io/x/agent:1", nil, nil)
	r.Spec.Podman = agentsv1alpha1.PodmanSpec{Volumes: []string{"/home/u:/work:Z"}, Network: "host", Memory: "64g"}
	r.Spec.ContinueFrom = "earlier"
	old := host("old", 0, 4)
	old.Images = append(old.Images, "quay.io/x/agent:1")
	if got, why, _ := Choose(r, []Host{old}); got != "old" {
		t.Fatalf("Choose = %q, %q; want old", got, why)
	}
}

// A run every able host would take but for a full slot waits in line; the
// message names no load count, so it reads the same while the hosts stay
// full, and a waiting run's status is not written again for each run that
// starts or ends.
func TestChooseSaysWhenARunWaitsOnlyForASlot(t *testing.T) {
	full, other := host("full", 4, 4), host("other", 0, 4)
	other.Ready = false
	got, why, waitsForSlot := Choose(run("", nil, nil), []Host{full, other})
	if got != "" || !waitsForSlot {
		t.Fatalf("Choose = %q, waits for a slot %t; want none, waiting for a slot", got, waitsForSlot)
	}
	if !strings.Contains(why, "full: a free slot (all 4 in use)") {
		t.Errorf("message %q does not say full's slots are all in use", why)
	}
	fuller := full
	fuller.Load = 5
	if _, again, _ := Choose(run("", nil, nil), []Host{fuller, other}); again != why {
		t.Errorf("the message changed with the load of a full host: %q, then %q", why, again)
	}
	if _, _, waitsForSlot := Choose(run("", map[string]agentsv1alpha1.SecretName{"A": "s1"}, nil), []Host{full, other}); waitsForSlot {
		t.Error("a run no host could run even with a free slot waits for a slot")
	}
	if !CouldRun(run("", nil, nil), full) || CouldRun(run("", nil, nil), other) {
		t.Error("CouldRun: want the full host (a slot is all it lacks), not the host that is not Ready")
	}
}
