package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/agentrun/agentrun/internal/netguard"
)

// Terminator ends TLS for some of a run's names instead of tunnelling
// them: the host adds a credential to what the run sends there (package
// intercept). The proxy knows nothing of credentials; it asks the run's
// terminator which names are its.
type Terminator interface {
	// Terminates tells whether the terminator serves name's connections.
	Terminates(name string) bool
	// ServeConn serves one client's connection to name, a TLS session
	// whose ClientHello named name, until it ends or ctx is done (the
	// run's server closed). conn's first bytes are that ClientHello.
	ServeConn(ctx context.Context, conn net.Conn, name string)
}

// Dial connects to address (name:port) as the proxy does for the run's
// tunnels: the name looked up by the proxy's resolver, every address
// checked by netguard. A terminator's upstream connections come from it.
func (p *Proxy) Dial(ctx context.Context, _, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", port, err)
	}
	return p.dial(ctx, host, uint16(n))
}

// reachable tells whether name has an address the host lets runs reach,
// for a connection the terminator dials later: refused as a tunnel's dial
// would be, not accepted only to fail each request. The terminator's own
// dials go through netguard again (DNS may answer otherwise then).
func (p *Proxy) reachable(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	addrs, err := p.resolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return err
	}
	errs := []error{errors.New("the name has no address")}
	for _, a := range addrs {
		err := p.cfg.Destinations.Check(a)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// terminate hands the client's connection to the run's terminator, the
// hello already read replayed first. The connection keeps its slot and is
// closed by the server's Close (it is the tracked client connection), and
// closed when idle as a tunnel is.
func (s *Server) terminate(ctx context.Context, client net.Conn, in io.Reader, hello clientHello, name string) {
	if err := s.proxy.reachable(ctx, name); err != nil {
		if errors.Is(err, netguard.ErrNotAllowed) {
			s.decide(refusedAddress(shown(name, 443)))
		}
		return
	}
	s.decide(Attempt{Outcome: Allowed, Target: shown(name, 443)})
	c := watchIdle(&replayConn{Conn: client, in: io.MultiReader(bytes.NewReader(hello.bytes), in)}, s.proxy.cfg.IdleTimeout)
	defer c.Close()
	s.term.ServeConn(s.ctx, c, name)
}

// replayConn reads from in, which starts with what was read from the
// connection already.
type replayConn struct {
	net.Conn
	in io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.in.Read(p) }

// idleConn closes its connection once nothing went either way for the
// idle time. It watches with a timer, not deadlines: the HTTP server the
// terminator runs sets deadlines of its own.
type idleConn struct {
	net.Conn
	idle   time.Duration
	last   atomic.Int64 // Unix nanoseconds
	timer  *time.Timer
	closed atomic.Bool
}

func watchIdle(c net.Conn, idle time.Duration) *idleConn {
	ic := &idleConn{Conn: c, idle: idle}
	ic.last.Store(time.Now().UnixNano())
	ic.timer = time.AfterFunc(idle, ic.check)
	return ic
}

// check closes the connection if it was idle for the idle time, else
// looks again when it would have been.
func (c *idleConn) check() {
	if c.closed.Load() {
		return
	}
	quiet := time.Since(time.Unix(0, c.last.Load()))
	if quiet >= c.idle {
		_ = c.Close()
		return
	}
	c.timer.Reset(c.idle - quiet)
}

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *idleConn) Close() error {
	c.closed.Store(true)
	c.timer.Stop()
	return c.Conn.Close()
}
