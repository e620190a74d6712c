package egress

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/netguard"
)

// names are the tests' hosts, all at 127.0.0.1 (the upstreams).
var names = map[string][]string{
	"allowed.example.com": {"127.0.0.1"},
	"denied.example.com":  {"127.0.0.1"},
	"a.example.com":       {"127.0.0.1"},
	"b.example.com":       {"127.0.0.1"},
}

func TestAnAllowedNameIsReachedOverHTTPSAndHTTP(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	s, sock := serve(t, p, nil, "allowed.example.com")
	c := client(sock, up)

	for _, url := range []string{"https://allowed.example.com/", "http://allowed.example.com/x?q=1"} {
		if code, body, err := get(c, url); err != nil || code != http.StatusOK || body != "reached allowed.example.com" {
			t.Errorf("%s: %d %q %v", url, code, body, err)
		}
	}
	if st := s.Stats(); st.Allowed != 2 || st.RefusedNames+st.RefusedAddresses+st.OverLimit != 0 {
		t.Errorf("stats %+v, want 2 allowed and nothing else", st)
	}
}

func TestPlainHTTPForwardsNeitherProxyCredentialsNorHopByHopHeaders(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	_, sock := serve(t, p, nil, "allowed.example.com")
	req, _ := http.NewRequest(http.MethodGet, "http://allowed.example.com/", nil)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "secret")
	req.Header.Set("X-End-To-End", "kept")
	resp, err := client(sock, up).Do(req) // the client sends Proxy-Authorization
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.headers) != 1 {
		t.Fatalf("the upstream got %d requests", len(up.headers))
	}
	h := up.headers[0]
	if h.Get("Proxy-Authorization") != "" || h.Get("X-Hop") != "" || h.Get("X-End-To-End") != "kept" {
		t.Errorf("the upstream got %v", h)
	}
}

// A plain-HTTP request's Host header cannot name another site than its URL,
// the name checked.
func TestPlainHTTPSendsTheNameChecked(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	_, sock := serve(t, p, nil, "allowed.example.com")
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET http://allowed.example.com/ HTTP/1.1\r\nHost: denied.example.com\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "reached allowed.example.com" {
		t.Errorf("a request for allowed.example.com with Host: denied.example.com: %q %v", body, err)
	}
}

func TestADeniedNameIsRefusedCountedAndNeverShowsTheURL(t *testing.T) {
	const token = "tok-q7Zx2vLm9Rw4"
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	var seen attempts
	s, sock := serve(t, p, seen.observe, "allowed.example.com")
	c := client(sock, up)

	if _, _, err := get(c, "https://denied.example.com/"); err == nil {
		t.Error("https://denied.example.com/ was reached")
	}
	code, body, err := get(c, "http://user:"+token+"@denied.example.com/x/"+token+"?token="+token)
	if err != nil || code != http.StatusForbidden || strings.Contains(body, token) {
		t.Errorf("plain HTTP to a denied name: %d %q %v, want 403 without the token", code, body, err)
	}
	if _, code := connect(t, sock, "allowed.example.com:22"); code != http.StatusForbidden {
		t.Errorf("CONNECT to an allowed name's port 22: %d, want 403", code)
	}
	if n := up.connections.Load(); n != 0 {
		t.Errorf("the upstreams got %d connections", n)
	}
	st := s.Stats()
	want := []TargetCount{{"allowed.example.com:22", 1}, {"denied.example.com:443", 1}, {"denied.example.com:80", 1}}
	if st.RefusedNames != 3 || st.Allowed != 0 || !slices.Equal(st.TopRefused, want) {
		t.Errorf("stats %+v, want 3 refused names: %v", st, want)
	}
	for _, a := range seen.all() {
		if a.Outcome != RefusedName || strings.Contains(a.Target+a.Reason, token) {
			t.Errorf("observed %+v, want a refused name without the token", a)
		}
	}
}

func TestAnIPAddressIsRefusedAsATarget(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	var seen attempts
	s, sock := serve(t, p, seen.observe, "allowed.example.com")
	for _, authority := range []string{"127.0.0.1:443", "[::1]:443", "127.0.0.1:80", "2130706433:443"} {
		if _, code := connect(t, sock, authority); code != http.StatusForbidden {
			t.Errorf("CONNECT %s: %d, want 403", authority, code)
		}
	}
	if code, _, err := get(client(sock, up), "http://"+up.plain.Listener.Addr().String()+"/"); code != http.StatusForbidden {
		t.Errorf("plain HTTP to an IP address: %d %v, want 403", code, err)
	}
	if st := s.Stats(); st.RefusedNames != 5 || up.connections.Load() != 0 {
		t.Errorf("stats %+v, upstream connections %d: want 5 refused names, no connection", st, up.connections.Load())
	}
	for _, a := range seen.all() {
		if a.Target != "(not a host name):443" && !strings.Contains(a.Reason, "IP address") {
			t.Errorf("observed %+v, want the reason to say it is an IP address", a)
		}
	}
}

