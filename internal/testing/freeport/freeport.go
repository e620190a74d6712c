// Package freeport picks TCP ports on 127.0.0.1 for processes a test starts
// and that bind them later (a manager's metrics, probes, profiles).
//
// A port from Listen("127.0.0.1:0") comes from the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), the range every outgoing connection on the
// machine takes its local port from. Between the pick and the bind, another
// process's connection (a client's watch of the API server, a call to Podman)
// can take that port, and the process that was to listen on it fails or,
// supervised, restarts with another pid: make scale met this at 100 simulated
// hosts, whose connections churn through the range. Ports below the range are
// never given to outgoing connections, so Take picks there, from a random
// start so that suites picking at once rarely pick the same one, and above
// the fixed ports of the local stacks (18080 and on).
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// lowest is the first port Take considers: above the local stacks' fixed
// ports (hack/local-stack.sh, hack/bench.sh: 18080 to 18192).
const lowest = 20000

// rangeFile holds the kernel's ephemeral port range, "low high".
const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// Take returns n distinct ports nothing listens on now, below the ephemeral
// range.
func Take(n int) ([]int, error) {
	end, err := ephemeralLow()
	if err != nil {
		return nil, err
	}
	if end <= lowest {
		return nil, fmt.Errorf("the ephemeral range starts at %d: no room below it above %d", end, lowest)
	}
	return takeFrom(n, end, rand.IntN(end-lowest))
}

// takeFrom takes n free ports of [lowest, end), trying them in turn from
// lowest+start, round.
func takeFrom(n, end, start int) ([]int, error) {
	span := end - lowest
	ports := make([]int, 0, n)
	// Each port stays held until all are taken, so none is picked twice.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for i := 0; i < span && len(ports) < n; i++ {
		port := lowest + (start+i)%span
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		held = append(held, l)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("only %d of %d ports free between %d and %d", len(ports), n, lowest, end)
	}
	return ports, nil
}

// One returns one port, as Take(1).
func One() (int, error) {
	ports, err := Take(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() (int, error) {
	data, err := os.ReadFile(rangeFile)
	if err != nil {
		return 0, err
	}
	var low, high int
	if _, err := fmt.Sscan(string(data), &low, &high); err != nil {
		return 0, fmt.Errorf("%s: %w", rangeFile, err)
	}
	if low <= 0 {
		return 0, errors.New(rangeFile + ": no range")
	}
	return low, nil
}
