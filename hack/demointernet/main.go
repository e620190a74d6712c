// Command demointernet is the local stack's stand-in for the internet, which
// the machine may not have (hack/local-stack.sh starts it for the single
// host, in a network namespace of its own on 198.18.0.0/15, and points the
// host's egress proxy at it): a DNS server that answers each NAME with
// ADDR, and an HTTP server on ADDR:80 that answers every request with
// "hello from HOST". A run that may reach example.com fetches that page
// through its proxy; one that may not is refused by the proxy before any
// lookup.
//
// With --ca-file, it also serves HTTPS on ADDR:443, with certificates from
// a CA it makes at start and writes to that file (the host's proxy trusts
// it: host.egress.upstreamCAFile), and answers every request there with
// the Authorization header it received: the stand-in for a service a run
// holds a credential for, which the demo shows the proxy added.
//
//	demointernet --addr 198.18.77.2 --ca-file ca.pem example.com example.org api.github.com
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agentrun/agentrun/internal/intercept"
	"github.com/agentrun/agentrun/internal/testing/internet/dnsserver"
)

func main() {
	addr := flag.String("addr", "", "the address to serve on: DNS on port 53 (UDP and TCP), HTTP on port 80")
	caFile := flag.String("ca-file", "", "serve HTTPS on port 443 too, and write its CA's certificate here")
	flag.Parse()
	a, err := netip.ParseAddr(*addr)
	if err != nil || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: demointernet --addr ADDR [--ca-file FILE] NAME...")
		os.Exit(2)
	}
	if err := serve(a, *caFile, flag.Args()); err != nil {
		log.Fatal(err)
	}
}

// serve serves the names until SIGTERM or SIGINT.
func serve(addr netip.Addr, caFile string, names []string) error {
	dns := netip.AddrPortFrom(addr, 53).String()
	udp, err := net.ListenPacket("udp", dns)
	if err != nil {
		return err
	}
	tcp, err := net.Listen("tcp", dns)
	if err != nil {
		return errors.Join(err, udp.Close())
	}
	dnsServer := dnsserver.Serve(udp, tcp, func(name string) ([]netip.Addr, bool) {
		if slices.Contains(names, name) {
			return []netip.Addr{addr}, true
		}
		return nil, false
	})
	web := &http.Server{
		Addr:              netip.AddrPortFrom(addr, 80).String(),
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = fmt.Fprintf(w, "hello from %s (the local stack's stand-in for the internet)\n", strings.ToLower(r.Host))
		}),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 2)
	// HTTPS first: the CA's file is written once the HTTP server answers,
	// which is what the local stack waits for.
	secure, err := serveTLS(addr, caFile, names, errc)
	if err != nil {
		return errors.Join(err, dnsServer.Close())
	}
	go func() { errc <- web.ListenAndServe() }()
	served := "DNS on port 53, HTTP on port 80"
	if secure != nil {
		served += ", HTTPS on port 443"
	}
	log.Printf("demointernet: %s answers for %s (%s)", addr, strings.Join(names, ", "), served)
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	err = errors.Join(err, web.Close())
	if secure != nil {
		err = errors.Join(err, secure.Close())
	}
	return errors.Join(err, dnsServer.Close())
}

// caValidity is how long the stand-in's certificates are valid: longer
// than a local stack is up.
const caValidity = 365 * 24 * time.Hour

// serveTLS serves HTTPS for the names on addr:443 when caFile is set, with
// a CA made now whose certificate it writes there, and answers each request
// with the Authorization header it carried; its end goes to errc.
func serveTLS(addr netip.Addr, caFile string, names []string, errc chan<- error) (*http.Server, error) {
	if caFile == "" {
		return nil, nil
	}
	// The authority the proxy makes for a run's credentialed names serves
	// here too: a CA constrained to the stand-in's names, with a leaf for
	// each.
	ca, err := intercept.NewAuthority(names, caValidity)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	secure := &http.Server{
		Addr:              netip.AddrPortFrom(addr, 443).String(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         ca.ServerConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got := cmp.Or(r.Header.Get("Authorization"), "(none)")
			_, _ = fmt.Fprintf(w, "hello from %s over HTTPS; the request's Authorization: %s\n", strings.ToLower(r.Host), got)
		}),
	}
	go func() { errc <- secure.ListenAndServeTLS("", "") }()
	return secure, nil
}
