package egress

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// pipe carries bytes both ways between a run's client and the upstream
// until both sides are done, the tunnel has carried nothing for the idle
// time, or the server closes. in is what to read from the client.
func (s *Server) pipe(client net.Conn, in io.Reader, upstream net.Conn) {
	if !s.track(upstream) {
		return
	}
	defer s.untrack(upstream)
	t := &tunnel{idle: s.proxy.cfg.IdleTimeout}
	t.touch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.copy(upstream, client, in)
	}()
	t.copy(client, upstream, upstream)
	<-done
}

// tunnel is one CONNECT's two directions, idle only when both are.
type tunnel struct {
	idle       time.Duration
	lastActive atomic.Int64 // Unix nanoseconds
}

func (t *tunnel) touch() { t.lastActive.Store(time.Now().UnixNano()) }

// activeWithin tells whether either direction carried bytes within the
// idle time: a download is not idle because its client sends nothing.
func (t *tunnel) activeWithin() bool {
	return time.Since(time.Unix(0, t.lastActive.Load())) < t.idle
}

// copy carries src (read from in) to dst. At the source's end it closes
// dst for writing, so the other side sees the end and the other direction
// goes on (a half-close); on a failure it closes both, which ends the other
// direction too.
func (t *tunnel) copy(dst, src net.Conn, in io.Reader) {
	buf := make([]byte, 64<<10)
	for {
		_ = src.SetReadDeadline(time.Now().Add(t.idle))
		n, err := in.Read(buf)
		if n > 0 {
			t.touch()
			_ = dst.SetWriteDeadline(time.Now().Add(t.idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeBoth(dst, src)
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && t.activeWithin():
		case errors.Is(err, io.EOF):
			closeWrite(dst)
			return
		default:
			closeBoth(dst, src)
			return
		}
	}
}

func closeBoth(a, b net.Conn) {
	_ = a.Close()
	_ = b.Close()
}

// closeWrite half-closes c if it can, else closes it.
func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
		return
	}
	_ = c.Close()
}
