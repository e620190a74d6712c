package main

import (
	"net/netip"
	"slices"
	"testing"
)

func TestNotifyAllowedCIDRs(t *testing.T) {
	o, err := parse(t, "--mode=host")
	if err != nil || mustHostConfig(t, o, nil).NotifyAllowedCIDRs != nil {
		t.Fatalf("default: err %v, allowed %v; want none allowed", err, mustHostConfig(t, o, nil).NotifyAllowedCIDRs)
	}
	o, err = parse(t, "--mode=host", "--notify-allowed-cidrs=127.0.0.1/32, ::1/128,10.20.3.4/16")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.20.0.0/16")}
	if got := mustHostConfig(t, o, nil).NotifyAllowedCIDRs; !slices.Equal(got, want) {
		t.Errorf("allowed %v, want %v", got, want)
	}
	for _, bad := range []string{"127.0.0.1", "localhost/8", "10.0.0.0/33"} {
		if _, err := parse(t, "--mode=host", "--notify-allowed-cidrs="+bad); err == nil {
			t.Errorf("--notify-allowed-cidrs=%s was accepted", bad)
		}
	}
}
