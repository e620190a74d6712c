// Package egressgate keeps a host's egress proxy serving its proxied runs:
// a directory per run under the host's socket directory, holding the Unix
// socket the run's container reaches the proxy through, served with the
// run's list of names for as long as the run runs.
//
// A run's container mounts its directory, not the socket: a socket served
// anew (after the manager restarted) is then the one the container sees. The
// directory outlives the process for that reason, and goes only when the run
// ends. While no process serves a run's socket, its connections are refused:
// the run's network is closed, never open.
package egressgate

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/intercept"
)

// SocketName is the socket's name in a run's directory, the name the
// forwarder dials (egressforward.Defaults.Socket) once the directory is
// mounted at /run/agentrun.
const SocketName = "egress.sock"

// The modes of what a run's container must reach: its user is not the
// host's, so the directory lets everyone through and the socket lets
// everyone connect (connecting is writing). The directory is mounted
// read-only: nobody in the container can put anything there.
const (
	dirMode    fs.FileMode = 0o755
	socketMode fs.FileMode = 0o666
)

// ErrClosed is Serve's answer once the gate is closing.
var ErrClosed = errors.New("the host's egress gate is closed: its manager is stopping")

// Gate serves the proxied runs of one host, each on its own socket.
type Gate struct {
	dir   string
	root  *os.Root
	proxy *egress.Proxy
	roots Roots

	mu      sync.Mutex
	servers map[string]served // by run UID
	closed  bool              // Close began: nothing is served again
}

// served is what serves one run: its proxy server, and its injector when
// it has credentials.
type served struct {
	server   *egress.Server
	injector *intercept.Injector
}

// close ends the run's serving; its credentials' values go with the
// injector.
func (s served) close() {
	_ = s.server.Close() // the listener's close error says nothing of use
	if s.injector != nil {
		s.injector.Close()
	}
}

// New opens the host's socket directory dir, made if missing, for a proxy
// built from cfg, which verifies credentialed upstreams against roots.
func New(dir string, cfg egress.Config, roots Roots) (*Gate, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("making the egress socket directory: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the egress socket directory: %w", err)
	}
	return &Gate{dir: dir, root: root, proxy: egress.New(cfg), roots: roots, servers: map[string]served{}}, nil
}

// RunDir is the host path of a run's directory, which its container mounts.
func (g *Gate) RunDir(uid string) string { return filepath.Join(g.dir, uid) }

// Run is what a run's socket is served with.
type Run struct {
	// Policy is the names the run may reach.
	Policy egress.Policy
	// Credentials are added to the run's requests to their hosts, keyed by
	// host name; each host must be allowed on port 443 by Policy. Without
	// any, the proxy ends no TLS for the run; with some, the run's directory
	// holds its CA (CAName) and the bundle its container trusts
	// (CABundleName).
	Credentials map[string]intercept.Credential
	// Deadline is the run's: its CA is valid until a margin past it. Zero:
	// a day from when the run is served.
	Deadline time.Time
	// Observe is told of every attempt (see egress.Proxy.Serve); may be nil.
	Observe func(egress.Attempt)
	// Rejected is told of every 401 or 403 answer of a credentialed host;
	// may be nil.
	Rejected func(host string, status int)
}

// Serve serves the run's socket, unless this process serves it already. A
// socket an earlier process left is replaced, and so are the CA files, in
// place, with a new CA; the directory stays, so a running container's
// mount of it sees the new socket and CA.
func (g *Gate) Serve(uid string, run Run) error {
	if err := validUID(uid); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		// A reconcile still in flight as its manager stops: a socket
		// served now would stay open with nobody to close it.
		return ErrClosed
	}
	if _, ok := g.servers[uid]; ok {
		return nil
	}
	if err := g.makeRunDir(uid); err != nil {
		return err
	}
	l, err := g.listen(uid)
	if err != nil {
		return err
	}
	var (
		s    served
		term egress.Terminator
	)
	if len(run.Credentials) > 0 {
		if term, s.injector, err = g.credentials(uid, run); err != nil {
			_ = l.Close()
			return err
		}
	}
	s.server = g.proxy.Serve(l, run.Policy, run.Observe, term)
	g.servers[uid] = s
	return nil
}

