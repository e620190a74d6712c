package logapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// hostClient is an HTTP client for one host's log endpoint: it shows the
// fleet's own client certificate (whose key never leaves the fleet, so a
// host that records what it receives holds nothing it can replay) and
// trusts the host only if the CA the host published (ca) signed its
// certificate. Nothing of the user's reaches the host.
func hostClient(endpoint string, ca []byte, cert tls.Certificate) (*http.Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("its log endpoint %q is not an https:// URL", endpoint)
	}
	if len(ca) == 0 {
		return nil, errors.New("it published no CA for its log endpoint")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("its published log CA holds no PEM certificate")
	}
	return &http.Client{Transport: &http.Transport{
		// No proxy from the environment: the stream goes to the host.
		Proxy:               nil,
		TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		// A host that accepts and never answers does not hold a stream
		// forever; once answered, a follow lasts as long as the run.
		ResponseHeaderTimeout: 30 * time.Second,
	}}, nil
}
