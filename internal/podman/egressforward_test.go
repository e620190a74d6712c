package podman

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	rt "github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/egressforward"
	"github.com/agentrun/agentrun/internal/policy"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The egress forwarder (cmd/agentrun-forward) in a container as a run's will
// have it: no network but loopback, the host's user and hardening, the binary
// and the directory of the egress proxy's socket mounted read-only. The proxy
// is a stand-in here: an HTTP server on the socket that answers every request
// and records it.

// forwarderPath is where the container finds the forwarder.
const forwarderPath = "/usr/local/bin/agentrun-forward"

// buildForwarder builds cmd/agentrun-forward as make build does (static) and
// returns its path.
func buildForwarder(t *testing.T) string {
	t.Helper()
	out, err := testenv.Forwarder()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recorder is an HTTP server that answers every request and records its
// method and target.
type recorder struct {
	mu       sync.Mutex
	requests []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Method+" "+req.URL.String())
	r.mu.Unlock()
	fmt.Fprint(w, "answer from the egress socket")
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// serveHTTP serves a new recorder on l until the test ends.
func serveHTTP(t *testing.T, l net.Listener) *recorder {
	t.Helper()
	rec := &recorder{}
	srv := &http.Server{Handler: rec} //nolint:gosec // a test's stand-in, closed at cleanup
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return rec
}

// egressSocket serves a recorder on a Unix socket in a directory of its own,
// and returns the directory. The container's user (not root, no capability)
// must be able to reach the socket: the directory it is the mount of must
// let it through, and the socket must be writable by it (connecting is
// writing). SELinux labels play no part on this machine.
func egressSocket(t *testing.T) (string, *recorder) {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, filepath.Base(egressforward.Defaults.Socket)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, filepath.Base(egressforward.Defaults.Socket)), 0o666); err != nil {
		t.Fatal(err)
	}
	return dir, serveHTTP(t, l)
}

// hardenAsARun applies the host's default policy to s, as the reconciler does
// to a run's container: user 1000:1000, every capability dropped, no new
// privileges.
func hardenAsARun(t *testing.T, s *rt.Spec) {
	t.Helper()
	p := policy.Policy{AllowedImages: []string{"*"}, AllowedNetworks: policy.DefaultNetworks, User: policy.DefaultUser}
	s.Network = "none"
	if refused := p.Apply(s); refused != nil {
		t.Fatal(refused)
	}
}

// forwardScript is the run's command: a request through the forwarder, a
// second forwarder that cannot start (the port is the first one's), the
// first forwarder killed, the same request again, and an exit code of its own.
// The forwarder's sockets close only when its last thread has exited: its
// main thread shows as a zombie while the others are still exiting, so the
// wait is for a zombie with one thread left (or none at all).
// (No wget -T: busybox 1.35's wget crashes when a connect with a timeout
// fails.) Everything goes to stdout: the log keeps stdout's and stderr's
// lines in no fixed order between the two, and the checks read wget's error
// beside the line after it.
const forwardScript = `exec 2>&1
wget -q -O- http://example.test/through-the-forwarder; echo " first=$?"
agentrun-forward exec -- sh -c 'echo ran without a forwarder'; echo "second forwarder=$?"
pid=$(pidof agentrun-forward); kill "$pid"
until [ ! -e /proc/$pid ] || { grep -qs '^State:.*Z' /proc/$pid/status && grep -qs '^Threads:[[:space:]]*1$' /proc/$pid/status; }; do sleep 0.1; done
wget -q -O- http://example.test/after-the-kill; echo " after the kill=$?"
echo still running; exit 7`

func TestForwarderCarriesARunsRequestsToTheEgressSocketAndNothingOnceKilled(t *testing.T) {
	r := newRuntime(t)
	forwarder := buildForwarder(t)
	dir, proxy := egressSocket(t)
	id, _ := run(t, r, forwardScript, func(s *rt.Spec) {
		hardenAsARun(t, s)
		s.Command = append([]string{forwarderPath, "exec", "--"}, s.Command...)
		s.Mounts = append(s.Mounts,
			rt.Mount{Source: forwarder, Destination: forwarderPath, Options: []string{"ro"}},
			rt.Mount{Source: dir, Destination: filepath.Dir(egressforward.Defaults.Socket), Options: []string{"ro"}})
	})
	c := waitExited(t, r, id)
	out, err := r.Logs(t.Context(), id, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if c.ExitCode != 7 {
		t.Errorf("exit code %d, want the command's own 7; output:\n%s", c.ExitCode, out)
	}
	for _, want := range []string{
		"answer from the egress socket first=0",
		fmt.Sprintf("second forwarder=%d", egressforward.ExitNoForwarder),
		"can't connect to remote host (127.0.0.1): Connection refused\n after the kill=1",
		"still running",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"ran without a forwarder", "after the kill=0"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q:\n%s", unwanted, out)
		}
	}
	if got, want := proxy.seen(), []string{"GET http://example.test/through-the-forwarder"}; !slices.Equal(got, want) {
		t.Errorf("the egress socket got %q, want %q", got, want)
	}
}

// hostAddresses are this machine's IPv4 addresses but loopback: its own and
// the bridges' (Podman's among them).
func hostAddresses(t *testing.T) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && ipnet.IP.To4() != nil && !ipnet.IP.IsLoopback() {
			ips = append(ips, ipnet.IP.String())
		}
	}
	if len(ips) == 0 {
		t.Fatal("this machine has no IPv4 address but loopback: nothing to try to reach")
	}
	return ips
}

func TestANetworkNoneContainerReachesNothingOnTheHostWithoutTheForwarder(t *testing.T) {
	r := newRuntime(t)
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	host := serveHTTP(t, l)
	port := l.Addr().(*net.TCPAddr).Port
	// One stream: conmon logs stdout and stderr apart, so their lines can
	// come out of order.
	script := `exec 2>&1; ip -o link | cut -d: -f2; for a in "$@"; do wget -q -O- "http://$a:` + fmt.Sprint(port) + `/direct" && echo " reached $a"; done; echo tried`
	addrs := hostAddresses(t)
	id, _ := run(t, r, script, func(s *rt.Spec) {
		hardenAsARun(t, s)
		s.Command = append(s.Command, append([]string{"sh"}, addrs...)...)
	})
	waitExited(t, r, id)
	out, err := r.Logs(t.Context(), id, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Fields(out)[0] != "lo" || !strings.HasSuffix(out, "tried\n") || strings.Contains(out, "reached") {
		t.Errorf("want only loopback and no host address reached; output:\n%s", out)
	}
	for _, a := range addrs {
		if want := "can't connect to remote host (" + a + "): Network is unreachable"; !strings.Contains(out, want) {
			t.Errorf("output lacks %q: the container must have no route at all:\n%s", want, out)
		}
	}
	if got := host.seen(); len(got) != 0 {
		t.Errorf("a server on the host's addresses got %q from a container with network none", got)
	}
}
