package agent

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentrun/agentrun/internal/testing/internet"
)

// The simulated internet's sites for the credentials spec: GitHub's API and
// git over HTTPS under their real names, which a credential is added to, and
// a site without one that echoes what it gets.
const (
	githubAPIName = "api.github.com"
	githubName    = "github.com"
	echoName      = "echo.test"
	// staleName refuses every token, as a service refuses an expired one.
	staleName = "stale.test"
	// githubLogin is the user api.github.com/user answers with.
	githubLogin = "agentrun-octocat"
	// repoReadme is the README of https://github.com/agentrun/demo.git.
	repoReadme = "cloned with a token the agent never held"
)

// credentials holds the sites' state during the credentials spec; nil
// outside it, when they answer 503.
var credentials atomic.Pointer[credentialSites]

// credentialSites are what the sites expect and what they saw.
type credentialSites struct {
	// githubAPIAuth and githubAuth are the Authorization values that pass:
	// the credentials in their declared forms.
	githubAPIAuth, githubAuth string
	// names tells the forms of the secret values apart in what is recorded.
	names *strings.Replacer
	// forms are the forms of the values that must reach no one else.
	forms []secretForm

	mu   sync.Mutex
	seen []siteRequest
}

// siteRequest is what a site records of a request, with every form of a
// secret value replaced by its name (see secretForms), so that an assertion
// that fails prints no value.
type siteRequest struct {
	Site, Path string
	// Authorization are the request's Authorization headers, in order.
	Authorization []string
	// Leaks are the forms of a value found in a header or the URL.
	Leaks []string
}

// secretForm is one form of a secret value: the value, URL-escaped,
// base64-encoded, in the basic-auth form; name says which.
type secretForm struct{ value, name string }

// secretForms are the forms of value, named "<label>", "<label, base64>"
// and so on, longest first (a Replacer takes the first match).
func secretForms(label, value string) []secretForm {
	b64 := func(s string) []string {
		return []string{base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s))}
	}
	forms := []secretForm{{value, "<" + label + ">"}, {url.QueryEscape(value), "<" + label + ", query-escaped>"}, {url.PathEscape(value), "<" + label + ", path-escaped>"}}
	for _, f := range b64(value) {
		forms = append(forms, secretForm{f, "<" + label + ", base64>"})
	}
	for _, f := range b64("x-access-token:" + value) {
		forms = append(forms, secretForm{f, "<" + label + ", basic auth>"})
	}
	slices.SortStableFunc(forms, func(a, b secretForm) int { return len(b.value) - len(a.value) })
	return slices.CompactFunc(forms, func(a, b secretForm) bool { return a.value == b.value })
}

func newCredentialSites(githubAPIAuth, githubAuth string, forms ...secretForm) *credentialSites {
	var pairs []string
	for _, f := range forms {
		pairs = append(pairs, f.value, f.name)
	}
	return &credentialSites{githubAPIAuth: githubAPIAuth, githubAuth: githubAuth, names: strings.NewReplacer(pairs...), forms: forms}
}

// leaks names the forms of a value that s holds.
func (c *credentialSites) leaks(s string) []string {
	var found []string
	for _, f := range c.forms {
		if strings.Contains(s, f.value) && !slices.Contains(found, f.name) {
			found = append(found, f.name)
		}
	}
	return found
}

// record notes r and returns the Authorization headers it carried, named.
func (c *credentialSites) record(site string, r *http.Request) []string {
	var all strings.Builder
	fmt.Fprintln(&all, r.URL.String())
	_ = r.Header.Write(&all) // to a Builder: cannot fail
	seen := siteRequest{Site: site, Path: r.URL.Path, Leaks: c.leaks(all.String())}
	for _, v := range r.Header.Values("Authorization") {
		seen.Authorization = append(seen.Authorization, c.names.Replace(v))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, seen)
	return r.Header.Values("Authorization")
}

// Seen returns what the site got, in order.
func (c *credentialSites) Seen(site string) []siteRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []siteRequest
	for _, s := range c.seen {
		if s.Site == site {
			out = append(out, s)
		}
	}
	return out
}

// serveCredentialSites adds the sites to inet; git over HTTPS serves the
// repositories under repos, agentrun/demo.git among them.
func serveCredentialSites(t *testing.T, repos string) {
	internet.NewGitRepo(t, repos, "agentrun/demo", map[string]string{"README.md": repoReadme})
	git := internet.GitHandler(t, repos)
	inet.Serve(githubAPIName, withSites(func(c *credentialSites, w http.ResponseWriter, r *http.Request) {
		auth := c.record(githubAPIName, r)
		switch {
		case r.URL.Path == "/headers":
			echoHeaders(w, r)
		case !slices.Equal(auth, []string{c.githubAPIAuth}):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`)
		case r.URL.Path == "/user":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"login": githubLogin, "id": 1})
		default:
			http.NotFound(w, r)
		}
	}))
	inet.Serve(githubName, withSites(func(c *credentialSites, w http.ResponseWriter, r *http.Request) {
		if !slices.Equal(c.record(githubName, r), []string{c.githubAuth}) {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		git.ServeHTTP(w, r)
	}))
	inet.Serve(staleName, withSites(func(c *credentialSites, w http.ResponseWriter, r *http.Request) {
		c.record(staleName, r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"message":"Bad credentials: the token has expired"}`)
	}))
	inet.Serve(echoName, withSites(func(c *credentialSites, w http.ResponseWriter, r *http.Request) {
		c.record(echoName, r)
		echoHeaders(w, r)
	}))
}

// withSites serves h with the spec's sites, 503 outside the spec.
func withSites(h func(*credentialSites, http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := credentials.Load()
		if c == nil {
			http.Error(w, "no spec serves this site now", http.StatusServiceUnavailable)
			return
		}
		h(c, w, r)
	})
}

// echoHeaders answers with the request's headers, one "Name: value" line
// each, as some services echo what they get.
func echoHeaders(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_ = r.Header.Write(w) // a failed write is the client's loss
}

// secretValue is a credential's value: prefix, then random text, with
// characters that URL-escaping changes, in the shape of no known token (the
// output's masking of token shapes must not be what hides it).
func secretValue(prefix string) string {
	return prefix + "." + strings.ToLower(rand.Text()) + "/+=&"
}

// searchPrefix is a random prefix of 9 characters: a multiple of 3, so that
// the base64 of a value starting with it, alone or after
// "x-access-token:" (15 bytes), starts with a fixed string.
func searchPrefix() string { return rand.Text()[:9] }

// prefixPatterns are what a search for a value starting with prefix looks
// for: the prefix itself (the value, URL-escaped too, and any header
// holding it) and the base64 the value and its basic-auth form start with.
func prefixPatterns(prefix string) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for _, s := range []string{prefix, "x-access-token:" + prefix} {
			out = append(out, enc.EncodeToString([]byte(s)))
		}
	}
	slices.Sort(out)
	return append(slices.Compact(out), prefix)
}

// rot13 hides patterns from a search for them in the container's
// environment, which holds them to search for: the script turns them back.
func rot13(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return 'a' + (r-'a'+13)%26
		case r >= 'A' && r <= 'Z':
			return 'A' + (r-'A'+13)%26
		}
		return r
	}, s)
}