func TestANameThatResolvesToLoopbackIsRefusedUnlessLoopbackIsAllowed(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: netguard.Destinations{}}, up, nil)
	s, sock := serve(t, p, nil, "allowed.example.com")
	c := client(sock, up)
	if _, _, err := get(c, "https://allowed.example.com/"); err == nil {
		t.Error("https://allowed.example.com/ at 127.0.0.1 was reached")
	}
	if code, _, err := get(c, "http://allowed.example.com/"); code != http.StatusForbidden {
		t.Errorf("http://allowed.example.com/ at 127.0.0.1: %d %v, want 403", code, err)
	}
	if st := s.Stats(); st.RefusedAddresses != 2 || st.Allowed != 0 || up.connections.Load() != 0 {
		t.Errorf("stats %+v, upstream connections %d: want 2 refused addresses, no connection", st, up.connections.Load())
	}
}

// The resolver answers an allowed address, then a refused one (DNS
// rebinding): each connection's address is checked when it is dialled.
func TestANameThatRebindsToARefusedAddressIsRefusedAtTheDial(t *testing.T) {
	up := startUpstreams(t)
	private := listen(t, "127.0.0.2:0") // refused: allowLoopback is 127.0.0.1 only
	var reached atomic.Int32
	go func() {
		for {
			c, err := private.Accept()
			if err != nil {
				return
			}
			reached.Add(1)
			c.Close()
		}
	}()
	r := resolve(map[string][]string{"allowed.example.com": {"127.0.0.1", "127.0.0.2"}})
	p := newProxy(Config{Resolver: r, Destinations: allowLoopback}, up, map[string]string{"127.0.0.2:443": private.Addr().String()})
	s, sock := serve(t, p, nil, "allowed.example.com")
	c := client(sock, up)
	if _, body, err := get(c, "https://allowed.example.com/"); err != nil {
		t.Fatalf("first answer, 127.0.0.1: %q %v", body, err)
	}
	if _, _, err := get(c, "https://allowed.example.com/"); err == nil {
		t.Error("second answer, 127.0.0.2: reached")
	}
	if st := s.Stats(); st.Allowed != 1 || st.RefusedAddresses != 1 {
		t.Errorf("stats %+v, want 1 allowed, 1 refused address", st)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the refused address got %d connections", n)
	}
}

func TestAClientHelloMustNameTheConnectName(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	s, sock := serve(t, p, nil, "allowed.example.com")

	tunnel, code := connect(t, sock, "allowed.example.com:443")
	if err := handshake(tunnel, up, "denied.example.com"); code != http.StatusOK || err == nil {
		t.Errorf("CONNECT allowed.example.com:443 (%d), hello naming denied.example.com: handshake %v, want it cut", code, err)
	}
	tunnel, _ = connect(t, sock, "allowed.example.com:443")
	if err := handshake(tunnel, up, ""); err == nil {
		t.Error("a hello without a server name: handshake done, want it cut")
	}
	tunnel, _ = connect(t, sock, "allowed.example.com:443")
	if _, err := io.WriteString(tunnel, "GET / HTTP/1.1\r\nHost: denied.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := tunnel.Read(make([]byte, 1)); err == nil {
		t.Errorf("plain HTTP in a tunnel to 443: %d bytes back, want it cut", n)
	}
	if n := up.connections.Load(); n != 0 {
		t.Errorf("the upstream got %d connections", n)
	}
	want := []TargetCount{{"allowed.example.com:443", 2}, {"denied.example.com:443", 1}}
	if st := s.Stats(); st.RefusedNames != 3 || !slices.Equal(st.TopRefused, want) {
		t.Errorf("stats %+v, want refused %v", st, want)
	}

	// The same tunnel with the right name goes through.
	tunnel, _ = connect(t, sock, "allowed.example.com:443")
	if err := handshake(tunnel, up, "allowed.example.com"); err != nil {
		t.Errorf("a hello naming allowed.example.com: %v", err)
	}
}

