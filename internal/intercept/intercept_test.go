package intercept

import (
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/credential"
)

// token has characters that URL escaping and base64's alphabets change.
const token = "ghp_s3cr3t/+=Value0123456789"

// upstream is a stand-in service that records the requests it gets.
type upstream struct {
	*httptest.Server
	mu  sync.Mutex
	got []*http.Request
}

func startUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	u := &upstream{}
	u.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, r)
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.got...)
}

// run serves an injector for example.com (the name httptest's certificate
// holds) the way the proxy will: TLS terminated with the run's authority,
// upstream dialled at the stand-in whatever the name. It returns a client
// that trusts only the run's authority, as the container will.
func run(t *testing.T, up *upstream, roots *x509.CertPool, format string) *http.Client {
	t.Helper()
	ca, err := NewAuthority([]string{"example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, err := credential.ParseFormat(format)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, up.Listener.Addr().String())
	}
	in, err := NewInjector(map[string]Credential{"example.com": {Header: "authorization", Format: f, Value: token + "\n"}}, roots, dial, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: in.Handler("example.com"), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(tls.NewListener(l, ca.ServerConfig())) }()
	t.Cleanup(func() { _ = srv.Close() })
	trusted := x509.NewCertPool()
	trusted.AppendCertsFromPEM(ca.CertPEM())
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: trusted},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, l.Addr().String())
		},
	}}
}

func upstreamRoots(up *upstream) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(up.Certificate())
	return p
}

func get(t *testing.T, c *http.Client, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://example.com/echo", nil)
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Host = header.Get("Host")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestTheAgentsHeaderIsReplacedNotDoubledAndGoesOnlyToItsHost(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, _ *http.Request) {})
	c := run(t, up, upstreamRoots(up), "Bearer {}")
	resp, _ := get(t, c, http.Header{"Authorization": {"Bearer agent-made"}, "Host": {"evil.example"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := up.requests()[0]
	if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+token {
		t.Errorf("upstream got Authorization %q; want only the credential", got)
	}
	if r.Host != "example.com" {
		t.Errorf("upstream got Host %q; want the credentialed name", r.Host)
	}
}

func TestTheBasicFormReachesTheUpstream(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, _ *http.Request) {})
	get(t, run(t, up, upstreamRoots(up), "Basic base64(x-access-token:{})"), nil)
	user, pass, ok := up.requests()[0].BasicAuth()
	if !ok || user != "x-access-token" || pass != token {
		t.Errorf("upstream got basic %q %q %v", user, pass, ok)
	}
}

// echo writes the request's headers back in the response's headers and
// body, and the credential in each form the proxy masks, split across
// flushed writes so the masking must hold a tail back.
func echo(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	v := strings.TrimPrefix(auth, "Bearer ")
	w.Header().Set("X-Echo", auth)
	var body io.Writer = w
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") && r.URL.Query().Get("gzip") != "" {
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		defer func() { _ = gz.Close() }()
		body = gz
	}
	_ = r.Header.Write(body)
	for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), url.QueryEscape(v), url.PathEscape(v)} {
		_, _ = io.WriteString(body, "\n"+form[:5])
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(body, form[5:]+"\n")
	}
}

func TestAnEchoingUpstreamNeverReturnsTheValue(t *testing.T) {
	up := startUpstream(t, echo)
	c := run(t, up, upstreamRoots(up), "Bearer {}")
	for _, path := range []string{"/echo", "/echo?gzip=1"} {
		req, _ := http.NewRequest(http.MethodGet, "https://example.com"+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var headers strings.Builder
		_ = resp.Header.Write(&headers)
		seen := headers.String() + string(body)
		if !strings.Contains(seen, "***") {
			t.Fatalf("%s: nothing masked; the echo was %q", path, seen)
		}
		for _, form := range []string{token, base64.StdEncoding.EncodeToString([]byte(token))[4:24], url.QueryEscape(token), "s3cr3t"} {
			if strings.Contains(seen, form) {
				t.Errorf("%s: the response holds %q: %q", path, form, seen)
			}
		}
	}
}

func TestABodyInAnEncodingThatCannotBeMaskedIsRefused(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "br")
		_, _ = io.WriteString(w, r.Header.Get("Authorization"))
	})
	resp, body := get(t, run(t, up, upstreamRoots(up), "Bearer {}"), nil)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "s3cr3t") {
		t.Errorf("status %d, body %q; want 502 without the value", resp.StatusCode, body)
	}
}

func TestAnUpstreamWhoseCertificateIsNotFromTheRootsIsRefused(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, _ *http.Request) {})
	other, err := NewAuthority([]string{"example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(other.CertPEM())
	resp, body := get(t, run(t, up, roots, "Bearer {}"), nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d (%q); want 502", resp.StatusCode, body)
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("the upstream got %d requests; want none", n)
	}
}

func TestAnUpgradeIsRefused(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, _ *http.Request) {})
	resp, _ := get(t, run(t, up, upstreamRoots(up), "Bearer {}"), http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}})
	if resp.StatusCode != http.StatusNotImplemented || len(up.requests()) != 0 {
		t.Errorf("status %d, %d upstream requests; want 501 and none", resp.StatusCode, len(up.requests()))
	}
}

func TestALeafVerifiesAgainstTheRunsAuthorityOnlyForItsNames(t *testing.T) {
	ca, err := NewAuthority([]string{"api.github.com", "github.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("the authority's PEM does not parse")
	}
	leaf, err := ca.Leaf("api.github.com")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := ca.Leaf("api.github.com"); again != leaf {
		t.Error("a second Leaf minted a new certificate; want the cached one")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: "api.github.com"}
	if _, err := leaf.Leaf.Verify(opts); err != nil {
		t.Errorf("the leaf does not verify for its name: %v", err)
	}
	opts.DNSName = "uploads.github.com"
	if _, err := leaf.Leaf.Verify(opts); err == nil {
		t.Error("the leaf verifies for a name it was not minted for")
	}
	if _, err := ca.Leaf("example.com"); err == nil {
		t.Error("Leaf minted a certificate for a name without a credential")
	}
	// Even the authority's own key signs nothing valid for another name.
	forged := sign(t, ca, "example.com")
	opts.DNSName = "example.com"
	if _, err := forged.Verify(opts); err == nil {
		t.Error("a certificate the authority signed for a name outside its constraints verifies")
	}
}

// sign makes a leaf for name with ca's key, bypassing Leaf's check.
func sign(t *testing.T, ca *Authority, name string) *x509.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: ca.cert.NotBefore, NotAfter: ca.cert.NotAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestAHandshakeForANameWithoutACredentialFails(t *testing.T) {
	ca, err := NewAuthority([]string{"example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer func() { _ = client.Close() }()
	go func() { _ = tls.Server(server, ca.ServerConfig()).Handshake(); _ = server.Close() }()
	err = tls.Client(client, &tls.Config{ServerName: "other.example", InsecureSkipVerify: true}).Handshake() //nolint:gosec // the server must refuse before any verification
	if err == nil {
		t.Error("the handshake for a name without a credential succeeded")
	}
}
