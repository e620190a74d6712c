package intercept

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentrun/agentrun/internal/credential"
	"github.com/agentrun/agentrun/internal/redact"
)

// Credential is what the proxy adds to a credentialed host's requests.
type Credential struct {
	// Header is the header's name; CheckHeader has passed it.
	Header string
	// Format builds the header's value from Value.
	Format credential.Format
	// Value is the secret's value, read from Podman for the run.
	Value string
}

// Injector adds a run's credentials to its requests to credentialed hosts
// and masks them in what comes back.
type Injector struct {
	// headers are each host's header, canonical, and its rendered value.
	headers map[string][2]string
	// values masks every credential's value and rendered header value.
	values    *redact.Redactor
	transport *http.Transport
	// counts are each host's; the map is made once, read without a lock.
	counts   map[string]*counts
	rejected func(host string, status int)
}

// upstreamIdle is how long an upstream connection is kept for reuse.
const upstreamIdle = 90 * time.Second

// Dialer opens the connection to an upstream: the egress proxy's, which
// looks the name up itself and refuses private addresses.
type Dialer func(ctx context.Context, network, address string) (net.Conn, error)

// NewInjector returns the injector of a run's credentials, keyed by host
// name. Upstreams are verified against roots (nil: the system's).
// rejected, when not nil, is told of every 401 or 403 answer of a host, on
// the request's goroutine: it must not block.
func NewInjector(creds map[string]Credential, roots *x509.CertPool, dial Dialer, rejected func(host string, status int)) (*Injector, error) {
	in := &Injector{headers: map[string][2]string{}, counts: map[string]*counts{}, rejected: rejected}
	var secrets []string
	for host, c := range creds {
		if err := credential.CheckHeader(c.Header); err != nil {
			return nil, fmt.Errorf("credential for %s: %w", host, err)
		}
		v, err := c.Format.Render(c.Value)
		if err != nil {
			return nil, fmt.Errorf("credential for %s: %w", host, err)
		}
		in.headers[host] = [2]string{credential.CanonicalHeader(c.Header), v}
		in.counts[host] = &counts{}
		secrets = append(secrets, c.Value, v)
	}
	in.values = redact.New(secrets...)
	in.transport = &http.Transport{
		DialContext:       dial,
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		// Left on: with the agent's Accept-Encoding removed, the
		// transport asks for gzip and decodes it, so bodies are masked as
		// plain text.
		DisableCompression: false,
		// An upstream connection kept for reuse is the run's: it goes
		// when unused, as a tunnel does when idle.
		IdleConnTimeout: upstreamIdle,
	}
	return in, nil
}

// Handler serves the requests the agent sends over a TLS connection the
// proxy terminated for host (the CONNECT name, which the hello's server
// name matched). They go to host whatever their Host header says, so a
// credential reaches only the host it is for.
func (in *Injector) Handler(host string) http.Handler {
	h, ok := in.headers[host]
	if !ok {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no credential for this host", http.StatusMisdirectedRequest)
		})
	}
	n := in.counts[host]
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host, out.Host = "https", host, host
			// Set, not Add: the agent's own header of that name is
			// replaced, not sent beside ours.
			out.Header.Set(h[0], h[1])
			out.Header.Del("Accept-Encoding")
			n.requests.Add(1)
		},
		Transport: in.transport,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
				n.rejected.Add(1)
				if in.rejected != nil {
					in.rejected(host, resp.StatusCode)
				}
			}
			return in.mask(resp)
		},
		ErrorLog: log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			// The error may quote the upstream; never the request's headers.
			http.Error(w, "agentrun egress: "+in.values.Values(err.Error()), http.StatusBadGateway)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A switched protocol would carry bytes the masking never sees.
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "agentrun egress: protocol upgrades to a credentialed host are not supported", http.StatusNotImplemented)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// errEncoded refuses a body in an encoding the proxy did not ask for and
// cannot mask.
var errEncoded = errors.New("the upstream answered in a content encoding the proxy cannot mask")

// mask masks the credentials in a response's headers and body.
func (in *Injector) mask(resp *http.Response) error {
	if e := resp.Header.Get("Content-Encoding"); e != "" && !strings.EqualFold(e, "identity") {
		return errEncoded
	}
	for k, vs := range resp.Header {
		for i, v := range vs {
			vs[i] = in.values.Values(v)
		}
		resp.Header[k] = vs
	}
	// The masked body's length is not known before it is read.
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Body = &maskedBody{src: resp.Body, r: in.values}
	return nil
}

// maskedBody masks a body as it streams: it passes on at once all it read
// but a tail that the bytes still to come could complete into a value,
// so a streamed answer (server-sent events) is not held back.
type maskedBody struct {
	src     io.ReadCloser
	r       *redact.Redactor
	pending string // read, not yet masked
	ready   string // masked, not yet returned
	err     error
	buf     []byte // what src reads into
}

func (b *maskedBody) Read(p []byte) (int, error) {
	for b.ready == "" {
		if b.err != nil {
			if b.pending != "" {
				b.ready, b.pending = b.r.Values(b.pending), ""
				continue
			}
			return 0, b.err
		}
		if b.buf == nil {
			b.buf = make([]byte, 32<<10)
		}
		n, err := b.src.Read(b.buf)
		b.pending += string(b.buf[:n])
		b.err = err
		if err == nil {
			c := b.r.CutValues(b.pending, len(b.pending))
			b.ready, b.pending = b.r.Values(b.pending[:c]), b.pending[c:]
		}
	}
	n := copy(p, b.ready)
	b.ready = b.ready[n:]
	return n, nil
}

func (b *maskedBody) Close() error { return b.src.Close() }

// Counts are how a run's credential for one host was used.
type Counts struct {
	// Requests is how many requests the credential was added to.
	Requests int64
	// Rejected is how many of them the host answered 401 or 403.
	Rejected int64
}

// counts are one host's Counts as they are counted.
type counts struct{ requests, rejected atomic.Int64 }

// Counts are each credentialed host's counts so far, by host.
func (in *Injector) Counts() map[string]Counts {
	all := make(map[string]Counts, len(in.counts))
	for host, n := range in.counts {
		all[host] = Counts{Requests: n.requests.Load(), Rejected: n.rejected.Load()}
	}
	return all
}

// Terminates tells whether the injector has a credential for name.
func (in *Injector) Terminates(name string) bool {
	_, ok := in.headers[name]
	return ok
}

// Close closes the upstream connections kept for reuse; the run's serving
// has ended.
func (in *Injector) Close() { in.transport.CloseIdleConnections() }
