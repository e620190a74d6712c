package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"
)

// terminator ends TLS for its names with the upstreams' certificate, says
// which name it serves, and echoes what follows until the connection ends.
type terminator struct {
	names  map[string]bool
	cert   tls.Certificate
	mu     sync.Mutex
	served []string
}

func newTerminator(up *upstreams, names ...string) *terminator {
	t := &terminator{names: map[string]bool{}, cert: up.tls.TLS.Certificates[0]}
	for _, n := range names {
		t.names[n] = true
	}
	return t
}

func (t *terminator) Terminates(name string) bool { return t.names[name] }

func (t *terminator) ServeConn(_ context.Context, conn net.Conn, name string) {
	t.mu.Lock()
	t.served = append(t.served, name)
	t.mu.Unlock()
	c := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{t.cert}, MinVersion: tls.VersionTLS12})
	if _, err := io.WriteString(c, "terminated "+name+"\n"); err != nil {
		return
	}
	_, _ = io.Copy(c, c)
}

func (t *terminator) servedNames() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.served...)
}

// terminated opens a TLS session through a CONNECT to name:443 and reads
// the terminator's first line.
func terminated(t *testing.T, sock string, up *upstreams, name string) (*tls.Conn, string, error) {
	t.Helper()
	tunnel, code := connect(t, sock, name+":443")
	if code != http.StatusOK {
		t.Fatalf("CONNECT %s:443: %d", name, code)
	}
	cfg := up.tls.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = name
	c := tls.Client(tunnel, cfg)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil { // bounds a failure only
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return c, line, err
}

func TestATerminatedNameIsServedByTheTerminatorOthersAreTunnelled(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	term := newTerminator(up, "a.example.com")
	s, sock := serveTerminating(t, p, nil, term, "a.example.com", "b.example.com")
	if _, line, err := terminated(t, sock, up, "a.example.com"); err != nil || line != "terminated a.example.com\n" {
		t.Errorf("a.example.com: %q %v; want the terminator's answer after its hello", line, err)
	}
	if code, body, err := get(client(sock, up), "https://b.example.com/"); err != nil || code != http.StatusOK || body != "reached b.example.com" {
		t.Errorf("b.example.com: %d %q %v; want it tunnelled to the upstream", code, body, err)
	}
	if got := term.servedNames(); len(got) != 1 || got[0] != "a.example.com" {
		t.Errorf("the terminator served %q; want a.example.com once", got)
	}
	if st := s.Stats(); st.Allowed != 2 {
		t.Errorf("stats %+v; want both connections allowed", st)
	}
}

func TestATerminatedNameMustStillLeadToAnAllowedAddress(t *testing.T) {
	up := startUpstreams(t)
	r := resolve(map[string][]string{"a.example.com": {"127.0.0.2"}})
	p := newProxy(Config{Resolver: r, Destinations: allowLoopback}, up, nil)
	term := newTerminator(up, "a.example.com")
	s, sock := serveTerminating(t, p, nil, term, "a.example.com")
	if _, _, err := terminated(t, sock, up, "a.example.com"); err == nil {
		t.Error("a name at a refused address was terminated")
	}
	if st := s.Stats(); st.RefusedAddresses != 1 || st.Allowed != 0 || len(term.servedNames()) != 0 {
		t.Errorf("stats %+v, terminator served %q; want one refused address, nothing served", st, term.servedNames())
	}
}

func TestCloseAndIdlenessEndATerminatedConnection(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	s, sock := serveTerminating(t, p, nil, newTerminator(up, "a.example.com"), "a.example.com")
	c, _, err := terminated(t, sock, up, "a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a terminated connection after Close: %v, want it cut", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}

	idle := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback, IdleTimeout: 50 * time.Millisecond}, up, nil)
	_, sock = serveTerminating(t, idle, nil, newTerminator(up, "a.example.com"), "a.example.com")
	if c, _, err = terminated(t, sock, up, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("an idle terminated connection: %v, want it closed", err)
	}
}

func TestATerminatedConnectionHoldsOneOfTheRunsSlots(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback, MaxConns: 1}, up, nil)
	_, sock := serveTerminating(t, p, nil, newTerminator(up, "a.example.com"), "a.example.com")
	if _, _, err := terminated(t, sock, up, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, code := connect(t, sock, "a.example.com:443"); code != http.StatusTooManyRequests {
		t.Errorf("a second connection with a bound of 1: %d, want 429", code)
	}
}
