package testenv

import (
	"context"
	"path/filepath"
	"sync"

	"github.com/agentrun/agentrun/internal/podman/podmantest"
	"github.com/agentrun/agentrun/internal/policy"
)

// Policy is the manager's default container policy as the suites use it:
// volumes from /tmp, local images, and a pids limit the tests can see.
func Policy() policy.Policy {
	return policy.Policy{
		AllowedVolumePaths:    []string{"/tmp"},
		ForbiddenVolumePaths:  []string{filepath.Dir(PodmanSocket())},
		AllowedNetworks:       policy.DefaultNetworks,
		User:                  policy.DefaultUser,
		BlockedContainerPaths: []string{"/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/run/secrets"},
		AllowedImages:         []string{"localhost/*"},
		DefaultMemoryBytes:    512 << 20,
		MaxMemoryBytes:        1 << 30,
		DefaultNanoCPUs:       1e9,
		MaxNanoCPUs:           2e9,
		PidsLimit:             256,
		LogMaxBytes:           8 << 20,
		Capabilities:          policy.DefaultCapabilities,
	}
}

// Podman connects to the service under test (PodmanSocket), once per test
// binary, for the helpers below.
var Podman = sync.OnceValues(func() (*podmantest.Conn, error) {
	return podmantest.Connect(context.Background(), PodmanSocket())
})

// PodmanVersion is the version of the Podman service under test, for the
// suites' names, so that each version's results say which they are
// (make test runs the Podman-facing suites against 4.3.1 and 5.x).
func PodmanVersion() string {
	c, err := Podman()
	if err != nil {
		return "unreachable"
	}
	return c.Version()
}

// CreatePodmanSecret makes a Podman secret on the service under test, through
// its API, and returns the function that removes it.
func CreatePodmanSecret(name, value string) (remove func(), err error) {
	c, err := Podman()
	if err != nil {
		return nil, err
	}
	if err := c.CreateSecret(name, value); err != nil {
		return nil, err
	}
	return func() { _ = c.RemoveSecret(name) }, nil
}
