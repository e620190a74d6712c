package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"

	"github.com/agentrun/agentrun/internal/netguard"
)

// The classes of failed deliveries.
const (
	ClassNotAllowed = "destination not allowed"
	ClassTimeout    = "timeout"
	ClassRefused    = "connection refused"
	ClassTLS        = "TLS error"
	ClassNoSuchName = "name not resolved"
	ClassBadURL     = "invalid URL"
	ClassOther      = "connection failed"
)

// Failure is a failed delivery. Its text is its class only: Go's error
// text names the URL, tokens in its query included, and tells the ways a
// connection fails apart (a closed port from a filtered one, an SSH server
// from an HTTP one), which would make callbacks a scanner of whatever the
// host reaches. The run's author sees the class; the host's log the detail.
type Failure struct {
	// Class is one of the Class constants, or "HTTP status N".
	Class string
	err   error
}

func (f *Failure) Error() string { return f.Class }

// Detail is the cause, without the URL, for the host's log.
func (f *Failure) Detail() string {
	if f.err == nil {
		return f.Class
	}
	return f.err.Error()
}

// fail classifies a delivery that got the answer code (0: none) or err.
func fail(code int, err error) *Failure {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err // the rest is the method and the URL
	}
	return &Failure{Class: classify(code, err), err: err}
}

// classify names the class of a failed delivery.
func classify(code int, err error) string {
	var (
		dnsErr   *net.DNSError
		netErr   net.Error
		certErr  *tls.CertificateVerificationError
		alertErr tls.AlertError
		headErr  tls.RecordHeaderError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
	)
	switch {
	case code != 0:
		return fmt.Sprintf("HTTP status %d", code)
	case errors.Is(err, netguard.ErrNotAllowed):
		return ClassNotAllowed
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return ClassTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.As(err, &certErr) || errors.As(err, &alertErr) || errors.As(err, &headErr) ||
		errors.As(err, &authErr) || errors.As(err, &hostErr):
		return ClassTLS
	case errors.As(err, &dnsErr):
		return ClassNoSuchName
	}
	return ClassOther
}

// Origin is what status, events and logs may show of a callback's URL: its
// scheme and host. Webhook URLs keep their token in the user information,
// the query (?token=), or the path (Slack's and Discord's), so none of these
// is shown.
func Origin(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "the notify URL"
	}
	return u.Scheme + "://" + u.Host
}
