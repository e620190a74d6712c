package intercept

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
)

// headerTimeout bounds the TLS handshake and a request's header on a
// terminated connection; the proxy closes one idle for longer on its own.
const headerTimeout = time.Minute

// Terminator serves a run's TLS connections to its credentialed hosts for
// the egress proxy: TLS ended with the run's authority, each request given
// to the injector.
type Terminator struct {
	authority *Authority
	injector  *Injector
}

var _ egress.Terminator = (*Terminator)(nil)

// NewTerminator is the terminator of a run's authority and injector, made
// for the same names.
func NewTerminator(a *Authority, in *Injector) *Terminator {
	return &Terminator{authority: a, injector: in}
}

// Terminates tells whether name is one of the run's credentialed hosts.
func (t *Terminator) Terminates(name string) bool { return t.injector.Terminates(name) }

// ServeConn serves one connection to name (the CONNECT name, which its
// hello's server name matched) with an HTTP/1.1 server until the client
// or the upstream ends it, or ctx is done; it returns when its request,
// if one is under way, has returned too.
func (t *Terminator) ServeConn(ctx context.Context, conn net.Conn, name string) {
	done := make(chan struct{})
	var once sync.Once
	srv := &http.Server{
		Handler:           t.injector.Handler(name),
		ReadHeaderTimeout: headerTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				once.Do(func() { close(done) })
			}
		},
		// Not nil: no HTTP/2, whatever net/http's defaults become.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// The proxy logs nothing: net/http's messages can carry what a
		// client sent.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	l := &connListener{conn: tls.Server(conn, t.authority.ServerConfig()), closed: make(chan struct{}), addr: conn.LocalAddr()}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l) // ends with Close
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	_ = srv.Close() // closes l, and the connection once the server has it
	_ = conn.Close()
	<-served
	if l.accepted() {
		<-done
	}
}

// connListener hands out one connection, then waits for its Close.
type connListener struct {
	mu     sync.Mutex
	conn   net.Conn
	given  bool
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func (l *connListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn, l.given = nil, l.given || c != nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *connListener) accepted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.given
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
