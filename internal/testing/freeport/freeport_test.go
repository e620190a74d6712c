package freeport

import (
	"net"
	"strconv"
	"testing"
)

// The ports are distinct, free (a listener binds each) and below the
// ephemeral range, which outgoing connections take their ports from.
func TestTakeGivesDistinctFreePortsBelowTheEphemeralRange(t *testing.T) {
	low, err := ephemeralLow()
	if err != nil {
		t.Fatal(err)
	}
	ports, err := Take(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d given twice in %v", p, ports)
		}
		seen[p] = true
		if p < lowest || p >= low {
			t.Errorf("port %d is outside [%d, %d)", p, lowest, low)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		_ = l.Close()
	}
}

// A port something listens on is never given: the search starts at one in
// use and takes the next.
func TestTakeSkipsAPortInUse(t *testing.T) {
	low, err := ephemeralLow()
	if err != nil {
		t.Fatal(err)
	}
	inUse, err := One()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(inUse))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ports, err := takeFrom(1, low, inUse-lowest)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0] == inUse {
		t.Fatalf("port %d, in use, was given", inUse)
	}
}
