// Package notify delivers a finished run's completion callback: an HTTP POST
// of its final status, signed with HMAC-SHA256 so that the receiver can tell
// it came from a host that holds the key.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/agentrun/agentrun/internal/netguard"
)

// The headers of a callback.
const (
	// HeaderTimestamp is the time of the delivery, in Unix seconds: part of
	// what is signed, so a receiver can refuse old callbacks replayed.
	HeaderTimestamp = "X-Agentrun-Timestamp"
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed with the
	// run's notify secret, of the timestamp, ".", and the body.
	HeaderSignature = "X-Agentrun-Signature"
)

// NewClient is the HTTP client for callbacks, which connects only where to
// allows. It follows no redirect: the URL was validated, a redirect's target
// was not (an https receiver could send the run's status on to plain http).
// It uses no proxy from the environment: a proxy would make the connection
// the check sees the proxy's, and the destination the proxy's to reach.
// timeout bounds each delivery, answer included.
func NewClient(to netguard.Destinations, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, Control: to.Control}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			TLSHandshakeTimeout: timeout,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        16,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Sign returns the HeaderSignature value of a body sent at timestamp.
func Sign(key []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Deliver POSTs body (JSON) to url, signed with key at time now. It returns
// the receiver's status code, and a *Failure unless it was 2xx.
func Deliver(ctx context.Context, client *http.Client, url string, key, body []byte, now time.Time) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, &Failure{Class: ClassBadURL}
	}
	timestamp := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "agentrun")
	req.Header.Set(HeaderTimestamp, timestamp)
	req.Header.Set(HeaderSignature, Sign(key, timestamp, body))
	resp, err := client.Do(req)
	if err != nil {
		return 0, fail(0, err)
	}
	defer resp.Body.Close()
	// Read a little of the answer so the connection can be reused; the
	// rest is not ours to keep.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fail(resp.StatusCode, nil)
	}
	return resp.StatusCode, nil
}