func TestARunHasAtMostItsBoundOfConnections(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback, MaxConns: 2}, up, nil)
	s, sock := serve(t, p, nil, "allowed.example.com:7000")
	first, code1 := connect(t, sock, "allowed.example.com:7000")
	_, code2 := connect(t, sock, "allowed.example.com:7000")
	_, code3 := connect(t, sock, "allowed.example.com:7000")
	if code1 != http.StatusOK || code2 != http.StatusOK || code3 != http.StatusTooManyRequests {
		t.Errorf("three tunnels with a bound of 2: %d %d %d, want 200 200 429", code1, code2, code3)
	}
	first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for code := 0; code != http.StatusOK && time.Now().Before(deadline); {
		_, code = connect(t, sock, "allowed.example.com:7000")
	}
	if st := s.Stats(); st.OverLimit == 0 || st.RefusedNames+st.RefusedAddresses != 0 || st.Allowed != 3 {
		t.Errorf("stats %+v: want over-limit counted apart, and a slot freed by a closed tunnel", st)
	}
}

func TestTwoRunsCannotUseEachOthersList(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	a, sockA := serve(t, p, nil, "a.example.com")
	b, sockB := serve(t, p, nil, "b.example.com")
	for _, tc := range []struct {
		sock, url string
		reached   bool
	}{
		{sockA, "https://a.example.com/", true},
		{sockA, "https://b.example.com/", false},
		{sockB, "https://b.example.com/", true},
		{sockB, "https://a.example.com/", false},
		{sockB, "http://a.example.com/", false},
	} {
		if code, _, err := get(client(tc.sock, up), tc.url); (code == http.StatusOK) != tc.reached {
			t.Errorf("%s through %s: %v, want reached %v", tc.url, tc.sock, err, tc.reached)
		}
	}
	if sa, sb := a.Stats(), b.Stats(); sa.Allowed != 1 || sa.RefusedNames != 1 || sb.Allowed != 1 || sb.RefusedNames != 2 {
		t.Errorf("run a %+v, run b %+v: each counts its own", sa, sb)
	}
}

func TestCloseCutsARunsTunnelsAndSocket(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback}, up, nil)
	s, sock := serve(t, p, nil, "allowed.example.com:7000")
	tunnel, code := connect(t, sock, "allowed.example.com:7000")
	if _, err := io.WriteString(tunnel, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tunnel, buf); code != http.StatusOK || err != nil || string(buf) != "ping" {
		t.Fatalf("the tunnel: %d %q %v", code, buf, err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if err := tunnel.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil { // bounds a failure only
		t.Fatal(err)
	}
	if _, err := tunnel.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the tunnel after Close: %v, want it cut", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Error("the socket still accepts after Close")
	}
}

func TestAnIdleTunnelIsClosed(t *testing.T) {
	up := startUpstreams(t)
	p := newProxy(Config{Resolver: resolve(names), Destinations: allowLoopback, IdleTimeout: 50 * time.Millisecond}, up, nil)
	_, sock := serve(t, p, nil, "allowed.example.com:7000")
	tunnel, code := connect(t, sock, "allowed.example.com:7000")
	if err := tunnel.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil { // bounds a failure only
		t.Fatal(err)
	}
	if _, err := tunnel.Read(make([]byte, 1)); code != http.StatusOK || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("an idle tunnel (%d): %v, want it closed", code, err)
	}
}

func TestRefusedTargetsAreKeptInBoundedMemoryMostRefusedFirst(t *testing.T) {
	var top topTargets
	for i := range 50 {
		top.add("often.example.com:443")
		for j := range 20 {
			top.add(strings.Repeat("x", i) + string(rune('a'+j)) + ".example.com:443")
		}
	}
	most := top.most(topShown)
	if len(top) > topKept || len(most) != topShown || most[0] != (TargetCount{"often.example.com:443", 50}) {
		t.Errorf("kept %d, the most refused %v", len(top), most)
	}
}

func TestASplicedDownloadIsNotCutByItsSilentUpload(t *testing.T) {
	// A splice that never waits for its upstream cannot say it carries
	// bytes until it ends: meanwhile the silent direction must leave the
	// tunnel open, and close it once the splice is over and idle.
	proxySide, client := net.Pipe()
	defer client.Close()
	upstream, far := net.Pipe()
	defer far.Close()
	tn := &tunnel{idle: 20 * time.Millisecond}
	tn.touch()
	tn.splicing.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tn.copy(upstream, proxySide, proxySide)
	}()
	select {
	case <-done:
		t.Fatal("the silent direction closed the tunnel while the download was spliced")
	case <-time.After(10 * tn.idle):
	}
	tn.splicing.Store(false)
	select {
	case <-done:
	case <-time.After(10 * time.Second): // bounds a failure only
		t.Fatal("the tunnel stayed open, idle, after the splice ended")
	}
}
