// Package egressgatetest holds what tests of a host's egress gate share: a
// client that reaches the network as a proxied run's container does.
package egressgatetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
)

// RunClient is a client as a run's container has one: every request through
// the run's egress socket (CONNECT for HTTPS, as the forwarder passes it
// on), trusting only the CAs of the run's bundle (the files the gate writes
// in the run's directory; this package does not import the gate, so that
// the gate's own tests can use it). It keeps no connections, so each
// request is a new one, as a new process of a tool makes.
func RunClient(t testing.TB, bundleFile, socket string) *http.Client {
	t.Helper()
	bundle, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("the run's bundle holds no certificate")
	}
	return &http.Client{Transport: &http.Transport{
		// The proxy's URL names no host: every connection is the run's socket.
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: "egress"}),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
}
