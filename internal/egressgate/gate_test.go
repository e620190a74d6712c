package egressgate

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/netguard"
)

const uid = "123e4567-e89b-12d3-a456-426614174000"

// loopbackNames resolves every name to the loopback, where the tests'
// upstream listens.
type loopbackNames struct{}

func (loopbackNames) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// newGate is a gate on a directory of the test's, whose proxy reaches the
// loopback, and an upstream there; it returns the upstream's port.
func newGate(t *testing.T, dir string) (*Gate, string) {
	t.Helper()
	g, err := New(dir, egress.Config{
		Resolver:     loopbackNames{},
		Destinations: netguard.Destinations{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
	}, Roots{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "upstream") }))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	return g, u.Port()
}

// get fetches http://name:port/ through the run's socket, as the run's
// forwarder carries it, and returns the answer's status.
func get(t *testing.T, g *Gate, name, port string) (int, error) {
	t.Helper()
	proxy, _ := url.Parse("http://proxy")
	c := &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyURL(proxy),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(g.RunDir(uid), SocketName))
		},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + net.JoinHostPort(name, port) + "/")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// shortDir is a directory of the test's with a short path: t.TempDir's are
// too long for a Unix socket's path below a run's directory.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func policy(t *testing.T, patterns ...string) egress.Policy {
	t.Helper()
	p, err := egress.ParsePolicy(patterns...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestARunsSocketServesItsListAndCountsWhatItRefused(t *testing.T) {
	g, port := newGate(t, shortDir(t))
	if err := g.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{g.RunDir(uid), 0o755}, {filepath.Join(g.RunDir(uid), SocketName), 0o666}} {
		info, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != c.mode {
			t.Errorf("%s has mode %v, want %v: a run's user must reach the socket", c.path, info.Mode().Perm(), c.mode)
		}
	}
	if code, err := get(t, g, "allowed.test", port); err != nil || code != http.StatusOK {
		t.Errorf("allowed.test: %d, %v; want 200", code, err)
	}
	if code, err := get(t, g, "denied.test", port); err != nil || code != http.StatusForbidden {
		t.Errorf("denied.test: %d, %v; want 403", code, err)
	}
	st, ok := g.Stats(uid)
	if !ok || st.Allowed != 1 || st.RefusedNames != 1 || len(st.TopRefused) != 1 || st.TopRefused[0].Target != "denied.test:"+port {
		t.Errorf("stats %+v (served: %v); want 1 allowed, denied.test refused once", st, ok)
	}
}

func TestAStoppedRunHasNoSocketNorDirectory(t *testing.T) {
	g, port := newGate(t, shortDir(t))
	if err := g.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)}); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(uid); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, g, "allowed.test", port); err == nil {
		t.Error("a stopped run's socket still answers")
	}
	if _, err := os.Lstat(g.RunDir(uid)); !os.IsNotExist(err) {
		t.Errorf("a stopped run's directory is left: %v", err)
	}
	if g.Serving(uid) {
		t.Error("a stopped run is still served")
	}
}

// A new process (a restarted manager) serves a running run again in the
// same directory, the one the run's container has mounted.
func TestARestartedHostServesARunInTheDirectoryItsContainerMounted(t *testing.T) {
	dir := shortDir(t)
	first, port := newGate(t, dir)
	if err := first.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)}); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(first.RunDir(uid))
	if err != nil {
		t.Fatal(err)
	}
	_ = first.Close() // the manager stops: the socket file stays, unserved
	if _, err := get(t, first, "allowed.test", port); err == nil {
		t.Fatal("a socket still answers while no process serves it")
	}
	second, _ := newGate(t, dir)
	if err := second.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(second.RunDir(uid))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the run's directory was made anew: its container's mount shows the old one")
	}
	if code, err := get(t, second, "allowed.test", port); err != nil || code != http.StatusOK {
		t.Errorf("after the restart: %d, %v; want 200", code, err)
	}
	if err := second.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)}); err != nil {
		t.Errorf("serving a run served already: %v", err)
	}
}

// What is in the socket directory is the host's, but a link where a run's
// directory goes must not make the gate write elsewhere.
func TestALinkInPlaceOfARunsDirectoryIsNotFollowed(t *testing.T) {
	dir, elsewhere := shortDir(t), t.TempDir()
	g, port := newGate(t, dir)
	if err := os.Symlink(elsewhere, filepath.Join(dir, uid)); err != nil {
		t.Fatal(err)
	}
	err := g.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("serving through a link: %v; want it refused", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("the gate wrote %v through the link", entries)
	}
	if err := g.Stop(uid); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(elsewhere); err != nil {
		t.Errorf("stopping removed the link's target: %v", err)
	}
	for _, bad := range []string{"", "..", "../" + uid, "a/b"} {
		if err := g.Serve(bad, Run{}); err == nil {
			t.Errorf("Serve(%q) accepted a path for a UID", bad)
		}
	}
}

// A run deleted while no manager ran leaves its directory: Collect removes
// it, and only it: not a run's that is kept or served, nor one made for a
// launch a moment ago.
func TestCollectRemovesOnlyTheDirectoriesOfRunsGone(t *testing.T) {
	dir := shortDir(t)
	g, port := newGate(t, dir)
	for _, u := range []string{"gone", "kept", "young"} {
		if err := os.Mkdir(filepath.Join(dir, u), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Serve(uid, Run{Policy: policy(t, "allowed.test:"+port)}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for _, u := range []string{"gone", "kept", uid} {
		if err := os.Chtimes(filepath.Join(dir, u), old, old); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := g.Collect(func(uid string) bool { return uid == "kept" }, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{"gone"}) {
		t.Errorf("removed %q, want only the gone run's", removed)
	}
	for _, u := range []string{"kept", "young", uid} {
		if _, err := os.Lstat(filepath.Join(dir, u)); err != nil {
			t.Errorf("%s's directory: %v", u, err)
		}
	}
	if code, err := get(t, g, "allowed.test", port); err != nil || code != http.StatusOK {
		t.Errorf("the served run's socket after Collect: %d, %v", code, err)
	}
}

// A manager's reconciles may still be in flight while it closes its gate: a
// run served after Close began would keep a proxy nobody ends, open after
// its manager stopped.
func TestARunServedAsTheGateClosesIsRefused(t *testing.T) {
	g, port := newGate(t, shortDir(t))
	observed, release := make(chan struct{}), make(chan struct{})
	busy := Run{Policy: policy(t, "allowed.test:"+port), Observe: func(egress.Attempt) {
		close(observed)
		<-release // holds Close until the run below is served
	}}
	if err := g.Serve(uid, busy); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = get(t, g, "allowed.test", port) }()
	<-observed
	closed := make(chan error)
	go func() { closed <- g.Close() }()
	// Close is under way once it has taken the busy run from the gate.
	for g.Serving(uid) {
		time.Sleep(time.Millisecond)
	}
	const late = "223e4567-e89b-12d3-a456-426614174000"
	served := g.Serve(late, Run{Policy: policy(t, "allowed.test:"+port)})
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if served == nil {
		t.Error("a run was served after the gate began closing")
	}
	if c, err := net.Dial("unix", filepath.Join(g.RunDir(late), SocketName)); err == nil {
		_ = c.Close()
		t.Error("a run's socket still answers after its gate closed")
	}
}
