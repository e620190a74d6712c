package egressgate

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/credential"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressgate/egressgatetest"
	"github.com/agentrun/agentrun/internal/intercept"
	"github.com/agentrun/agentrun/internal/testing/internet"
)

// secret is no known token's shape, with characters that base64 and URL
// escaping change.
const secret = "q7Zp-kV3x.Lm9Rt2/wY+8=nB4"

// site is a stand-in on the simulated internet that records the
// Authorization headers it gets: /echo writes the request's headers and
// body back, with the Authorization's value plain and in base64, /stale
// answers 401 as a service does to a revoked token.
type site struct {
	mu   sync.Mutex
	auth [][]string
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.auth = append(s.auth, r.Header.Values("Authorization"))
	s.mu.Unlock()
	switch r.URL.Path {
	case "/stale":
		http.Error(w, "bad credentials", http.StatusUnauthorized)
	case "/echo":
		v := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		_ = r.Header.Write(w)
		_, _ = io.Copy(w, r.Body)
		_, _ = io.WriteString(w, "\n"+v+"\n"+base64.StdEncoding.EncodeToString([]byte(v))+"\n")
	}
}

func (s *site) got() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.auth)
}

// credentialed is a run on a gate whose proxy reaches the simulated
// internet: cred.test has its credential, echo.test is only allowed.
type credentialed struct {
	g        *Gate
	mu       sync.Mutex
	rejected []string
}

