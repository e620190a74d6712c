package agentruns

import (
	"github.com/agentrun/agentrun/internal/config"
)

// The defaults of the hosts' heartbeat, those of the configuration file
// (internal/config says why), for suites that leave a setting zero.
const (
	DefaultLeaseNamespace  = config.DefaultLeaseNamespace
	DefaultHeartbeatPeriod = config.DefaultHeartbeatPeriod
	DefaultHostGracePeriod = config.DefaultHostGracePeriod
)
