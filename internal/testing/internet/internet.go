// Package internet simulates the internet for tests, for real, on a machine
// that has none: a network namespace of its own joined to the machine by a
// veth pair, with addresses in 198.18.0.0/15, and in it a DNS server (UDP
// and TCP) and HTTPS and HTTP servers for the names a test registers, with
// certificates from a test CA the test hands to whatever must trust them
// (the egress proxy, a container's trust store, git, curl). The machine
// reaches it as it would reach a remote network: by address, through the
// veth; a container reaches it only through what the machine forwards.
//
//	n := internet.Start(t) // skips unless root
//	n.Serve("allowed.test", handler)
//	n.Serve("api.anthropic.com", messagesAPIStandIn)
//	n.Resolve("loopback.test", netip.MustParseAddr("127.0.0.1"))
//	proxy := egress.New(egress.Config{Resolver: n.Resolver()})
//	// or point a resolver setting at n.DNSAddr(); trust n.CAPEM()
//	...
//	if q := n.Queries(); len(q) > 0 { t.Errorf("DNS queries: %v", q) }
//
// Every internet has its own namespace (arinet-N), link (arinetN) and /24
// (198.18.x.0/24), claimed so that tests in parallel and a local fleet never
// share one; t.Cleanup closes its servers and removes the namespace and
// the link, also when the test fails. The namespace and the link are made
// by hack/netns.sh, as the local fleet's hosts are.
package internet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/testing/internet/dnsserver"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// Internet is one simulated internet, made by Start.
type Internet struct {
	t      testing.TB
	ns     netns
	ca     *testenv.CA
	caFile string
	dns    *dnsserver.Server
	web    *webServer

	mu    sync.Mutex
	sites map[string]*site
	next  byte // the last byte of the next site's address
}

// Start makes an internet for t, which its cleanup removes. It skips t when
// not run as root, which making a namespace needs.
func Start(t testing.TB) *Internet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("internet: the simulated internet needs root (a network namespace and a veth pair); make test runs as root")
	}
	ca, err := testenv.NewCA("agentrun test internet CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "internet-ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ns, err := claim()
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, run last: after the servers' cleanup below has
	// closed every socket that holds the namespace.
	t.Cleanup(func() {
		if err := ns.remove(); err != nil {
			t.Errorf("internet: removing %s: %v", ns.name, err)
		}
	})
	if err := ns.link(); err != nil {
		t.Fatal(err)
	}
	n := &Internet{t: t, ns: ns, ca: ca, caFile: caFile, sites: map[string]*site{}, next: 10}
	if err := n.startServers(); err != nil {
		t.Fatal(err)
	}
	return n
}

// startServers makes the servers' sockets in the namespace and serves
// them; the cleanup closes them.
func (n *Internet) startServers() error {
	var udp net.PacketConn
	var tcp, tlsL, plain net.Listener
	dns := netip.AddrPortFrom(n.ns.innerAddr(), 53).String()
	err := n.ns.do(func() (err error) {
		var errs []error
		udp, err = net.ListenPacket("udp4", dns)
		errs = append(errs, err)
		tcp, err = net.Listen("tcp4", dns)
		errs = append(errs, err)
		// Every address of the namespace, those of sites added later too.
		tlsL, err = net.Listen("tcp4", "0.0.0.0:443")
		errs = append(errs, err)
		plain, err = net.Listen("tcp4", "0.0.0.0:80")
		errs = append(errs, err)
		return errors.Join(errs...)
	})
	if err != nil {
		for _, c := range []interface{ Close() error }{udp, tcp, tlsL, plain} {
			if c != nil {
				_ = c.Close()
			}
		}
		return err
	}
	n.dns = dnsserver.Serve(udp, tcp, n.lookup)
	n.web = n.startWeb(tlsL, plain)
	n.t.Cleanup(func() {
		if err := errors.Join(n.web.close(), n.dns.Close()); err != nil {
			n.t.Errorf("internet: closing the servers: %v", err)
		}
	})
	return nil
}

// Serve makes name a site: an address of its own in the internet (which it
// returns), the DNS server's A record for it, and h serving it over HTTPS
// on port 443, with a certificate for name from the internet's CA, and
// over plain HTTP on port 80. Any name can be a site, a real one
// (api.anthropic.com for a Messages API stand-in) as well as one under
// .test. A name is served once.
func (n *Internet) Serve(name string, h http.Handler) netip.Addr {
	n.t.Helper()
	name = strings.ToLower(name)
	cert, err := n.ca.IssueTLS(name, name)
	if err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	if _, ok := n.sites[name]; ok {
		n.mu.Unlock()
		n.t.Fatalf("internet: %s is already registered", name)
	}
	if n.next == 255 {
		n.mu.Unlock()
		n.t.Fatalf("internet: no address left for %s in %s", name, n.ns.prefix)
	}
	addr := n.ns.host(n.next)
	n.next++
	n.mu.Unlock()
	if err := n.ns.addAddress(addr); err != nil {
		n.t.Fatal(err)
	}
	n.add(name, &site{addrs: []netip.Addr{addr}, handler: h, cert: &cert})
	return addr
}

