// Command demointernet is the local stack's stand-in for the internet, which
// the machine may not have (hack/local-stack.sh starts it for the single
// host, in a network namespace of its own on 198.18.0.0/15, and points the
// host's egress proxy at it): a DNS server that answers each NAME with
// ADDR, and an HTTP server on ADDR:80 that answers every request with
// "hello from HOST". A run that may reach example.com fetches that page
// through its proxy; one that may not is refused by the proxy before any
// lookup.
//
//	demointernet --addr 198.18.77.2 example.com example.org
package main

import (
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

	"github.com/agentrun/agentrun/internal/testing/internet/dnsserver"
)

func main() {
	addr := flag.String("addr", "", "the address to serve on: DNS on port 53 (UDP and TCP), HTTP on port 80")
	flag.Parse()
	a, err := netip.ParseAddr(*addr)
	if err != nil || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: demointernet --addr ADDR NAME...")
		os.Exit(2)
	}
	if err := serve(a, flag.Args()); err != nil {
		log.Fatal(err)
	}
}

// serve serves the names until SIGTERM or SIGINT.
func serve(addr netip.Addr, names []string) error {
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
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe() }()
	log.Printf("demointernet: %s answers for %s (DNS on port 53, HTTP on port 80)", addr, strings.Join(names, ", "))
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = web.Close()
	}
	return errors.Join(err, dnsServer.Close())
}
