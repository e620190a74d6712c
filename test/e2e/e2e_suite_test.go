// Package e2e drives agentrun the way a user does: it brings the local stack
// up with hack/local-stack.sh (the built manager binary, a control plane on
// loopback, the machine's Podman), then uses kubectl, podman and curl. One
// spec adds a second host the way a Podman host runs it from the Quadlet
// unit: the manager's image (make image) in a container, started through the
// Podman API.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/agentrun/agentrun/internal/testing/freeport"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

const hostName = "e2e"

var (
	root        = testenv.RepoRoot()
	stateDir    string
	metricsPort int
	stackEnv    []string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "agentrun end-to-end suite (Podman "+testenv.PodmanVersion()+")")
}

func freePort() int {
	GinkgoHelper()
	port, err := freeport.One()
	Expect(err).NotTo(HaveOccurred())
	return port
}

var _ = BeforeSuite(func() {
	var err error
	stateDir, err = os.MkdirTemp("", "agentrun-e2e-")
	Expect(err).NotTo(HaveOccurred())
	metricsPort = freePort()
	stackEnv = append(os.Environ(),
		"AGENTRUN_LOCAL_DIR="+stateDir,
		"AGENTRUN_HOST_NAME="+hostName,
		fmt.Sprintf("AGENTRUN_METRICS_PORT=%d", metricsPort),
		fmt.Sprintf("AGENTRUN_PROBE_PORT=%d", freePort()),
		fmt.Sprintf("AGENTRUN_LOGS_PORT=%d", freePort()),
		"AGENTRUN_PODMAN_SOCKET="+testenv.PodmanSocket(),
	)
	out, err := stack("up")
	Expect(err).NotTo(HaveOccurred(), out)
})

// aSpecFailed: the suite's logs are worth printing (in AfterSuite,
// CurrentSpecReport is AfterSuite's own, which has not failed).
var aSpecFailed bool

var _ = AfterEach(func() {
	if CurrentSpecReport().Failed() {
		aSpecFailed = true
	}
})

var _ = AfterSuite(func() {
	if stateDir == "" {
		return
	}
	if aSpecFailed || CurrentSpecReport().Failed() {
		for _, f := range []string{"manager.log", "localstack.log"} {
			if data, err := os.ReadFile(filepath.Join(stateDir, f)); err == nil {
				GinkgoWriter.Printf("--- %s\n%s\n", f, data)
			}
		}
	}
	out, err := stack("down")
	Expect(err).NotTo(HaveOccurred(), out)
})

func stack(command string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "hack", "local-stack.sh"), command)
	cmd.Env = stackEnv
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectl runs the stack's kubectl and returns its combined output.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(stateDir, "bin", "kubectl"), append([]string{"--kubeconfig", filepath.Join(stateDir, "kubeconfig")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlOK runs kubectl and fails the spec if it fails.
func kubectlOK(args ...string) string {
	GinkgoHelper()
	out, err := kubectl(args...)
	Expect(err).NotTo(HaveOccurred(), "kubectl %s:\n%s", strings.Join(args, " "), out)
	return out
}

// kubectlApply applies a manifest given as text.
func kubectlApply(namespace, manifest string) string {
	GinkgoHelper()
	f := filepath.Join(GinkgoT().TempDir(), "manifest.yaml")
	Expect(os.WriteFile(f, []byte(manifest), 0o600)).To(Succeed())
	return kubectlOK("apply", "-n", namespace, "-f", f)
}
