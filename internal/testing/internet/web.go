package internet

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
)

// site is a name the internet knows: its addresses, and when it is served,
// its handler and certificate.
type site struct {
	addrs   []netip.Addr
	handler http.Handler
	cert    *tls.Certificate
	// conns counts the TCP connections its address accepted, on either
	// port, whether or not a request followed.
	conns atomic.Int64
}

// webServer is HTTPS on port 443 and HTTP on port 80 of every address of
// the namespace, one server for every site, as a shared host or a CDN is.
// A request goes to the site its Host header names, else to the site whose
// address it came to; a TLS handshake gets the certificate of the name it
// asks for (SNI), else that address's site's.
type webServer struct {
	https, http *http.Server
}

func (n *Internet) startWeb(tlsListener, plainListener net.Listener) *webServer {
	quiet := log.New(io.Discard, "", 0) // handshakes that clients under test abort on purpose
	w := &webServer{
		https: &http.Server{Handler: http.HandlerFunc(n.route), ErrorLog: quiet,
			TLSConfig: &tls.Config{GetCertificate: n.certificate, MinVersion: tls.VersionTLS12}},
		http: &http.Server{Handler: http.HandlerFunc(n.route), ErrorLog: quiet},
	}
	go func() { _ = w.https.ServeTLS(countingListener{tlsListener, n}, "", "") }()
	go func() { _ = w.http.Serve(countingListener{plainListener, n}) }()
	return w
}

func (w *webServer) close() error {
	// Close closes the listeners and every connection but those handed
	// over (none here): nothing stays open in the namespace.
	if err := w.https.Close(); err != nil {
		return err
	}
	return w.http.Close()
}

func (n *Internet) route(w http.ResponseWriter, r *http.Request) {
	s := n.site(hostOnly(r.Host))
	if s == nil || s.handler == nil {
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			s = n.siteAt(a)
		}
	}
	if s == nil || s.handler == nil {
		http.Error(w, fmt.Sprintf("the simulated internet serves no site %q here", r.Host), http.StatusMisdirectedRequest)
		return
	}
	s.handler.ServeHTTP(w, r)
}

func (n *Internet) certificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := n.site(h.ServerName)
	if s == nil || s.cert == nil {
		s = n.siteAt(h.Conn.LocalAddr())
	}
	if s == nil || s.cert == nil {
		return nil, fmt.Errorf("no site for the server name %q at %s", h.ServerName, h.Conn.LocalAddr())
	}
	return s.cert, nil
}

// hostOnly is a Host header's name, without its port, in lower case.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	return strings.ToLower(hostport)
}

// countingListener counts each connection against the site whose address
// it came to.
type countingListener struct {
	net.Listener
	n *Internet
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if s := l.n.siteAt(c.LocalAddr()); s != nil {
			s.conns.Add(1)
		}
	}
	return c, err
}
