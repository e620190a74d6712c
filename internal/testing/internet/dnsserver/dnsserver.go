// Package dnsserver is the simulated internet's DNS server
// (internal/testing/internet), in a package of its own so that a stand-in
// outside the tests (the local stack's, hack/demointernet) serves names
// without the tests' harness.
package dnsserver

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Query is one message the DNS server received.
type Query struct {
	// Network is "udp" or "tcp".
	Network string
	// Name is the name asked for, in lower case without the final dot; ""
	// when the message held no question it could read.
	Name string
	// Type is the record type asked for: "A", "AAAA", ...
	Type string
}

// Server answers A and AAAA questions for the names its lookup knows,
// NXDOMAIN for the others, over UDP and TCP, and records every message it
// receives, readable or not.
type Server struct {
	lookup func(name string) ([]netip.Addr, bool)
	udp    net.PacketConn
	tcp    net.Listener

	mu      sync.Mutex
	queries []Query
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// Serve answers the messages that arrive on udp and tcp with lookup's
// addresses until Close.
func Serve(udp net.PacketConn, tcp net.Listener, lookup func(name string) ([]netip.Addr, bool)) *Server {
	d := &Server{lookup: lookup, udp: udp, tcp: tcp}
	d.serve()
	return d
}

func (d *Server) serve() {
	d.conns = map[net.Conn]struct{}{}
	d.wg.Add(2)
	go d.serveUDP()
	go d.serveTCP()
}

func (d *Server) serveUDP() {
	defer d.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := d.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := d.answer("udp", buf[:n]); resp != nil {
			_, _ = d.udp.WriteTo(resp, from)
		}
	}
}

func (d *Server) serveTCP() {
	defer d.wg.Done()
	for {
		c, err := d.tcp.Accept()
		if err != nil {
			return
		}
		if !d.track(c) {
			_ = c.Close()
			return
		}
		d.wg.Add(1)
		go d.serveConn(c)
	}
}

// serveConn answers the messages of one TCP connection, each after its
// two-byte length (RFC 1035 4.2.2), until the client closes it.
func (d *Server) serveConn(c net.Conn) {
	defer d.wg.Done()
	defer d.untrack(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var size [2]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			d.record(Query{Network: "tcp"})
			return
		}
		resp := d.answer("tcp", msg)
		if resp == nil {
			continue
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
			return
		}
	}
}

func (d *Server) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *Server) untrack(c net.Conn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
	_ = c.Close()
}

// answer records the message and returns the answer to it, nil when it is
// no question.
func (d *Server) answer(network string, msg []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		d.record(Query{Network: network})
		return nil
	}
	q, err := p.Question()
	if err != nil || h.Response {
		d.record(Query{Network: network})
		return nil
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	d.record(Query{Network: network, Name: name, Type: strings.TrimPrefix(q.Type.String(), "Type")})
	addrs, known := d.lookup(name)
	// Authoritative, and recursion available: Go's resolver takes an
	// answer with neither for a referral it cannot follow.
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	for _, a := range addrs {
		switch {
		case a.Is4() && q.Type == dnsmessage.TypeA:
			err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case a.Is6() && q.Type == dnsmessage.TypeAAAA:
			err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil
	}
	return resp
}

func (d *Server) record(q Query) {
	d.mu.Lock()
	d.queries = append(d.queries, q)
	d.mu.Unlock()
}

// Queries are the messages received so far, in order.
func (d *Server) Queries() []Query {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Query(nil), d.queries...)
}

// Close closes the sockets and the open TCP connections, and waits for
// the server's goroutines.
func (d *Server) Close() error {
	d.mu.Lock()
	d.closed = true
	for c := range d.conns {
		_ = c.Close()
	}
	d.mu.Unlock()
	err := errors.Join(d.udp.Close(), d.tcp.Close())
	d.wg.Wait()
	return err
}
