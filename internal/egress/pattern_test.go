package egress

import (
	"strings"
	"testing"
)

func TestParsePatternRefusesWhatIsNotAHostName(t *testing.T) {
	for _, s := range []string{
		"", "*", "*.", ".github.com", "github.com.", "github..com",
		"a.*.github.com", "*github.com", "**.github.com", "git*hub.com", // a wildcard only as a leading "*."
		"GitHub.com", "gïthub.com", "git_hub.com", "-github.com", "github-.com", // lower-case DNS labels
		"https://github.com", "github.com/org", "github.com?x=1", "user@github.com", // no scheme, path, query, user
		"10.0.0.7", "10.0.0.7:443", "::1", "[::1]:443", "1.2.3", "0x7f.1", "2130706433", // no IP address in any notation
		"github.com:0", "github.com:65536", "github.com:0443", "github.com:", "github.com:https", "github.com:443:1",
		strings.Repeat("a", 64) + ".com", // a label of 64
	} {
		if p, err := ParsePattern(s); err == nil {
			t.Errorf("ParsePattern(%q) = %+v, want an error", s, p)
		}
	}
}

func TestPatternsMatchNamesAndPorts(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		host    string
		port    uint16
		want    bool
	}{
		{"github.com", "github.com", 443, true},
		{"github.com", "github.com", 80, true},
		{"github.com", "github.com", 22, false}, // no port: the web only
		{"github.com", "github.com", 8443, false},
		{"github.com", "api.github.com", 443, false},
		{"github.com", "evilgithub.com", 443, false},
		{"github.com", "github.com.evil.test", 443, false},
		{"*.githubusercontent.com", "raw.githubusercontent.com", 443, true},
		{"*.githubusercontent.com", "a.b.githubusercontent.com", 443, true}, // any depth below
		{"*.githubusercontent.com", "githubusercontent.com", 443, false},    // strictly below
		{"*.githubusercontent.com", "evilgithubusercontent.com", 443, false},
		{"*.githubusercontent.com", "raw.githubusercontent.com", 22, false},
		{"registry.npmjs.org:443", "registry.npmjs.org", 443, true},
		{"registry.npmjs.org:443", "registry.npmjs.org", 80, false}, // that port only
		{"registry.example.com:8443", "registry.example.com", 8443, true},
		{"registry.example.com:8443", "registry.example.com", 443, false},
		{"*.example.com:8080", "a.example.com", 8080, true},
		{"*.example.com:8080", "a.example.com", 80, false},
		{"localhost", "localhost", 443, true}, // a name; its address is netguard's to refuse
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if p.String() != tc.pattern {
			t.Errorf("ParsePattern(%q).String() = %q", tc.pattern, p.String())
		}
		if got := p.Matches(tc.host, tc.port); got != tc.want {
			t.Errorf("%q matches %s:%d = %v, want %v", tc.pattern, tc.host, tc.port, got, tc.want)
		}
	}
}

func TestParsePolicyNamesTheEntryItRefuses(t *testing.T) {
	policy, err := ParsePolicy("api.anthropic.com", "*.githubusercontent.com")
	if err != nil || !policy.Allows("api.anthropic.com", 443) || !policy.Allows("raw.githubusercontent.com", 80) || policy.Allows("github.com", 443) {
		t.Errorf("ParsePolicy = %v, %v", policy, err)
	}
	if _, err := ParsePolicy("github.com", "https://evil.test/x"); err == nil || err.Error() != `egress pattern "https://evil.test/x": a host name, not a URL: no scheme` {
		t.Errorf("ParsePolicy with a URL: %v", err)
	}
}

// A ceiling covers what a run asks for only when it allows every host and
// port the run's pattern does: the run can never reach more than the host's
// owner permitted.
func TestCeilingCoversOnlyWhatItAllowsInFull(t *testing.T) {
	for _, tc := range []struct {
		ceiling, asked string
		want           bool
	}{
		{"github.com", "github.com", true},
		{"github.com", "github.com:443", true},
		{"github.com", "github.com:80", true},
		{"github.com", "github.com:22", false},  // no port: the web only
		{"github.com:443", "github.com", false}, // the run's means 80 too
		{"github.com:443", "github.com:443", true},
		{"github.com:22", "github.com:22", true},
		{"github.com", "api.github.com", false},
		{"github.com", "*.github.com", false},
		{"*.github.com", "api.github.com", true},
		{"*.github.com", "a.b.github.com:443", true},
		{"*.github.com", "*.github.com", true},
		{"*.github.com", "*.api.github.com", true},
		{"*.github.com", "github.com", false}, // strictly below
		{"*.github.com", "*.evilgithub.com", false},
		{"*.github.com", "api.evilgithub.com", false},
		{"*.api.github.com", "*.github.com", false},
		{"*.github.com:443", "api.github.com", false},
	} {
		ceiling, err := ParsePolicy(tc.ceiling)
		if err != nil {
			t.Fatal(err)
		}
		asked, err := ParsePolicy(tc.asked)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(ceiling.Uncovered(asked)) == 0; got != tc.want {
			t.Errorf("ceiling %s covers %s: %v, want %v", tc.ceiling, tc.asked, got, tc.want)
		}
	}
}