// listen listens on the run's socket, replacing one an earlier process
// left.
func (g *Gate) listen(uid string) (net.Listener, error) {
	rel := filepath.Join(uid, SocketName)
	if err := g.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the run's old egress socket: %w", err)
	}
	// The directory was checked to be one, not a link, just now, under a
	// directory only the host writes: listening by path stays in it.
	l, err := net.Listen("unix", filepath.Join(g.dir, rel))
	if err != nil {
		return nil, fmt.Errorf("listening on the run's egress socket: %w", err)
	}
	if err := g.root.Chmod(rel, socketMode); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("opening the run's egress socket to its container: %w", err)
	}
	return l, nil
}

// makeRunDir makes the run's directory, or checks that the one there is a
// directory.
func (g *Gate) makeRunDir(uid string) error {
	err := g.root.Mkdir(uid, dirMode)
	if errors.Is(err, fs.ErrExist) {
		info, lerr := g.root.Lstat(uid)
		if lerr != nil {
			return fmt.Errorf("the run's egress directory: %w", lerr)
		}
		if !info.IsDir() {
			return fmt.Errorf("the run's egress directory %s is not a directory", g.RunDir(uid))
		}
	} else if err != nil {
		return fmt.Errorf("making the run's egress directory: %w", err)
	}
	// Mkdir's mode passes through the umask.
	return g.root.Chmod(uid, dirMode)
}

// Serving tells whether this process serves the run's socket.
func (g *Gate) Serving(uid string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.servers[uid]
	return ok
}

// Stats are the run's counts since this process began serving it; ok is
// false when it does not.
func (g *Gate) Stats(uid string) (egress.Stats, bool) {
	g.mu.Lock()
	s, ok := g.servers[uid]
	g.mu.Unlock()
	if !ok {
		return egress.Stats{}, false
	}
	return s.server.Stats(), true
}

// CredentialStats are the counts of the run's credentials since this
// process began serving it, by host; nil when it does not serve the run or
// the run has none.
func (g *Gate) CredentialStats(uid string) map[string]intercept.Counts {
	g.mu.Lock()
	s := g.servers[uid]
	g.mu.Unlock()
	if s.injector == nil {
		return nil
	}
	return s.injector.Counts()
}

// Stop ends the run's serving, cutting its connections, and removes its
// directory, whether or not this process served it (an earlier one may
// have).
func (g *Gate) Stop(uid string) error {
	if err := validUID(uid); err != nil {
		return err
	}
	g.mu.Lock()
	s, ok := g.servers[uid]
	delete(g.servers, uid)
	g.mu.Unlock()
	if ok {
		s.close()
	}
	if err := g.root.RemoveAll(uid); err != nil {
		return fmt.Errorf("removing the run's egress directory: %w", err)
	}
	return nil
}

// Collect removes the directories of runs that keep does not name and this
// process does not serve, last changed before olderThan (a directory made
// for a launch whose status is not written yet is younger): those of runs
// deleted while no manager ran, which no pass of the reconciler sees again.
// It returns the UIDs removed.
func (g *Gate) Collect(keep func(uid string) bool, olderThan time.Time) ([]string, error) {
	entries, err := fs.ReadDir(g.root.FS(), ".")
	if err != nil {
		return nil, fmt.Errorf("reading the egress socket directory: %w", err)
	}
	var removed []string
	for _, e := range entries {
		uid := e.Name()
		info, err := e.Info()
		if err != nil || !e.IsDir() || keep(uid) || g.Serving(uid) || !info.ModTime().Before(olderThan) {
			continue
		}
		if err := g.Stop(uid); err != nil {
			return removed, err
		}
		removed = append(removed, uid)
	}
	return removed, nil
}

// Close ends every run's serving, keeping their directories for the
// process that serves them next, and closes the socket directory; Serve
// refuses from then on.
func (g *Gate) Close() error {
	g.mu.Lock()
	g.closed = true
	servers := g.servers
	g.servers = map[string]served{}
	g.mu.Unlock()
	for _, s := range servers {
		s.close()
	}
	return g.root.Close()
}

// validUID refuses what is not one name of a directory: a run's UID is the
// API server's, but the directory's name must never be a path.
func validUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || strings.ContainsAny(uid, "/\x00") {
		return fmt.Errorf("%q is not a run's UID", uid)
	}
	return nil
}
