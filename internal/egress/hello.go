package egress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// clientHello is what a client sent first in a tunnel to port 443.
type clientHello struct {
	// serverName is the hello's SNI, "" when it has none.
	serverName string
	// bytes are all that was read from the client, to be sent upstream
	// first.
	bytes []byte
}

// errHelloRead stops the handshake once the hello is read.
var errHelloRead = errors.New("client hello read")

// readClientHello reads a TLS ClientHello from in, waiting at most timeout.
// crypto/tls parses it: a handshake as a server over a connection that
// records what it reads and sends nothing back, stopped by
// GetConfigForClient, which sees the parsed hello before anything is
// answered. Bytes that are not a ClientHello fail the handshake before.
// crypto/tls reads at most one handshake message of 64 KiB, which bounds
// what is kept.
func readClientHello(c net.Conn, in io.Reader, timeout time.Duration) (clientHello, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return clientHello{}, err
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }() // the tunnel sets its own next
	rec := &recordingConn{Conn: c, in: in}
	var (
		hello clientHello
		seen  bool
	)
	cfg := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello.serverName, seen = h.ServerName, true
		return nil, errHelloRead
	}}
	err := tls.Server(rec, cfg).Handshake()
	if !seen {
		return clientHello{}, err
	}
	hello.bytes = rec.read.Bytes()
	return hello, nil
}

// recordingConn reads from in and keeps what it read; what is written to
// it (the handshake's alert when it is stopped) goes nowhere, so the
// client's TLS session is left for the upstream to answer.
type recordingConn struct {
	net.Conn
	in   io.Reader
	read bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.in.Read(p)
	c.read.Write(p[:n])
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) { return len(p), nil }