// Resolve makes the DNS server answer name with addrs (A records for the
// IPv4 ones, AAAA for the IPv6 ones), wherever they are: a name that
// points at the machine's loopback, the cloud metadata address, a site's
// address. Nothing is served for it. With no addrs the name exists with no
// record: an empty answer, not NXDOMAIN.
func (n *Internet) Resolve(name string, addrs ...netip.Addr) {
	n.t.Helper()
	name = strings.ToLower(name)
	n.mu.Lock()
	_, ok := n.sites[name]
	n.mu.Unlock()
	if ok {
		n.t.Fatalf("internet: %s is already registered", name)
	}
	n.add(name, &site{addrs: addrs})
}

func (n *Internet) add(name string, s *site) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sites[name] = s
}

func (n *Internet) site(name string) *site {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sites[strings.ToLower(name)]
}

// siteAt is the served site whose address a is, nil when none is.
func (n *Internet) siteAt(a net.Addr) *site {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.sites {
		if s.handler != nil && s.addrs[0] == ap.Addr().Unmap() {
			return s
		}
	}
	return nil
}

func (n *Internet) lookup(name string) ([]netip.Addr, bool) {
	s := n.site(name)
	if s == nil {
		return nil, false
	}
	return s.addrs, true
}

// Addr is name's address: a site's own, or the first that Resolve gave it.
// It fails the test when name is not registered.
func (n *Internet) Addr(name string) netip.Addr {
	n.t.Helper()
	s := n.site(name)
	if s == nil || len(s.addrs) == 0 {
		n.t.Fatalf("internet: %s is not registered", name)
	}
	return s.addrs[0]
}

// Connections is how many TCP connections the site's address has accepted,
// on either port, whether or not a request followed: zero says nothing
// reached it.
func (n *Internet) Connections(name string) int {
	n.t.Helper()
	s := n.site(name)
	if s == nil || s.handler == nil {
		n.t.Fatalf("internet: %s is not a site", name)
	}
	return int(s.conns.Load())
}

// DNSAddr is the DNS server's address (UDP and TCP), for a resolver setting
// of the host under test.
func (n *Internet) DNSAddr() netip.AddrPort { return netip.AddrPortFrom(n.ns.innerAddr(), 53) }

// Resolver looks names up with the internet's DNS server alone, over the
// network Go's resolver picks (UDP, TCP after a truncated answer), e.g.
// for egress.Config.Resolver. /etc/hosts is read first, as always.
func (n *Internet) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, n.DNSAddr().String())
	}}
}

// Queries are the messages the DNS server has received, in order: a test
// that nothing may have asked asserts that there are none.
func (n *Internet) Queries() []Query { return n.dns.Queries() }

// Query is one message the DNS server received.
type Query = dnsserver.Query

// CAPEM is the CA's certificate, PEM-encoded, for a trust store.
func (n *Internet) CAPEM() []byte { return n.ca.CertPEM }

// CAFile is the path of a file holding CAPEM (curl --cacert,
// GIT_SSL_CAINFO, a mount into a container).
func (n *Internet) CAFile() string { return n.caFile }

// CertPool is a pool holding the CA alone.
func (n *Internet) CertPool() *x509.CertPool { return n.ca.Pool() }

// Client is an HTTP client on the machine, with no proxy, that looks names
// up with Resolver and trusts the CA alone.
func (n *Internet) Client() *http.Client {
	d := &net.Dialer{Resolver: n.Resolver(), Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: n.CertPool()},
	}}
}

// Netns is the namespace's name, as ip netns lists it.
func (n *Internet) Netns() string { return n.ns.name }

// NetnsPath is the namespace's path, for nsenter --net.
func (n *Internet) NetnsPath() string { return n.ns.path() }

// Link is the name of the machine's side of the veth pair.
func (n *Internet) Link() string { return n.ns.veth }

// Prefix is the internet's /24: the machine's side of the link is its .1,
// the DNS server .2, the sites from .10.
func (n *Internet) Prefix() netip.Prefix { return n.ns.prefix }
