package agentruns

import (
	"time"
)

// The defaults of the fleet's settings, as Kubernetes has them for Nodes: a
// Lease renewed every 10 s in a namespace of its own, and 40 s of silence
// before a host is declared lost.
const (
	DefaultLeaseNamespace  = "agentrun-system"
	DefaultHeartbeatPeriod = 10 * time.Second
	DefaultHostGracePeriod = 40 * time.Second
)
