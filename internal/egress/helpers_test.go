package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentrun/agentrun/internal/netguard"
)

// allowLoopback lets the proxy reach 127.0.0.1, where the tests' upstreams
// listen, as a host setting would; 127.0.0.2 stays refused.
var allowLoopback = netguard.Destinations{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

// resolver answers names from a table. A name with several answers gets
// them in turn, the last one from then on.
type resolver struct {
	mu      sync.Mutex
	answers map[string][]string
}

func resolve(answers map[string][]string) *resolver { return &resolver{answers: answers} }

func (r *resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if len(a) > 1 {
		r.answers[host] = a[1:]
	}
	return []netip.Addr{netip.MustParseAddr(a[0])}, nil
}

// upstreams is the simulated internet: an HTTPS server (its certificate
// names example.com and *.example.com) and an HTTP server that answer with
// the host they were asked for, and a TCP echo server. The proxy reaches
// them as ports 443, 80 and 7000 of 127.0.0.1.
type upstreams struct {
	tls, plain  *httptest.Server
	echo        net.Listener
	connections atomic.Int32 // accepted by the HTTP servers
	mu          sync.Mutex
	headers     []http.Header // of the requests they served
}

func startUpstreams(t *testing.T) *upstreams {
	t.Helper()
	up := &upstreams{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.mu.Lock()
		up.headers = append(up.headers, r.Header.Clone())
		up.mu.Unlock()
		_, _ = io.WriteString(w, "reached "+r.Host)
	})
	countConn := func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			up.connections.Add(1)
		}
	}
	up.tls = httptest.NewUnstartedServer(handler)
	up.tls.Config.ConnState = countConn
	up.tls.StartTLS()
	t.Cleanup(up.tls.Close)
	up.plain = httptest.NewUnstartedServer(handler)
	up.plain.Config.ConnState = countConn
	up.plain.Start()
	t.Cleanup(up.plain.Close)
	up.echo = listen(t, "127.0.0.1:0")
	go echo(up.echo)
	return up
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// portMap sends some addresses to others: the upstreams' ports stand for
// 443, 80 and 7000. netguard checks the address dialled after it.
type portMap struct {
	dialer interface {
		DialContext(ctx context.Context, network, address string) (net.Conn, error)
	}
	to map[string]string
}

func (m portMap) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if to, ok := m.to[addr]; ok {
		addr = to
	}
	return m.dialer.DialContext(ctx, network, addr)
}

// newProxy is a proxy with cfg whose 127.0.0.1:443, :80 and :7000 are up's.
func newProxy(cfg Config, up *upstreams, more map[string]string) *Proxy {
	p := New(cfg)
	to := map[string]string{
		"127.0.0.1:443":  up.tls.Listener.Addr().String(),
		"127.0.0.1:80":   up.plain.Listener.Addr().String(),
		"127.0.0.1:7000": up.echo.Addr().String(),
	}
	for k, v := range more {
		to[k] = v
	}
	p.dialer = portMap{dialer: p.dialer, to: to}
	return p
}

// serve serves a run with patterns on a Unix socket, as the reconciler
// will, and returns its server and socket.
func serve(t *testing.T, p *Proxy, observe func(Attempt), patterns ...string) (*Server, string) {
	t.Helper()
	return serveTerminating(t, p, observe, nil, patterns...)
}

// serveTerminating is serve with a terminator for the run.
func serveTerminating(t *testing.T, p *Proxy, observe func(Attempt), term Terminator, patterns ...string) (*Server, string) {
	t.Helper()
	policy, err := ParsePolicy(patterns...)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "egress") // short: a socket's path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := p.Serve(l, policy, observe, term)
	t.Cleanup(func() { s.Close() })
	return s, sock
}

// client is a run's HTTP client: it goes through the proxy's socket, as
// the forwarder in the container carries it, and trusts up's certificate.
// It keeps no connection alive, so each request is a new connection.
func client(sock string, up *upstreams) *http.Client {
	tlsConfig := up.tls.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	return &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", User: url.UserPassword("run", "proxy-secret"), Host: "egress"}),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		TLSClientConfig:   tlsConfig,
		DisableKeepAlives: true,
	}}
}

// get fetches url and returns the status and body, or the error.
func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// connect opens a connection to the proxy's socket and sends a CONNECT to
// authority; it returns the connection and the proxy's status.
func connect(t *testing.T, sock, authority string) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A write may fail when the proxy refused the connection before
	// reading: its answer is still there to read.
	_, _ = io.WriteString(c, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
	// One byte at a time: what follows the header is the tunnel's.
	resp, err := http.ReadResponse(bufio.NewReaderSize(oneByteReader{c}, 16), nil)
	if err != nil {
		return c, 0
	}
	return c, resp.StatusCode
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

// handshake runs a TLS handshake over a tunnel, with serverName as SNI ("":
// none), trusting up's certificate.
func handshake(c net.Conn, up *upstreams, serverName string) error {
	cfg := up.tls.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = serverName
	if serverName == "" {
		cfg.InsecureSkipVerify = true // nothing to verify against; Go sends no SNI then
	}
	return tls.Client(c, cfg).Handshake()
}

// attempts records what an observer is told.
type attempts struct {
	mu   sync.Mutex
	seen []Attempt
}

func (a *attempts) observe(x Attempt) {
	a.mu.Lock()
	a.seen = append(a.seen, x)
	a.mu.Unlock()
}

func (a *attempts) all() []Attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Attempt(nil), a.seen...)
}
