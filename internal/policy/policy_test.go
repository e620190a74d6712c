package policy

import (
	"regexp"
	"strings"
	"testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

func TestPolicyPathMatching(t *testing.T) {
	allowed := []string{"/home", "/srv/"}
	for p, want := range map[string]bool{"/home": true, "/home/u/repo": true, "/homeless": false, "/srv/x": true, "/etc": false} {
		if got := under(p, allowed); got != want {
			t.Errorf("under(%q) = %v", p, got)
		}
	}
	for img, want := range map[string]bool{"localhost/agentrun/claude:1": true, "localhost/x": true, "docker.io/localhost/x": false, "localhostx/y": false} {
		if got := matchesAny([]string{"localhost/*"}, img); got != want {
			t.Errorf("matchesAny(%q) = %v", img, got)
		}
	}
}

// globMatch answers as the regular expression it replaced, on patterns and
// names with stars at every place, a star's text repeated, and none.
func TestGlobMatchAgreesWithTheRegularExpression(t *testing.T) {
	patterns := []string{"", "*", "**", "a", "a*", "*a", "a*b", "*a*b*", "localhost/*", "localhost/*:1", "*/claude:*", "a*a*a", "ab*ab", "x.y*", "a?b", "[a]*"}
	names := []string{"", "a", "b", "ab", "aab", "abab", "aaa", "aXbYb", "localhost/", "localhost/x", "localhost/agentrun/claude:1",
		"docker.io/localhost/x", "ghcr.io/a/claude:2", "xzy", "x.y", "x.yz", "a?b", "aXb", "[a]b", "ab ab", "abcab"}
	for _, p := range patterns {
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$")
		for _, s := range names {
			if got, want := globMatch(p, s), re.MatchString(s); got != want {
				t.Errorf("globMatch(%q, %q) = %v; the regular expression says %v", p, s, got, want)
			}
		}
	}
}

func TestMountChecks(t *testing.T) {
	links := map[string]string{"/srv/link": "/srv/real", "/srv/dirlink": "/srv/real"}
	resolve := func(p string) (string, error) {
		for link, target := range links {
			if p == link || strings.HasPrefix(p, link+"/") {
				return target + strings.TrimPrefix(p, link), nil
			}
		}
		return p, nil
	}
	p := Policy{
		AllowedVolumePaths:    []string{"/srv", "/"},
		ForbiddenVolumePaths:  []string{"/srv/podman"},
		BlockedContainerPaths: []string{"/etc"},
		ResolveHostPath:       resolve,
	}
	for _, tc := range []struct {
		mount containers.Mount
		names string // "" when allowed
	}{
		{containers.Mount{Source: "/srv/repo", Destination: "/work"}, ""},
		{containers.Mount{Source: "/srv/repo", Destination: "/work", Options: []string{"ro"}}, ""},
		{containers.Mount{Source: "/srv/podman", Destination: "/p"}, "/srv/podman, which no run may mount"},
		{containers.Mount{Source: "/srv/podman/sub", Destination: "/p"}, "/srv/podman, which no run may mount"},
		{containers.Mount{Source: "/srv", Destination: "/p"}, "holds /srv/podman"},
		{containers.Mount{Source: "/", Destination: "/host"}, "which no run may mount"},
		{containers.Mount{Source: "/var/lib", Destination: "/v"}, "holds /var/lib/containers"},
		{containers.Mount{Source: "/run/user", Destination: "/r"}, "/run, which no run may mount"},
		{containers.Mount{Source: "/srv/link", Destination: "/work"}, "/srv/link is a symbolic link"},
		{containers.Mount{Source: "/srv/dirlink/repo", Destination: "/work"}, "/srv/dirlink is a symbolic link"},
		{containers.Mount{Source: "/srv/repo", Destination: "/work", Options: []string{"U"}}, "option U changes the owner"},
		{containers.Mount{Source: "/srv/repo", Destination: "/work", Options: []string{"Z"}}, "host.volumes.allowRelabel"},
		{containers.Mount{Source: "/srv/repo", Destination: "/etc/ssl"}, "mounts over /etc/ssl"},
	} {
		refused := p.CheckMounts(containers.Spec{Mounts: []containers.Mount{tc.mount}})
		switch {
		case tc.names == "" && refused != nil:
			t.Errorf("%+v: refused: %s", tc.mount, refused.Message)
		case tc.names != "" && (refused == nil || !strings.Contains(refused.Message, tc.names)):
			t.Errorf("%+v: got %v, want a refusal naming %q", tc.mount, refused, tc.names)
		}
	}
	p.AllowVolumeRelabel = true
	if refused := p.CheckMounts(containers.Spec{Mounts: []containers.Mount{{Source: "/srv/repo", Destination: "/w", Options: []string{"Z"}}}}); refused != nil {
		t.Errorf("a host that allows relabelling refused it: %s", refused.Message)
	}
	if refused := (Policy{}).CheckMounts(containers.Spec{Mounts: []containers.Mount{{Source: "/srv/repo", Destination: "/w"}}}); refused == nil ||
		!strings.Contains(refused.Message, "allows no volumes") {
		t.Errorf("an empty allowlist must refuse every volume: %v", refused)
	}
}

// A run naming a network gets it unproxied: by default only none, so that
// bridge (the old default) is the host owner's choice.
func TestPolicyRefusesANetworkTheHostDoesNotList(t *testing.T) {
	p := Policy{AllowedImages: []string{"*"}, AllowedNetworks: DefaultNetworks, User: DefaultUser}
	for network, allowed := range map[string]bool{"": true, "none": true, "bridge": false, "podman": false, "host": false, "mynet": false} {
		spec := containers.Spec{Image: "i", Network: network}
		refused := p.Apply(&spec)
		if (refused == nil) != allowed {
			t.Errorf("network %q: refused = %v, want allowed = %v", network, refused, allowed)
		}
		if refused != nil && (refused.Reason != agentsv1alpha1.ReasonNetworkNotAllowed ||
			!strings.Contains(refused.Message, "host.containers.allowedNetworks: none") || !strings.Contains(refused.Message, "spec.egress.allow")) {
			t.Errorf("network %q: the refusal must name the host's setting and spec.egress.allow: %+v", network, refused)
		}
		if refused == nil && spec.User != DefaultUser {
			t.Errorf("the container must run as %s, got %q", DefaultUser, spec.User)
		}
	}
	p.AllowedNetworks = []string{"bridge", "none"}
	if refused := p.Apply(&containers.Spec{Image: "i", Network: "bridge"}); refused != nil {
		t.Errorf("a host that lists bridge must allow it: %v", refused)
	}
}

func TestAHostMountPassesTheVolumeChecksButTheAllowlist(t *testing.T) {
	p := Policy{
		ForbiddenVolumePaths:  []string{"/srv/podman"},
		BlockedContainerPaths: []string{"/etc"},
		ResolveHostPath: func(p string) (string, error) {
			return strings.Replace(p, "/var/lib/linked", "/var/lib/real", 1), nil
		},
	}
	for source, names := range map[string]string{
		"/var/lib/agentrun/sessions/0f8fad5b-d9cb-469f-a165-70867728950e": "",
		"/run/agentrun/sessions/x":                                        "/run, which no run may mount",
		"/etc/agentrun":                                                   "/etc, which no run may mount",
		"/srv/podman/sessions/x":                                          "/srv/podman, which no run may mount",
		"/var/lib/linked/sessions/x":                                      "/var/lib/linked is a symbolic link",
	} {
		refused := p.CheckHostMount(containers.Mount{Source: source, Destination: "/agentrun/claude"})
		switch {
		case names == "" && refused != nil:
			t.Errorf("%s refused: %v", source, refused)
		case names != "" && (refused == nil || !strings.Contains(refused.Message, names)):
			t.Errorf("%s: %v; want a refusal naming %q", source, refused, names)
		}
	}
	if refused := p.CheckHostMount(containers.Mount{Source: "/var/lib/agentrun/sessions/x", Destination: "/etc/claude"}); refused == nil {
		t.Error("a host mount over a blocked container path passes")
	}
}
