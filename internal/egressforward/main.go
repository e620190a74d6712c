package egressforward

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// Exit codes of the binary's own failures. ExitNoForwarder is the one a run's
// container ends with when the forwarder could not start: the command was not
// run, since it would have had no network.
const (
	ExitUsage       = 2
	ExitNoForwarder = 121
	// ExitCannotRun and ExitNotFound are a shell's codes for a command that
	// could not be run and one that was not found.
	ExitCannotRun = 126
	ExitNotFound  = 127
)

// Config is where the forwarder listens and where it sends connections.
type Config struct {
	// Listen is the TCP address inside the container the tools connect to.
	Listen string
	// Socket is the host's egress proxy's Unix socket, mounted into the
	// container.
	Socket string
	// MaxConns bounds the connections carried at once; above the proxy's own
	// per-run bound, so that this one only keeps a runaway from exhausting
	// the container's file descriptors.
	MaxConns int
}

// Defaults are the settings the host's reconciler relies on when it mounts
// the proxy's socket and sets nothing else. The host mounts the socket's
// directory at /run/agentrun, not the socket itself: a mount of the file
// would keep pointing at the old socket once a restarted proxy made a new
// one. The container's user must be able to search that directory and
// write to the socket (connecting is writing); the mount may be read-only.
var Defaults = Config{Listen: "127.0.0.1:3128", Socket: "/run/agentrun/egress.sock", MaxConns: 512}

const usage = `usage:
  agentrun-forward exec [flags] -- COMMAND [ARG...]
      start the forwarder in the background, wait until it listens, then run
      COMMAND in this process with HTTPS_PROXY, HTTP_PROXY and NO_PROXY set;
      if the forwarder cannot start, or no proxy answers on the socket
      within --proxy-wait, COMMAND is not run (exit code 121)
  agentrun-forward serve [flags]
      run the forwarder in the foreground
`

// Main runs the binary with args (without the program's name) and returns
// its exit code. The exec role returns only when it failed: on success the
// process has become the command.
func Main(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "exec":
		return execRole(args[1:], stderr)
	case "serve":
		return serveRole(args[1:], stderr)
	}
	complain(stderr, "unknown role %q", args[0])
	_, _ = fmt.Fprint(stderr, usage)
	return ExitUsage
}

// flags registers the settings' flags on a new flag set for role, filled in
// with Defaults.
func flags(role string, c *Config, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("agentrun-forward "+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { _, _ = fmt.Fprint(stderr, usage+"flags:\n"); fs.PrintDefaults() }
	*c = Defaults
	fs.StringVar(&c.Listen, "listen", c.Listen, "the TCP address to listen on")
	fs.StringVar(&c.Socket, "socket", c.Socket, "the egress proxy's Unix socket")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "the most connections carried at once; more are closed")
	return fs
}

// defaultProxyWait is how long exec waits for the proxy to answer: longer
// than a host manager's restart, during which no process serves the run's
// socket (about 25 s in the local fleet), so that a container started just
// before its manager restarted runs once the new one serves it.
const defaultProxyWait = time.Minute

func execRole(args []string, stderr io.Writer) int {
	var c Config
	fs := flags("exec", &c, stderr)
	wait := fs.Duration("proxy-wait", defaultProxyWait, "how long to wait for the proxy to answer on the socket before giving up")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 || c.MaxConns < 1 {
		fs.Usage()
		return ExitUsage
	}
	command := fs.Args()
	// Looked up first, so that no forwarder is left behind for a command
	// that cannot run.
	path, err := exec.LookPath(command[0])
	if err != nil {
		complain(stderr, "%v", err)
		return ExitNotFound
	}
	self, err := os.Executable()
	if err != nil {
		complain(stderr, "finding its own binary: %v", err)
		return ExitNoForwarder
	}
	// Start ties the forwarder's life to this thread; Exec must replace the
	// process from the same one (see Start).
	runtime.LockOSThread()
	addr, err := Start(self, c)
	if err != nil {
		complain(stderr, "the egress forwarder did not start (%v); "+
			"not running %s, which would have no network", err, command[0])
		return ExitNoForwarder
	}
	// Without a proxy every connection would be refused: the run ends,
	// saying so, rather than run without a network.
	if err := awaitProxy(c.Socket, *wait); err != nil {
		complain(stderr, "no egress proxy answers on %s after %s (%v); not running %s, which would have no network", c.Socket, *wait, err, command[0])
		return ExitNoForwarder
	}
	err = syscall.Exec(path, command, ProxyEnv(os.Environ(), addr))
	complain(stderr, "running %s: %v", command[0], err)
	return ExitCannotRun
}

func serveRole(args []string, stderr io.Writer) int {
	var c Config
	fs := flags("serve", &c, stderr)
	readyFD := fs.Int("ready-fd", 0, "a pipe to write the listening address to once listening (used by exec)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || c.MaxConns < 1 {
		fs.Usage()
		return ExitUsage
	}
	l, err := net.Listen("tcp", c.Listen)
	if err != nil {
		if *readyFD > 0 {
			signalFailure(*readyFD, err)
		} else {
			complain(stderr, "%v", err)
		}
		return 1
	}
	if *readyFD > 0 {
		if err := signalReady(*readyFD, l.Addr().String()); err != nil {
			complain(stderr, "signalling readiness: %v", err)
			return 1
		}
	}
	Serve(l, c.Socket, c.MaxConns)
	return 0
}

// awaitProxy probes the proxy's socket until it answers or wait has passed.
func awaitProxy(socket string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := probe(socket)
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probe connects to the proxy's socket once, and closes the connection.
func probe(socket string) error {
	c, err := net.DialTimeout("unix", socket, dialTimeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// complain writes one line about a failure of the binary's own to stderr,
// which in a run's container is the run's output.
func complain(stderr io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(stderr, "agentrun-forward: "+format+"\n", args...)
}
