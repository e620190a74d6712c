package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

var forwarder = sync.OnceValues(func() (string, error) {
	// In the checkout: the Podman 5 service sees only /tmp, /home and the
	// checkout of the machine's file system. Built aside and renamed, as
	// test processes run at once.
	bin := filepath.Join(RepoRoot(), "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(bin, ".agentrun-forward-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(tmp, "agentrun-forward"), "./cmd/agentrun-forward")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the egress forwarder: %v\n%s", err, msg)
	}
	out := filepath.Join(bin, "agentrun-forward-test")
	return out, os.Rename(filepath.Join(tmp, "agentrun-forward"), out)
})

// Forwarder is cmd/agentrun-forward built as make build builds it (static),
// once per test process, on a path both Podman versions can mount.
func Forwarder() (string, error) { return forwarder() }
