// Package intercept is the part of the egress proxy that terminates TLS for
// the hosts a run has a credential for, so the host can add the credential
// to the run's requests and the agent never holds it. Every other host is
// tunnelled untouched by package egress.
//
// A run gets its own certificate authority, made in memory when the run is
// served and dropped with it; the container trusts only its certificate.
// The authority is name-constrained to the run's credentialed names, so
// even a leaked key signs nothing a TLS client would accept for any other
// name.
package intercept

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
)

// clockSkew is how far before now certificates are valid from: the
// container shares the host's clock, but a client may round.
const clockSkew = time.Minute

// Authority is one run's certificate authority.
type Authority struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	pem   []byte
	names []string

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// NewAuthority makes a run's authority for names (exact host names, no
// wildcards), valid for validity from now: the run's deadline, so nothing
// it signs outlives the run.
func NewAuthority(names []string, validity time.Duration) (*Authority, error) {
	if len(names) == 0 {
		return nil, errors.New("an authority needs at least one name")
	}
	for _, n := range names {
		if err := egress.ValidName(n); err != nil {
			return nil, fmt.Errorf("credentialed name %q: %w", n, err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "agentrun run CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		// A permitted name covers the name and the names below it
		// (RFC 5280 4.2.1.10); the leaves are minted only for the names
		// themselves.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         slices.Clone(names),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{
		cert: cert, key: key, names: slices.Clone(names),
		pem:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		leaves: map[string]*tls.Certificate{},
	}, nil
}

// CertPEM is the authority's certificate, for the container to trust.
func (a *Authority) CertPEM() []byte { return slices.Clone(a.pem) }

// Leaf is the certificate the proxy shows for name, minted once.
func (a *Authority) Leaf(name string) (*tls.Certificate, error) {
	if !slices.Contains(a.names, name) {
		return nil, fmt.Errorf("%q has no credential in this run", name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.leaves[name]; ok {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    a.cert.NotBefore,
		NotAfter:     a.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	a.leaves[name] = c
	return c, nil
}

// ServerConfig is the TLS configuration the proxy terminates a
// credentialed name's connections with: the leaf for the hello's server
// name, and nothing for any other; HTTP/1.1 only (ALPN), which the
// injector's server speaks.
func (a *Authority) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.Leaf(h.ServerName)
		},
	}
}

// serial is a random 128-bit serial number, as the CA/Browser Forum asks
// (at least 64 bits of randomness).
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
