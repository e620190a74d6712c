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

// IPv6 prefixes whose addresses a translator or a relay turns into IPv4
// addresses: what such an address reaches is the IPv4 address inside it.
var (
	// nat64 is NAT64's well-known prefix (RFC 6052): the IPv4 address is
	// the last 32 bits.
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// nat64Local is for a network's own NAT64 (RFC 8215). Where the IPv4
	// address sits depends on the prefix length that network chose (RFC
	// 6052 allows /32 to /96), which the host cannot know, and IANA lists
	// the range as not globally reachable: refused whole, as a private
	// range is.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	// sixToFour is 6to4 (RFC 3056): the IPv4 address is bits 16 to 47.
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Destinations says where the host may connect for a run. A run's author
// chooses the name, and the host connects from its own network: without
// this check a connection reaches the host's loopback services, the cloud's
// metadata address and the private network, and how each try fails tells
// an open port from a closed one.
type Destinations struct {
	// Allowed are the ranges that may be reached although they are
	// loopback, link-local, private or the host's own
	// (host.notify.allowedCIDRs; a local stack allows loopback).
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
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || sharedAddressSpace.Contains(ip) || nat64Local.Contains(ip) {
		return fmt.Errorf("%w: %s is not a public address", ErrNotAllowed, ip)
	}
	if v4, ok := embeddedIPv4(ip); ok {
		if err := d.Check(v4); err != nil {
			return fmt.Errorf("%w (%s carries it)", err, ip)
		}
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

// embeddedIPv4 is the IPv4 address that a NAT64 translator or a 6to4 relay
// sends ip's packets to.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
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
