package notify

import (
	"context"
	"crypto/hmac"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// A receiver's check, as docs/sessions-and-callbacks.md writes it in shell with openssl.
func verify(key []byte, r *http.Request, body []byte) bool {
	want := Sign(key, r.Header.Get(HeaderTimestamp), body)
	return hmac.Equal([]byte(r.Header.Get(HeaderSignature)), []byte(want))
}

func TestDeliverSignsWhatItSends(t *testing.T) {
	key := []byte("the-signing-key")
	body := []byte(`{"name":"review-prs","status":{"phase":"Succeeded"}}`)
	now := time.Unix(1_796_000_000, 0)
	var got struct {
		verified, wrongKey bool
		timestamp, typ     string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.verified, got.wrongKey = verify(key, r, b), verify([]byte("another-key"), r, b)
		got.timestamp, got.typ = r.Header.Get(HeaderTimestamp), r.Header.Get("Content-Type")
	}))
	defer srv.Close()

	code, err := Deliver(context.Background(), srv.Client(), srv.URL, key, body, now)
	if err != nil || code != http.StatusOK {
		t.Fatalf("Deliver = %d, %v", code, err)
	}
	if !got.verified || got.wrongKey {
		t.Errorf("verified with the key: %v, with another key: %v", got.verified, got.wrongKey)
	}
	if got.timestamp != strconv.FormatInt(now.Unix(), 10) || got.typ != "application/json" {
		t.Errorf("timestamp %q, content type %q", got.timestamp, got.typ)
	}
}

func TestSignatureIsWhatOpenSSLComputes(t *testing.T) {
	// printf '1796000000.{}' | openssl dgst -sha256 -hmac key
	const openssl = "be3030cc046098539614b2d7d21d07b1a0ed0e21b158fd1f25969485b8f6f747"
	if got := Sign([]byte("key"), "1796000000", []byte("{}")); got != "sha256="+openssl {
		t.Errorf("signature %q, want sha256=%s", got, openssl)
	}
}

func TestDeliverFollowsNoRedirect(t *testing.T) {
	followed := false
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed = true }))
	defer target.Close()
	srv := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer srv.Close()
	code, err := Deliver(context.Background(), NewClient(allowLoopback, time.Minute), srv.URL, []byte("k"), []byte("{}"), time.Now())
	if followed || err == nil || code != http.StatusTemporaryRedirect {
		t.Errorf("Deliver = %d, %v, redirect followed: %v; want the redirect refused as an answer", code, err, followed)
	}
}

func TestDeliverReportsARefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	code, err := Deliver(context.Background(), srv.Client(), srv.URL, []byte("k"), []byte("{}"), time.Now())
	if code != http.StatusServiceUnavailable || err == nil {
		t.Errorf("Deliver = %d, %v; want 503 and an error", code, err)
	}
}
