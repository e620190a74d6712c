package netguard

import (
	"errors"
	"net/netip"
	"testing"
)

func TestDestinationsRefuseTheHostsNetworks(t *testing.T) {
	own := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8::5")}, nil
	}
	d := Destinations{ownAddresses: own}
	for _, ip := range []string{
		"127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", // loopback, also mapped
		"169.254.169.254", "fe80::1", // link-local: the cloud's metadata service
		"10.0.0.7", "172.16.0.1", "192.168.1.1", "fd00::1", "100.64.0.1", // private, shared
		"0.0.0.0", "::", "224.0.0.1", "ff02::1", // unspecified (the host itself), multicast
		"203.0.113.5", "2001:db8::5", // the host's own
	} {
		if err := d.Check(netip.MustParseAddr(ip)); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v, want it refused", ip, err)
		}
	}
	for _, ip := range []string{"203.0.113.6", "93.184.215.14", "2606:4700::1111"} {
		if err := d.Check(netip.MustParseAddr(ip)); err != nil {
			t.Errorf("%s: %v, want it allowed", ip, err)
		}
	}
	d.Allowed = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("127.0.0.1/32")}
	for ip, allowed := range map[string]bool{"10.20.3.4": true, "127.0.0.1": true, "::ffff:10.20.0.1": true, "10.21.0.1": false, "127.0.0.2": false} {
		if err := d.Check(netip.MustParseAddr(ip)); (err == nil) != allowed {
			t.Errorf("%s with %v allowed: %v", ip, d.Allowed, err)
		}
	}
}

// An IPv6 address that a translator (NAT64) or a tunnel (6to4) turns into an
// IPv4 address reaches that IPv4 address: it is refused when that one is.
func TestDestinationsRefuseTheHostsNetworksBehindIPv6Translation(t *testing.T) {
	own := func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("203.0.113.5")}, nil }
	d := Destinations{ownAddresses: own}
	for _, ip := range []string{
		"64:ff9b::127.0.0.1", "64:ff9b::169.254.169.254", "64:ff9b::10.0.0.7", "64:ff9b::203.0.113.5", // NAT64's well-known prefix
		"64:ff9b:1::8.8.8.8", "64:ff9b:1:ffff::a00:7", // local-use NAT64: where the IPv4 address sits is the network's choice
		"2002:7f00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101::1", "2002:cb00:7105::1", // 6to4
	} {
		if err := d.Check(netip.MustParseAddr(ip)); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v, want it refused", ip, err)
		}
	}
	for _, ip := range []string{"64:ff9b::8.8.8.8", "2002:808:808::1"} {
		if err := d.Check(netip.MustParseAddr(ip)); err != nil {
			t.Errorf("%s: %v, want it allowed", ip, err)
		}
	}
	d.Allowed = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if err := d.Check(netip.MustParseAddr("64:ff9b::10.0.0.7")); err != nil {
		t.Errorf("64:ff9b::10.0.0.7 with 10.0.0.0/8 allowed: %v", err)
	}
}
