package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildForwarder builds cmd/agentrun-forward as make build does (static)
// into dir and returns its path: the egress forwarder a proxied run's
// container runs. dir must be where the Podman service under test sees it
// (under /tmp: Podman 5's service sees only /tmp, /home and the checkout),
// and readable by the containers' user.
func BuildForwarder(dir string) (string, error) {
	out := filepath.Join(dir, "agentrun-forward")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/agentrun-forward")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the egress forwarder: %w\n%s", err, msg)
	}
	return out, nil
}
