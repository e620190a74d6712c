package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/agentrun/agentrun/internal/netguard"
)

// established is the answer to a CONNECT that opens its tunnel.
const established = "HTTP/1.1 200 Connection established\r\n\r\n"

// connect serves a CONNECT: a tunnel to a name on the run's list.
func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "" // no port: refused as such
	}
	name, n, refused := s.target(host, port, 0)
	if refused != nil {
		s.refuse(w, *refused, http.StatusForbidden)
		return
	}
	if n == 443 {
		s.connectTLS(r.Context(), w, name)
		return
	}
	upstream, err := s.proxy.dial(r.Context(), name, n)
	if err != nil {
		s.dialFailed(w, shown(name, n), err)
		return
	}
	defer upstream.Close()
	client, in, ok := hijack(w)
	if !ok {
		return
	}
	defer client.Close()
	s.decide(Attempt{Outcome: Allowed, Target: shown(name, n)}) // counted before the client can see it
	if _, err := io.WriteString(client, established); err != nil {
		return
	}
	s.pipe(client, in, upstream)
}

// connectTLS serves a CONNECT to port 443. It reads the ClientHello before
// it dials, and goes on only if the hello names the CONNECT name: a client
// could otherwise CONNECT to an allowed name and ask, inside TLS, for
// another site that the same address serves (domain fronting). A hello
// without a server name is refused too, since the proxy could not say
// which site it asks for. The refusal comes after the 200, so the client
// sees its connection closed, and the run's counters say why. A name the
// run's terminator serves is handed to it instead of tunnelled.
func (s *Server) connectTLS(ctx context.Context, w http.ResponseWriter, name string) {
	client, in, ok := hijack(w)
	if !ok {
		return
	}
	defer client.Close()
	if _, err := io.WriteString(client, established); err != nil {
		return
	}
	hello, err := readClientHello(client, in, s.proxy.cfg.IdleTimeout)
	if err != nil {
		s.decide(Attempt{Outcome: RefusedName, Target: shown(name, 443), Reason: "no TLS ClientHello"})
		return
	}
	if hello.serverName == "" {
		s.decide(Attempt{Outcome: RefusedName, Target: shown(name, 443), Reason: "no server name in the TLS ClientHello"})
		return
	}
	if sni := lowerASCII(hello.serverName); sni != name {
		s.decide(Attempt{Outcome: RefusedName, Target: shown(sni, 443), Reason: "the TLS server name is not the CONNECT name " + name})
		return
	}
	if s.term != nil && s.term.Terminates(name) {
		s.terminate(ctx, client, in, hello, name)
		return
	}
	upstream, err := s.proxy.dial(ctx, name, 443)
	if err != nil {
		if errors.Is(err, netguard.ErrNotAllowed) {
			s.decide(refusedAddress(shown(name, 443)))
		}
		return
	}
	defer upstream.Close()
	if _, err := upstream.Write(hello.bytes); err != nil {
		return
	}
	s.decide(Attempt{Outcome: Allowed, Target: shown(name, 443)})
	s.pipe(client, in, upstream)
}

// dialFailed answers a request whose upstream could not be reached.
func (s *Server) dialFailed(w http.ResponseWriter, target string, err error) {
	if errors.Is(err, netguard.ErrNotAllowed) {
		s.refuse(w, refusedAddress(target), http.StatusForbidden)
		return
	}
	// Go's error would name addresses and the host's resolver: the client
	// learns only that the name was not reached.
	http.Error(w, "agentrun egress: "+target+": not reached", http.StatusBadGateway)
}

func refusedAddress(target string) Attempt {
	return Attempt{Outcome: RefusedAddress, Target: target, Reason: "the name leads to an address the host refuses"}
}

// hijack takes the client's connection from net/http, with what net/http
// read from it already.
func hijack(w http.ResponseWriter) (net.Conn, io.Reader, bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "agentrun egress: CONNECT needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return nil, nil, false
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, false
	}
	if n := rw.Reader.Buffered(); n > 0 {
		return c, io.MultiReader(io.LimitReader(rw.Reader, int64(n)), c), true
	}
	return c, c, true
}
