package internet_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/testing/internet"
)

// says answers every request with text.
func says(text string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, text) })
}

// get fetches url with c and returns the body of a 200.
func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %q %v", url, resp.Status, body, err)
	}
	return string(body)
}

func TestDNSAnswersRegisteredNamesAndCountsEveryQuery(t *testing.T) {
	n := internet.Start(t)
	allowed := n.Serve("allowed.test", says("allowed"))
	loopback := netip.MustParseAddr("127.0.0.1")
	n.Resolve("loopback.test", loopback)
	if q := n.Queries(); len(q) != 0 {
		t.Fatalf("queries before any lookup: %v", q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for name, want := range map[string]netip.Addr{"allowed.test": allowed, "Loopback.Test": loopback} {
		got, err := n.Resolver().LookupNetIP(ctx, "ip4", name)
		if err != nil || !slices.Equal(got, []netip.Addr{want}) {
			t.Errorf("%s resolves to %v (%v), want %s", name, got, err, want)
		}
	}
	if got := n.Addr("allowed.test"); got != allowed || !n.Prefix().Contains(got) {
		t.Errorf("Addr(allowed.test) = %s, want %s in %s", got, allowed, n.Prefix())
	}
	_, err := n.Resolver().LookupNetIP(ctx, "ip4", "nowhere.test")
	if dnsErr := (*net.DNSError)(nil); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("nowhere.test: %v, want no such host", err)
	}

	overTCP := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", n.DNSAddr().String())
	}}
	if got, err := overTCP.LookupNetIP(ctx, "ip4", "allowed.test"); err != nil || !slices.Equal(got, []netip.Addr{allowed}) {
		t.Errorf("allowed.test over TCP resolves to %v (%v), want %s", got, err, allowed)
	}

	want := []internet.Query{
		{Network: "udp", Name: "allowed.test", Type: "A"},
		{Network: "udp", Name: "loopback.test", Type: "A"},
		{Network: "udp", Name: "nowhere.test", Type: "A"},
		{Network: "tcp", Name: "allowed.test", Type: "A"},
	}
	for _, q := range want {
		if !slices.Contains(n.Queries(), q) {
			t.Errorf("the DNS server did not count %+v: %+v", q, n.Queries())
		}
	}
}

func TestHTTPSAndHTTPServeEachNameFromItsOwnAddress(t *testing.T) {
	n := internet.Start(t)
	n.Serve("allowed.test", says("allowed"))
	denied := n.Serve("denied.test", says("denied"))
	c := n.Client()

	if got := get(t, c, "https://allowed.test/"); got != "allowed" {
		t.Errorf("https://allowed.test/ says %q", got)
	}
	if got := n.Connections("denied.test"); got != 0 {
		t.Errorf("denied.test accepted %d connections before anyone asked for it", got)
	}
	if got := get(t, c, "https://denied.test/"); got != "denied" {
		t.Errorf("https://denied.test/ says %q", got)
	}
	if got := get(t, c, "http://allowed.test/"); got != "allowed" {
		t.Errorf("http://allowed.test/ says %q", got)
	}
	// By address, no name: the site whose address it is.
	if got := get(t, c, "http://"+denied.String()+"/"); got != "denied" {
		t.Errorf("http://%s/ says %q", denied, got)
	}
	if got := n.Connections("denied.test"); got != 2 {
		t.Errorf("denied.test accepted %d connections, want 2", got)
	}

	// The certificates are the CA's alone: the machine's roots do not
	// trust them.
	system := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Resolver: n.Resolver()}).DialContext}}
	_, err := system.Get("https://allowed.test/")
	if uae := (x509.UnknownAuthorityError{}); !errors.As(err, &uae) {
		t.Errorf("a client that does not trust the CA: %v, want an unknown authority", err)
	}
	if data, err := os.ReadFile(n.CAFile()); err != nil || string(data) != string(n.CAPEM()) || !x509.NewCertPool().AppendCertsFromPEM(data) {
		t.Errorf("CAFile holds %q (%v), want CAPEM, a PEM certificate", data, err)
	}
}

