package egress

import (
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// tooMany is the answer to a connection beyond the run's bound, written
// before its request is read.
var tooMany = func() string {
	body := "agentrun egress: the run has its bound of connections open\n"
	return "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}()

// boundedListener is the run's socket, which lets a run have at most its
// bound of connections open: one more is answered 429 and closed, and
// counted apart from refusals (it asked for nothing refused).
type boundedListener struct {
	net.Listener
	s *Server
}

func (l boundedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.s.slots <- struct{}{}:
			sc := &slotConn{Conn: c, s: l.s}
			l.s.track(sc)
			return sc, nil
		default:
			l.s.decide(Attempt{Outcome: OverLimit, Reason: "the run has its bound of connections open"})
			_ = c.SetWriteDeadline(time.Now().Add(time.Second)) // a socket's buffer takes it at once
			_, _ = io.WriteString(c, tooMany)
			_ = c.Close()
		}
	}
}

// slotConn is a client's connection, which holds one of the run's slots
// until it is closed, hijacked for a tunnel or not.
type slotConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *slotConn) Close() error {
	c.once.Do(func() {
		c.s.untrack(c)
		<-c.s.slots
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the client's connection when the upstream is done
// sending (a Unix socket can).
func (c *slotConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}
