// Package egressforward is the forwarder that runs inside a run's container:
// the container has no network but loopback (Podman's network mode none), and
// the forwarder carries each TCP connection made to it on 127.0.0.1 to the
// host's egress proxy, through a Unix socket mounted into the container. The
// agent's tools reach it as their HTTP(S) proxy. Killing it leaves the run
// with no network at all: closed, never open.
//
// It runs in every run's container, so it is kept to the standard library
// (make lint-imports holds it to that) and stays a small static binary,
// cmd/agentrun-forward.
package egressforward

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds the wait for the proxy's socket to accept: a proxy that
// does not answer fails the connection instead of holding it open.
const dialTimeout = 10 * time.Second

// acceptRetry is the pause after a failed Accept (out of file descriptors,
// say) before the next: the forwarder keeps serving once the cause passes,
// since its exit would take the run's network with it.
const acceptRetry = 50 * time.Millisecond

// Serve accepts connections on l and carries each to the Unix socket at
// socket, at most maxConns at once: a connection beyond them is closed at
// once, as is one whose socket cannot be reached. It returns when l is
// closed. Nothing of what passes is looked at or logged.
func Serve(l net.Listener, socket string, maxConns int) {
	slots := make(chan struct{}, maxConns)
	for {
		conn, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(acceptRetry)
			continue
		}
		select {
		case slots <- struct{}{}:
			go func() {
				defer func() { <-slots }()
				forward(conn, socket)
			}()
		default:
			// Refused rather than queued: the client sees the bound at
			// once, as it would the proxy's own per-run bound.
			_ = conn.Close()
		}
	}
}

// forward carries one connection to a new connection on the socket, both ways
// at once, until both directions have ended.
func forward(client net.Conn, socket string) {
	upstream, err := net.DialTimeout("unix", socket, dialTimeout)
	if err != nil {
		// No proxy, no network: the client sees its connection closed.
		_ = client.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(upstream, client) }()
	go func() { defer wg.Done(); pipe(client, upstream) }()
	wg.Wait()
	_ = client.Close()
	_ = upstream.Close()
}

// halfCloser is a connection whose sending side can be closed alone (TCP
// and Unix stream sockets).
type halfCloser interface {
	CloseWrite() error
}

// pipe copies src to dst. When src ends cleanly, only dst's sending side is
// closed, so that the other direction carries on: a client that has sent its
// whole request (and shut down its side) still gets the answer. When a copy
// fails, both connections are closed, so that the other direction cannot hang.
func pipe(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if hc, ok := dst.(halfCloser); ok {
		_ = hc.CloseWrite()
		return
	}
	_ = dst.Close()
}
