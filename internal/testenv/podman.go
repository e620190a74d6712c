package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

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
		Capabilities:          policy.DefaultCapabilities,
	}
}

// CreatePodmanSecret makes a Podman secret as a user would, with the CLI,
// and returns the function that removes it.
func CreatePodmanSecret(name, value string) (remove func(), err error) {
	cmd := exec.Command("podman", "secret", "create", name, "-")
	cmd.Stdin = strings.NewReader(value)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("podman secret create %s: %w: %s", name, err, out)
	}
	return func() { _ = exec.Command("podman", "secret", "rm", name).Run() }, nil
}
