// Package netguard says which addresses the host's own outbound connections
// may reach: the completion callbacks it sends and the egress proxy it runs
// for its runs. Both go where a run's author chooses, from the host's
// network, past any firewall on the containers' network.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrNotAllowed is what a dial to a refused address fails with.
var ErrNotAllowed = errors.New("destination not allowed")

// sharedAddressSpace is carrier-grade NAT's range (RFC 6598), which overlay
// networks such as Tailscale use for private hosts: netip does not count it
// as private.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// Destinations says where the host may connect for a run. A run's author
// chooses the name, and the host connects from its own network: without
// this check a connection reaches the host's loopback services, the cloud's
// metadata address and the private network, and how each try fails tells
// an open port from a closed one.
type Destinations struct {
	// Allowed are the ranges that may be reached although they are
	// loopback, link-local, private or the host's own
	// (--notify-allowed-cidrs; a local stack allows loopback).
	Allowed []netip.Prefix
	// ownAddresses lists the host's addresses; nil: its interfaces'.
	ownAddresses func() ([]netip.Addr, error)
}

// Check tells whether ip may be reached, and if not why.
func (d Destinations) Check(ip netip.Addr) error {
	ip = ip.Unmap()
	for _, p := range d.Allowed {
		if p.Contains(ip) {
			return nil
		}
	}
	// Not global unicast: loopback, link-local (169.254.0.0/16 holds the
	// clouds' metadata services, fe80::/10), multicast, and the unspecified
	// address, which a dial sends to the host itself.
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || sharedAddressSpace.Contains(ip) {
		return fmt.Errorf("%w: %s is not a public address", ErrNotAllowed, ip)
	}
	own, err := d.hostAddresses()
	if err != nil {
		return fmt.Errorf("%w: the host's own addresses are unknown: %v", ErrNotAllowed, err)
	}
	for _, a := range own {
		if a == ip {
			return fmt.Errorf("%w: %s is the host's own address", ErrNotAllowed, ip)
		}
	}
	return nil
}

func (d Destinations) hostAddresses() ([]netip.Addr, error) {
	if d.ownAddresses != nil {
		return d.ownAddresses()
	}
	return interfaceAddresses()
}

// interfaceAddresses are the addresses of the host's network interfaces,
// read at each dial: they change (DHCP, VPNs) while the host runs.
func interfaceAddresses() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	own := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own = append(own, p.Addr().Unmap())
		}
	}
	return own, nil
}

// Control is a net.Dialer's Control: it sees the address actually dialled,
// after name resolution, for every connection, redirects and retries
// included, so a name that resolves to a public address when checked and to
// a private one when dialled (DNS rebinding) is refused too.
func (d Destinations) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotAllowed, err)
	}
	return d.Check(ap.Addr())
}
