// Package egress is the host's egress proxy: each run reaches the network
// only through a socket of its own, served with that run's list of names,
// so the socket a connection comes through is the run it belongs to.
//
// The proxy speaks HTTP CONNECT and plain HTTP forwarding. It checks the
// name asked for against the run's list before any lookup, looks names up
// itself, and dials by address through netguard, which refuses the host's
// loopback, link-local, private and own addresses on the address actually
// dialled. A CONNECT to port 443 must send a TLS ClientHello naming the
// CONNECT name. A run's Terminator, when it has one, serves the TLS
// connections to the names it terminates (package intercept: the host adds
// a credential); every other name is tunnelled untouched. It logs
// nothing: what it refuses is counted per run and told to an optional
// observer, by host and port only, never a URL.
package egress

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/agentrun/agentrun/internal/netguard"
)

// Resolver looks names up; *net.Resolver is one. A host setting for tests
// points it at a test's DNS server.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config is the host's settings of the proxy, the same for every run.
type Config struct {
	// Resolver looks up the names runs ask for; nil: net.DefaultResolver.
	Resolver Resolver
	// Destinations are the addresses the proxy may dial: its Allowed ranges
	// are what the host's owner lets runs reach although they are private
	// (tests: 127.0.0.1/32).
	Destinations netguard.Destinations
	// DialTimeout bounds a lookup and its dials; 0: 10 seconds.
	DialTimeout time.Duration
	// IdleTimeout closes a tunnel or a kept-alive connection that carried
	// nothing for this long (a tunnel whose download the kernel splices:
	// up to half as long again), and bounds the wait for a request's header
	// and for a ClientHello; 0: 5 minutes.
	IdleTimeout time.Duration
	// MaxConns bounds the connections one run has open through the proxy;
	// 0: 64.
	MaxConns int
}

// Proxy serves the runs of one host.
type Proxy struct {
	cfg      Config
	resolver Resolver
	// dialer is a *net.Dialer whose Control is netguard's; tests put it
	// behind one that sends port 443 to their upstreams' ports.
	dialer interface {
		DialContext(ctx context.Context, network, address string) (net.Conn, error)
	}
}

// New returns the host's proxy.
func New(cfg Config) *Proxy {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	p := &Proxy{cfg: cfg, resolver: cfg.Resolver}
	if p.resolver == nil {
		p.resolver = net.DefaultResolver
	}
	p.dialer = &net.Dialer{Timeout: cfg.DialTimeout, Control: cfg.Destinations.Control}
	return p
}

// dial looks name up and connects to its addresses in turn. It dials
// addresses, never the name, and netguard checks each in the dialer's
// Control: what is checked is what is dialled, whatever the resolver
// answered before.
func (p *Proxy) dial(ctx context.Context, name string, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	addrs, err := p.resolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("the name has no address")
	}
	var errs []error
	for _, a := range addrs {
		c, err := p.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(a.Unmap(), port).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// Server is the proxy serving one run's socket.
type Server struct {
	proxy   *Proxy
	policy  Policy
	observe func(Attempt)
	term    Terminator
	stats   counters
	slots   chan struct{}
	http    *http.Server
	forward http.Handler
	// transport keeps plain HTTP's upstream connections for reuse, this
	// run's only.
	transport *http.Transport
	ctx       context.Context
	cancel    context.CancelFunc

	mu     sync.Mutex
	closed bool
	open   map[net.Conn]struct{} // what Close must close: clients and upstreams
	wg     sync.WaitGroup        // the accept loop and every handler
}

// Serve serves one run on l (the run's socket) with its policy until Close.
// observe, when not nil, is told of every attempt, allowed or refused, on
// the connection's goroutine: it must not block (an event recorder or a
// metric counter). term, when not nil, serves the TLS connections to the
// names it terminates; every other name is tunnelled.
func (p *Proxy) Serve(l net.Listener, policy Policy, observe func(Attempt), term Terminator) *Server {
	s := &Server{
		proxy:   p,
		policy:  policy,
		observe: observe,
		term:    term,
		slots:   make(chan struct{}, p.cfg.MaxConns),
		open:    map[net.Conn]struct{}{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.forward = s.forwarder()
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: p.cfg.IdleTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		// The proxy logs nothing: net/http's messages can carry what a
		// client sent.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.http.Serve(boundedListener{Listener: l, s: s}) // ends with Close
	}()
	return s
}

// Close stops serving the run: it closes the socket's listener and every
// connection and tunnel of the run, and returns when none is left.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	open := s.open
	s.open = map[net.Conn]struct{}{}
	s.mu.Unlock()
	s.cancel()
	err := s.http.Close()
	for c := range open {
		_ = c.Close()
	}
	s.wg.Wait()
	s.transport.CloseIdleConnections()
	return err
}

// track records c for Close, and tells whether the server still serves:
// if not, c is closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.open[c] = struct{}{}
	}
	s.mu.Unlock()
	if closed {
		_ = c.Close() // outside the lock: a client's Close untracks itself
	}
	return !closed
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
}

// begin counts a handler for Close to wait for, unless Close began.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// ServeHTTP is a request from the run's socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	switch {
	case r.Method == http.MethodConnect:
		s.connect(w, r)
	case r.URL.Scheme == "http" && r.URL.Host != "":
		s.forward.ServeHTTP(w, r)
	default:
		http.Error(w, "a proxy: send absolute-form http:// requests, and CONNECT for https", http.StatusBadRequest)
	}
}

// decide counts an attempt and tells the observer.
func (s *Server) decide(a Attempt) {
	s.stats.add(a)
	if s.observe != nil {
		s.observe(a)
	}
}

// refuse answers a refused request with its status and reason.
func (s *Server) refuse(w http.ResponseWriter, a Attempt, status int) {
	s.decide(a)
	http.Error(w, "agentrun egress: "+a.Target+": "+a.Reason, status)
}

// target reads a request's host and port (lower case), and says why the
// run may not have them: an IP address, not a name; not on its list.
func (s *Server) target(host, port string, defaultPort uint16) (string, uint16, *Attempt) {
	host = lowerASCII(host)
	n := uint64(defaultPort)
	if port != "" {
		var err error
		if n, err = strconv.ParseUint(port, 10, 16); err != nil {
			n = 0
		}
	}
	refused := &Attempt{Outcome: RefusedName, Target: shown(host, uint16(n))}
	switch {
	case n == 0:
		refused.Reason = "not a port"
	case isIPLiteral(host):
		refused.Reason = "an IP address: the proxy connects to names only"
	case ValidName(host) != nil:
		refused.Reason = "not a host name"
	case !s.policy.Allows(host, uint16(n)):
		refused.Reason = "not on the run's egress list"
	default:
		return host, uint16(n), nil
	}
	return "", 0, refused
}

// shown is how counters and observers name a target: host and port, the
// host replaced when it is not a name nor an address, so what is kept is
// bounded and is never something else a client sent.
func shown(host string, port uint16) string {
	if !isIPLiteral(host) && ValidName(host) != nil {
		host = "(not a host name)"
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// lowerASCII lowers A to Z only: a name is ASCII, and Unicode's case
// folding would take some other letters for ASCII ones (the Kelvin sign is
// a k).
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
