package notify

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentrun/agentrun/internal/netguard"
)

// allowLoopback is a host that lets callbacks reach its loopback, where
// these tests' receivers listen.
var allowLoopback = netguard.Destinations{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}

// countingListener is a loopback listener that counts the connections it
// accepts, and answers none of them unless serve is set.
func countingListener(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			t.Cleanup(func() { c.Close() }) // a tarpit: holds, never answers
		}
	}()
	return l.Addr().String(), accepted
}

func TestDeliverRefusesTheHostsNetworksWhereverTheNameLeads(t *testing.T) {
	addr, accepted := countingListener(t)
	_, port, _ := net.SplitHostPort(addr)
	client := NewClient(netguard.Destinations{}, time.Minute)
	// localhost is a name that resolves to loopback: the check is on the
	// address dialled, not on the URL.
	for _, url := range []string{"http://" + addr + "/", "http://localhost:" + port + "/", "https://10.0.0.7:22/", "https://[fe80::1]:22/", "http://0.0.0.0:" + port + "/"} {
		_, err := Deliver(context.Background(), client, url, []byte("k"), []byte("{}"), time.Now())
		if err == nil || err.Error() != ClassNotAllowed {
			t.Errorf("%s: %v, want %q", url, err, ClassNotAllowed)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the refused destinations got %d connections", n)
	}
}

func TestDeliverFailuresSayTheirClassOnly(t *testing.T) {
	const token = "tok-q7Zx2vLm9Rw4"
	tarpit, _ := countingListener(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer untrusted.Close()
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }))
	defer busy.Close()

	client := NewClient(allowLoopback, 500*time.Millisecond)
	for url, class := range map[string]string{
		"http://" + tarpit:                    ClassTimeout,
		"http://" + closed.Addr().String():    ClassRefused,
		untrusted.URL:                         ClassTLS,
		busy.URL:                              "HTTP status 503",
		"http://no-such-host.invalid":         ClassNoSuchName,
		"http://user:" + token + "@[::1:bad/": ClassBadURL,
		"https://10.0.0.7:22":                 ClassNotAllowed,
	} {
		_, err := Deliver(context.Background(), client, url+"/hook?token="+token, []byte("k"), []byte("{}"), time.Now())
		if err == nil || err.Error() != class {
			t.Errorf("%s: %v, want %q", url, err, class)
		}
		if f, ok := errors.AsType[*Failure](err); !ok || strings.Contains(f.Detail(), token) {
			t.Errorf("%s: the failure %#v is no *Failure, or its detail names the URL's token", url, err)
		}
	}
}

func TestOriginKeepsNoToken(t *testing.T) {
	const token = "tok-q7Zx2vLm9Rw4"
	for url, want := range map[string]string{
		"https://hooks.example.com/services/T0/B0/" + token:                  "https://hooks.example.com",
		"https://user:" + token + "@hooks.example.com:8443/x?token=" + token: "https://hooks.example.com:8443",
		"http://127.0.0.1:8080/h?sig=" + token + "#" + token:                 "http://127.0.0.1:8080",
		"::not a url " + token: "the notify URL",
	} {
		if got := Origin(url); got != want {
			t.Errorf("Origin(%q) = %q, want %q", url, got, want)
		}
	}
}
