package testenv

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

var forwarder = sync.OnceValues(func() (string, error) {
	// Under /tmp: the Podman 5 service sees only /tmp, /home and the main
	// checkout of the machine's file system. One directory per checkout,
	// whose sources may differ; built aside and renamed, as test processes
	// of one checkout run at once.
	bin := fmt.Sprintf("/tmp/agentrun-forward-%x", sha256.Sum256([]byte(RepoRoot())))[:35]
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(bin, "build-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(tmp, "agentrun-forward"), "./cmd/agentrun-forward")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the egress forwarder: %v\n%s", err, msg)
	}
	out := filepath.Join(bin, "agentrun-forward")
	return out, os.Rename(filepath.Join(tmp, "agentrun-forward"), out)
})

// Forwarder is cmd/agentrun-forward built as make build builds it (static),
// once per test process, on a path both Podman versions can mount.
func Forwarder() (string, error) { return forwarder() }