// serveCredentialed serves the run on a gate that trusts upstreamCAFile
// beside the system roots.
func serveCredentialed(t *testing.T, n *internet.Internet, dir, upstreamCAFile string) *credentialed {
	t.Helper()
	roots, err := SystemRoots(upstreamCAFile)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(dir, egress.Config{Resolver: n.Resolver()}, roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	c := &credentialed{g: g}
	format, err := credential.ParseFormat("Bearer {}")
	if err != nil {
		t.Fatal(err)
	}
	err = g.Serve(uid, Run{
		Policy:      policy(t, "cred.test", "echo.test"),
		Credentials: map[string]intercept.Credential{"cred.test": {Header: "authorization", Format: format, Value: secret}},
		Rejected: func(host string, status int) {
			c.mu.Lock()
			c.rejected = append(c.rejected, host+" "+http.StatusText(status))
			c.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startInternet is the simulated internet with the run's two sites.
func startInternet(t *testing.T) (*internet.Internet, *site, *site) {
	n := internet.Start(t)
	cred, echo := &site{}, &site{}
	n.Serve("cred.test", cred)
	n.Serve("echo.test", echo)
	return n, cred, echo
}

// client is the run's client as its container has it.
func (c *credentialed) client(t *testing.T) *http.Client {
	t.Helper()
	dir := c.g.RunDir(uid)
	return egressgatetest.RunClient(t, filepath.Join(dir, CABundleName), filepath.Join(dir, SocketName))
}

// terminated is a TLS connection to name through the run's socket, open
// and idle, as a client keeps one alive.
func (c *credentialed) terminated(t *testing.T, name string) *tls.Conn {
	t.Helper()
	conn, err := net.Dial("unix", filepath.Join(c.g.RunDir(uid), SocketName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, _ = io.WriteString(conn, "CONNECT "+name+":443 HTTP/1.1\r\nHost: "+name+":443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, len("HTTP/1.1 200 Connection established\r\n\r\n")), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %v", name, err)
	}
	cfg := c.client(t).Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = name
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// do sends the agent's request, with its own Authorization header, and
// returns the answer, its headers and body as one text.
func do(t *testing.T, c *http.Client, method, url, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer agent-made")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	var all strings.Builder
	_ = resp.Header.Write(&all)
	return resp, all.String() + string(b)
}

// forms are the forms of the secret that must never reach the run.
var forms = []string{secret, url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))[2:22], base64.StdEncoding.EncodeToString([]byte("Bearer " + secret))[2:22]}

func holdsTheSecret(text string) bool {
	return slices.ContainsFunc(forms, func(f string) bool { return strings.Contains(text, f) })
}

func TestACredentialedHostGetsTheCredentialAndTheRunNeverSeesIt(t *testing.T) {
	n, cred, echo := startInternet(t)
	c := serveCredentialed(t, n, shortDir(t), n.CAFile())
	client := c.client(t)

	resp, seen := do(t, client, http.MethodPost, "https://cred.test/echo", "the agent's body")
	if resp.StatusCode != http.StatusOK || !strings.Contains(seen, "the agent's body") || !strings.Contains(seen, "***") {
		t.Errorf("cred.test/echo: %d %q; want the echo, masked", resp.StatusCode, seen)
	}
	if holdsTheSecret(seen) {
		t.Errorf("cred.test's echo reached the run with the secret: %q", seen)
	}
	if got := cred.got(); len(got) != 1 || !slices.Equal(got[0], []string{"Bearer " + secret}) {
		t.Errorf("cred.test got Authorization %q; want the credential alone, the agent's replaced", got)
	}

	resp, seen = do(t, client, http.MethodGet, "https://echo.test/echo", "")
	if resp.StatusCode != http.StatusOK || holdsTheSecret(seen) {
		t.Errorf("echo.test/echo: %d %q; want it reached without the secret", resp.StatusCode, seen)
	}
	if got := echo.got(); len(got) != 1 || !slices.Equal(got[0], []string{"Bearer agent-made"}) {
		t.Errorf("echo.test got Authorization %q; want the agent's own, untouched", got)
	}
	if chain := resp.TLS.VerifiedChains[0]; !slices.Equal(chain[len(chain)-1].Raw, pemDER(t, n.CAPEM())) {
		t.Errorf("echo.test's certificate is from %s; want the internet's CA: a tunnel, not terminated", chain[len(chain)-1].Subject)
	}
	if st := c.g.CredentialStats(uid); st["cred.test"] != (intercept.Counts{Requests: 1}) || len(st) != 1 {
		t.Errorf("credential stats %+v; want one request to cred.test", st)
	}
}

func TestARejectedCredentialIsCountedAndTold(t *testing.T) {
	n, _, _ := startInternet(t)
	c := serveCredentialed(t, n, shortDir(t), n.CAFile())
	if resp, _ := do(t, c.client(t), http.MethodGet, "https://cred.test/stale", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("cred.test/stale: %d; want the stand-in's 401", resp.StatusCode)
	}
	if st := c.g.CredentialStats(uid); st["cred.test"] != (intercept.Counts{Requests: 1, Rejected: 1}) {
		t.Errorf("credential stats %+v; want one request, rejected", st)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Equal(c.rejected, []string{"cred.test Unauthorized"}) {
		t.Errorf("told of rejections %q; want cred.test's 401", c.rejected)
	}
}

// The run's CA signs for its credentialed names alone, whatever else its
// key would sign: a client refuses a leaf for any other name.
func TestTheRunsCAIsConstrainedToItsCredentialedNames(t *testing.T) {
	n, _, _ := startInternet(t)
	c := serveCredentialed(t, n, shortDir(t), n.CAFile())
	pemBytes, err := os.ReadFile(filepath.Join(c.g.RunDir(uid), CAName))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(pemDER(t, pemBytes))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.PermittedDNSDomainsCritical || !slices.Equal(ca.PermittedDNSDomains, []string{"cred.test"}) {
		t.Errorf("the run's CA permits %q (critical: %v); want cred.test alone", ca.PermittedDNSDomains, ca.PermittedDNSDomainsCritical)
	}
	bundle, err := os.ReadFile(filepath.Join(c.g.RunDir(uid), CABundleName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(bundle), string(pemBytes)) || !strings.Contains(string(bundle), string(n.CAPEM())) {
		t.Error("the bundle does not hold the upstream CA and the run's CA")
	}
	for _, f := range []string{CAName, CABundleName} {
		if info, err := os.Stat(filepath.Join(c.g.RunDir(uid), f)); err != nil || info.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, %v; want mode 0644 for the container's user", f, info.Mode(), err)
		}
	}
}

func TestAnUpstreamTheHostDoesNotTrustIsNotSentTheCredential(t *testing.T) {
	n, cred, _ := startInternet(t)
	c := serveCredentialed(t, n, shortDir(t), "") // the internet's CA is not among the system roots
	resp, seen := do(t, c.client(t), http.MethodGet, "https://cred.test/echo", "")
	if resp.StatusCode != http.StatusBadGateway || holdsTheSecret(seen) {
		t.Errorf("an untrusted upstream: %d %q; want 502 without the secret", resp.StatusCode, seen)
	}
	if got := cred.got(); len(got) != 0 {
		t.Errorf("the untrusted upstream got requests %q", got)
	}
}

func TestAStoppedRunsCredentialsAreGone(t *testing.T) {
	n, cred, _ := startInternet(t)
	c := serveCredentialed(t, n, shortDir(t), n.CAFile())
	client := c.client(t)
	do(t, client, http.MethodGet, "https://cred.test/", "")
	open := c.terminated(t, "cred.test")
	if err := c.g.Stop(uid); err != nil {
		t.Fatal(err)
	}
	if err := open.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil { // bounds a failure only
		t.Fatal(err)
	}
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a terminated connection after Stop: %v; want it cut", err)
	}
	if st := c.g.CredentialStats(uid); st != nil {
		t.Errorf("a stopped run's credential stats: %+v", st)
	}
	if _, err := client.Get("https://cred.test/"); err == nil {
		t.Error("a stopped run's socket still reaches cred.test")
	}
	if got := cred.got(); len(got) != 1 {
		t.Errorf("cred.test got %d requests; want the one before Stop", len(got))
	}
}

// A restarted manager makes the run a new CA and rewrites the bundle in
// place: the container has the file, not the directory, bind-mounted.
func TestARestartedHostRewritesTheBundleInPlace(t *testing.T) {
	n, _, _ := startInternet(t)
	dir := shortDir(t)
	first := serveCredentialed(t, n, dir, n.CAFile())
	bundle := filepath.Join(first.g.RunDir(uid), CABundleName)
	before, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(bundle)
	_ = first.g.Close()
	if err := os.Chmod(bundle, 0o600); err != nil { // as an older file may have it
		t.Fatal(err)
	}
	second := serveCredentialed(t, n, dir, n.CAFile())
	after, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(bundle); !os.SameFile(before, after) || string(now) == string(old) {
		t.Errorf("the bundle after a restart: same file %v, rewritten %v; want a new CA in the same file", os.SameFile(before, after), string(now) != string(old))
	}
	if after.Mode().Perm() != 0o644 {
		t.Errorf("the rewritten bundle has mode %v; want 0644 for the container's user", after.Mode().Perm())
	}
	if resp, _ := do(t, second.client(t), http.MethodGet, "https://cred.test/", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("after the restart: %d", resp.StatusCode)
	}
}

func pemDER(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	return block.Bytes
}

func TestACredentialForAHostOffTheRunsListIsRefused(t *testing.T) {
	g, port := newGate(t, shortDir(t))
	err := g.Serve(uid, Run{
		Policy:      policy(t, "allowed.test:"+port),
		Credentials: map[string]intercept.Credential{"allowed.test": {Header: "Authorization", Value: secret}},
	})
	if err == nil || !strings.Contains(err.Error(), "allowed.test") {
		t.Errorf("a credential for a host allowed on another port than 443: %v; want it refused", err)
	}
	if g.Serving(uid) {
		t.Error("the run is served")
	}
}

func TestAnUpstreamCAFileWithoutACertificateIsRefused(t *testing.T) {
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{f, filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := SystemRoots(file); err == nil || !strings.Contains(err.Error(), "host.egress.upstreamCAFile") {
			t.Errorf("SystemRoots(%s): %v; want an error naming the setting", file, err)
		}
	}
}