func TestGitClonesOverSmartHTTPS(t *testing.T) {
	n := internet.Start(t)
	root := t.TempDir()
	internet.NewGitRepo(t, root, "project", map[string]string{"README.md": "from the simulated internet\n"})
	var mu sync.Mutex
	var paths []string
	git := internet.GitHandler(t, root)
	addr := n.Serve("allowed.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		git.ServeHTTP(w, r)
	}))

	dest := filepath.Join(t.TempDir(), "clone")
	cmd := exec.Command("git", "-c", "http.curloptResolve=allowed.test:443:"+addr.String(),
		"clone", "--quiet", "https://allowed.test/project.git", dest)
	// GIT_SSL_CAINFO, which wins over git's http.sslCAInfo setting.
	cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+n.CAFile(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"HTTPS_PROXY=", "https_proxy=", "ALL_PROXY=", "all_proxy=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	if data, err := os.ReadFile(filepath.Join(dest, "README.md")); err != nil || string(data) != "from the simulated internet\n" {
		t.Errorf("the clone's README.md: %q, %v", data, err)
	}
	// The smart protocol, not files fetched one by one.
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(paths, "/project.git/git-upload-pack") {
		t.Errorf("the clone asked for %v, no git-upload-pack", paths)
	}
}

func TestInternetsRunApartAndCleanupRemovesThem(t *testing.T) {
	type seen struct {
		netns, link string
		prefix      netip.Prefix
		addr        netip.Addr
	}
	var got []seen
	t.Run("two at once", func(t *testing.T) {
		for _, text := range []string{"first", "second"} {
			n := internet.Start(t)
			addr := n.Serve("same.test", says(text))
			if body := get(t, n.Client(), "https://same.test/"); body != text {
				t.Errorf("%s's same.test says %q", text, body)
			}
			got = append(got, seen{n.Netns(), n.Link(), n.Prefix(), addr})
		}
	})
	if len(got) != 2 {
		t.Skip("no internet was made")
	}
	a, b := got[0], got[1]
	if a.netns == b.netns || a.link == b.link || a.prefix.Overlaps(b.prefix) {
		t.Errorf("two internets share names or addresses: %+v, %+v", a, b)
	}
	for _, s := range got {
		if _, err := os.Stat("/var/run/netns/" + s.netns); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the namespace %s is still there after the cleanup (%v)", s.netns, err)
		}
		if _, err := net.InterfaceByName(s.link); err == nil {
			t.Errorf("the link %s is still there after the cleanup", s.link)
		}
		// The machine's route to the internet went with the link.
		if out, err := exec.Command("ip", "route", "get", s.addr.String()).CombinedOutput(); err == nil && strings.Contains(string(out), s.link) {
			t.Errorf("the machine still routes %s to %s: %s", s.addr, s.link, out)
		}
	}
}

// The internet is made for the egress proxy's tests: the proxy, told to use
// its resolver, takes its sites' addresses for public ones and reaches
// them, and refuses a name off the run's list before asking the DNS server.
func TestEgressProxyReachesTheSites(t *testing.T) {
	n := internet.Start(t)
	n.Serve("allowed.test", says("allowed"))
	n.Serve("denied.test", says("denied"))
	policy, err := egress.ParsePolicy("allowed.test")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "egress.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	proxy := egress.New(egress.Config{Resolver: n.Resolver()}).Serve(l, policy, nil, nil)
	defer proxy.Close()
	viaProxy := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: "egress"}),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		TLSClientConfig: &tls.Config{RootCAs: n.CertPool()},
	}}

	if got := get(t, viaProxy, "https://allowed.test/"); got != "allowed" {
		t.Errorf("https://allowed.test/ through the proxy says %q", got)
	}
	if _, err := viaProxy.Get("https://denied.test/"); err == nil {
		t.Error("https://denied.test/ through the proxy: no error")
	}
	if got := n.Connections("denied.test"); got != 0 {
		t.Errorf("denied.test accepted %d connections through the proxy", got)
	}
	for _, q := range n.Queries() {
		if q.Name == "denied.test" {
			t.Errorf("the proxy asked the DNS server about denied.test: %+v", q)
		}
	}
	if s := proxy.Stats(); s.Allowed != 1 || s.RefusedNames != 1 {
		t.Errorf("the proxy's counts: %+v, want 1 allowed and 1 refused name", s)
	}
}
