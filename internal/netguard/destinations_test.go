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
