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
	if !t.splice(client, upstream) {
		t.copy(client, upstream, upstream)
	}
	<-done
}

// tunnel is one CONNECT's two directions, idle only when both are.
type tunnel struct {
	idle       time.Duration
	lastActive atomic.Int64 // Unix nanoseconds
	// splicing is set while splice carries the upstream's bytes: it
	// watches that direction's idleness itself.
	splicing atomic.Bool
}

func (t *tunnel) touch() { t.lastActive.Store(time.Now().UnixNano()) }

// activeWithin tells whether either direction carried bytes within the
// idle time: a download is not idle because its client sends nothing.
func (t *tunnel) activeWithin() bool {
	return time.Since(time.Unix(0, t.lastActive.Load())) < t.idle
}

// splice carries the upstream's bytes to the client inside the kernel
// (splice(2), which TCPConn.WriteTo uses for a Unix socket) when the
// upstream is TCP and the client the run's Unix socket, as a run's are, and
// tells whether it could. The bytes of a download then never come up to
// the proxy: copied through it, they cost about a fifth more CPU than the
// same download direct, both TLS ends included, and on a busy host as much
// throughput (make bench's egress step); spliced, no more than the noise.
//
// WriteTo returns only at the upstream's end, on an error, or when the
// upstream has nothing to read after a deadline: so the deadline comes
// every half idle time, and the direction counts as idle only when a whole
// one passed without a byte from either side (at most half as long again
// as copy takes to see it). Meanwhile the other direction leaves the
// decision to it (splicing), since a busy WriteTo cannot say it is busy.
func (t *tunnel) splice(client, upstream net.Conn) bool {
	sc, ok := client.(*slotConn)
	if !ok {
		return false
	}
	dst, toUnix := sc.Conn.(*net.UnixConn)
	src, fromTCP := upstream.(*net.TCPConn)
	if !toUnix || !fromTCP {
		return false
	}
	t.splicing.Store(true)
	defer t.splicing.Store(false)
	for {
		deadline := time.Now().Add(t.idle / 2)
		_ = src.SetReadDeadline(deadline)
		_ = dst.SetWriteDeadline(deadline)
		n, err := src.WriteTo(dst)
		if n > 0 {
			t.touch()
		}
		switch {
		case err == nil:
			closeWrite(client)
			return true
		case errors.Is(err, os.ErrDeadlineExceeded) && t.activeWithin():
		default:
			closeBoth(client, upstream)
			return true
		}
	}
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
		case errors.Is(err, os.ErrDeadlineExceeded) && (t.activeWithin() || t.splicing.Load()):
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
