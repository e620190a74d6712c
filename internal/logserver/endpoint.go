package logserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// Endpoint serves a handler over HTTPS until its context ends: a manager
// Runnable, run while the manager leads its host (the leader is the one
// that publishes the endpoint in the PodmanHost).
type Endpoint struct {
	BindAddress string
	Certificate tls.Certificate
	// ClientCAs, when set, are the only CAs whose client certificates the
	// TLS handshake accepts (a host's endpoint: the fleet's CA); without,
	// a client certificate is asked for and left to the handler to check
	// (the fleet's API: the aggregator's front-proxy certificate).
	ClientCAs *x509.CertPool
	Handler   http.Handler
}

// Start serves until ctx ends.
func (e *Endpoint) Start(ctx context.Context) error {
	l, err := net.Listen("tcp", e.BindAddress)
	if err != nil {
		return fmt.Errorf("the log endpoint: %w", err)
	}
	srv := &http.Server{
		Handler:           e.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: a followed run streams for as long as it runs.
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{e.Certificate},
			MinVersion:   tls.VersionTLS12,
			ClientAuth:   tls.RequestClientCert,
		},
	}
	if e.ClientCAs != nil {
		srv.TLSConfig.ClientAuth, srv.TLSConfig.ClientCAs = tls.RequireAndVerifyClientCert, e.ClientCAs
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ServingCertificate loads tls.crt and tls.key from certDir, with the CA
// clients verify it by from ca.crt (tls.crt itself when there is none); with
// no certDir it makes a CA and a certificate it signs for host (an IP address
// or a DNS name), valid for a year, kept in memory: a restart makes new ones
// and publishes the new CA.
func ServingCertificate(certDir, host string) (tls.Certificate, []byte, error) {
	if certDir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
		if err != nil {
			return tls.Certificate{}, nil, err
		}
		ca, err := os.ReadFile(filepath.Join(certDir, "ca.crt"))
		if errors.Is(err, os.ErrNotExist) {
			ca, err = os.ReadFile(filepath.Join(certDir, "tls.crt"))
		}
		return cert, ca, err
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, nil, nil)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	// certutil writes the serving certificate, then the CA that signed it.
	_, rest := pem.Decode(certPEM)
	if block, _ := pem.Decode(rest); block != nil {
		return cert, pem.EncodeToMemory(block), nil
	}
	return cert, certPEM, nil
}

// ReadClientCAs reads the PEM bundle of the CAs that sign the fleet's client
// certificate, the only callers a host's endpoint accepts.
func ReadClientCAs(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
