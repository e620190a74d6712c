package egressforward

import (
	"bufio"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// ioBound keeps a test that fails from hanging: no test waits for it unless
// the behaviour under test is broken.
const ioBound = 20 * time.Second

// listenUnix serves handle on each connection to a new Unix socket, the
// egress proxy's stand-in, until the test ends.
func listenUnix(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "egress.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return path
}

// answerAfterEOF reads the whole request, up to the client's half-close, and
// only then answers: a proxy that saw no half-close would never answer.
func answerAfterEOF(c net.Conn) {
	got, err := io.ReadAll(c)
	if err != nil {
		return
	}
	_, _ = c.Write(append([]byte("got: "), got...))
}

// serve starts Serve on a loopback port and returns its address.
func serve(t *testing.T, socket string, maxConns int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go Serve(l, socket, maxConns)
	return l.Addr().String()
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioBound))
	return c.(*net.TCPConn)
}

func TestForwardCarriesBothWaysWithHalfClose(t *testing.T) {
	addr := serve(t, listenUnix(t, answerAfterEOF), 4)
	c := dial(t, addr)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// The client's half-close must reach the socket as its end of input,
	// and the answer written after it must still come back, up to the
	// socket's own close.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, got)
	}
	if string(got) != "got: hello" {
		t.Fatalf("answer = %q, want %q", got, "got: hello")
	}
}

func TestAMissingSocketClosesTheConnection(t *testing.T) {
	addr := serve(t, filepath.Join(t.TempDir(), "absent.sock"), 4)
	c := dial(t, addr)
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("Read with no socket behind the forwarder = %d, %v; want the connection closed", n, err)
	}
}

func TestConnectionsBeyondTheBoundAreClosed(t *testing.T) {
	accepted := make(chan struct{}, 1)
	socket := listenUnix(t, func(c net.Conn) {
		accepted <- struct{}{}
		echoLines(c)
	})
	addr := serve(t, socket, 1)
	first := dial(t, addr)
	<-accepted // the first connection holds the only slot

	second := dial(t, addr)
	if n, err := second.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("Read on a connection beyond the bound = %d, %v; want it closed", n, err)
	}
	if got := roundTrip(t, first, "still carried"); got != "still carried" {
		t.Fatalf("the first connection answered %q after the second was refused", got)
	}
}

// echoLines sends back each line it reads.
func echoLines(c net.Conn) {
	s := bufio.NewScanner(c)
	for s.Scan() {
		if _, err := c.Write(append(s.Bytes(), '\n')); err != nil {
			return
		}
	}
}

// roundTrip writes line to c and returns the line that comes back.
func roundTrip(t *testing.T, c net.Conn, line string) string {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading back %q: %v", line, err)
	}
	return got[:len(got)-1]
}

// isTimeout tells a read that hit ioBound (the connection was left open)
// from one that saw the connection closed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
