package egressgate

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/intercept"
)

// The files of a run with credentials in its directory, which its
// container sees at /run/agentrun: the run's CA, and the bundle its
// container trusts (SSL_CERT_FILE and its kin name it, and it is mounted at
// the image's system bundle paths).
const (
	CAName       = "ca.pem"
	CABundleName = "ca-bundle.pem"
)

// fileMode lets the container's user, who is not the host's, read the CA
// files; the directory is mounted read-only.
const fileMode fs.FileMode = 0o644

// caValidity is how long a run's CA is valid when its deadline is not
// known; caMargin is how long past its deadline (the run's stop takes a
// grace period).
const (
	caValidity = 24 * time.Hour
	caMargin   = time.Hour
)

// Roots are the CA certificates the host trusts for credentialed upstreams:
// Pool for the proxy's own TLS connections, PEM for the bundle the runs
// with credentials trust beside their own CA.
type Roots struct {
	Pool *x509.CertPool
	PEM  []byte
}

// systemBundles are the files Go reads the system roots from on Linux, in
// its order (crypto/x509's root_linux.go), when SSL_CERT_FILE is not set.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// SystemRoots are the host's system roots and the certificates in
// upstreamCAFile (host.egress.upstreamCAFile; "": none). The pool is Go's
// (crypto/x509.SystemCertPool); the PEM is the file Go reads it from:
// SSL_CERT_FILE when set, else the first of the system bundles that
// exists. Roots Go reads only from a directory (/etc/ssl/certs's single
// files, SSL_CERT_DIR) are trusted by the proxy, not by the runs.
func SystemRoots(upstreamCAFile string) (Roots, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		return Roots{}, fmt.Errorf("the host's system roots: %w", err)
	}
	files := systemBundles
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = []string{f}
	}
	var system []byte
	for _, f := range files {
		if system, err = os.ReadFile(f); err == nil {
			break
		}
	}
	if upstreamCAFile == "" {
		return Roots{Pool: pool, PEM: system}, nil
	}
	extra, err := os.ReadFile(upstreamCAFile)
	if err != nil {
		return Roots{}, fmt.Errorf("host.egress.upstreamCAFile: %w", err)
	}
	if !pool.AppendCertsFromPEM(extra) {
		return Roots{}, fmt.Errorf("host.egress.upstreamCAFile %s holds no PEM certificate", upstreamCAFile)
	}
	return Roots{Pool: pool, PEM: joinPEM(system, extra)}, nil
}

// credentials makes what serves a run's credentials: its CA, whose
// certificate and bundle it writes into the run's directory, and its
// injector.
func (g *Gate) credentials(uid string, run Run) (egress.Terminator, *intercept.Injector, error) {
	names := make([]string, 0, len(run.Credentials))
	for host := range run.Credentials {
		if !run.Policy.Allows(host, 443) {
			return nil, nil, fmt.Errorf("the credential for %s: the host is not on the run's egress list", host)
		}
		names = append(names, host)
	}
	slices.Sort(names)
	until := run.Deadline
	if until.IsZero() {
		until = time.Now().Add(caValidity)
	}
	ca, err := intercept.NewAuthority(names, max(time.Until(until), 0)+caMargin)
	if err != nil {
		return nil, nil, fmt.Errorf("making the run's CA: %w", err)
	}
	in, err := intercept.NewInjector(run.Credentials, g.roots.Pool, g.proxy.Dial, run.Rejected)
	if err != nil {
		return nil, nil, err
	}
	if err := errors.Join(
		g.writeFile(filepath.Join(uid, CAName), ca.CertPEM()),
		g.writeFile(filepath.Join(uid, CABundleName), joinPEM(g.roots.PEM, ca.CertPEM())),
	); err != nil {
		in.Close()
		return nil, nil, fmt.Errorf("writing the run's CA: %w", err)
	}
	return intercept.NewTerminator(ca, in), in, nil
}

// writeFile writes data to rel in place: the container bind-mounts the
// bundle's file, so a file renamed over it would leave the old one
// mounted. A process of the run that reads it while it is rewritten (a
// manager's restart) may see it partly written.
func (g *Gate) writeFile(rel string, data []byte) error {
	f, err := g.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close()); err != nil {
		return err
	}
	// OpenFile's mode passes through the umask, and an old file keeps its
	// own.
	return g.root.Chmod(rel, fileMode)
}

// joinPEM joins PEM files, each ending with a newline.
func joinPEM(files ...[]byte) []byte {
	var out []byte
	for _, f := range files {
		if len(f) == 0 {
			continue
		}
		out = append(out, f...)
		if f[len(f)-1] != '\n' {
			out = append(out, '\n')
		}
	}
	return out
}
