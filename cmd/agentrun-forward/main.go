// agentrun-forward runs inside a run's container, which has no network but
// loopback: it carries the agent's connections to the host's egress proxy
// through a Unix socket mounted into the container (internal/egressforward).
// The host mounts this binary read-only into every run's container, so it is
// static and imports nothing but the standard library and that package.
package main

import (
	"os"

	"github.com/agentrun/agentrun/internal/egressforward"
)

func main() {
	os.Exit(egressforward.Main(os.Args[1:], os.Stderr))
}
