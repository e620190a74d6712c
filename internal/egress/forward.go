package egress

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
)

// forwarder is the run's plain-HTTP forwarding: absolute-form requests
// ("GET http://host/path"), each checked against the run's list.
func (s *Server) forwarder() http.Handler {
	s.transport = &http.Transport{
		// Proxy stays nil: a proxy from the manager's environment would
		// take the requests past these checks.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return nil, err
			}
			return s.proxy.dial(ctx, host, uint16(n))
		},
		DisableCompression:  true, // what the client asked for, not gzip it did not
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     s.proxy.cfg.IdleTimeout,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The Host header is the name checked, whatever the client
			// sent in it, without the default port as clients send it;
			// user information in a URL is not forwarded.
			pr.Out.Host = strings.TrimSuffix(pr.Out.URL.Host, ":80")
			pr.Out.URL.User = nil
		},
		Transport: s.transport,
		ModifyResponse: func(r *http.Response) error {
			s.decide(Attempt{Outcome: Allowed, Target: r.Request.URL.Host})
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.dialFailed(w, r.URL.Host, err)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, n, refused := s.target(r.URL.Hostname(), r.URL.Port(), 80)
		if refused != nil {
			s.refuse(w, *refused, http.StatusForbidden)
			return
		}
		// What is dialled, sent as Host and counted is the name checked.
		r.URL.Host = shown(name, n)
		// An upgrade (ws://) would turn the request into a connection
		// that net/http hands over and the server's Close does not see:
		// not forwarded. WebSockets over TLS go through CONNECT.
		r.Header.Del("Upgrade")
		rp.ServeHTTP(w, r)
	})
}
