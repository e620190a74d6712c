package e2e

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// kubectlPlugin is `kubectl agentrun ARGS...` as a user runs it, with the
// stack's KUBECONFIG (kubectl takes no flags before a plugin's name): kubectl
// finds the plugin on PATH (the stack's bin/, where make up links it).
func kubectlPlugin(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(stateDir, "bin", "kubectl"), append([]string{"agentrun"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(stateDir, "kubeconfig"), "PATH="+filepath.Join(stateDir, "bin")+":"+os.Getenv("PATH"))
	return cmd
}

// exitCode is a finished command's exit code.
func exitCode(err error) int {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	Expect(err).NotTo(HaveOccurred())
	return 0
}

var _ = Describe("kubectl agentrun", func() {
	It("logs -f shows a run's lines while it runs, through the API server, and returns when it exits", func() {
		ns := newNamespace()
		out, err := kubectlPlugin("-n", ns, "run", "ticker", "--prompt", "tick", "--",
			"sh", "-c", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		logs := kubectlPlugin("-n", ns, "logs", "-f", "ticker")
		stdout, err := logs.StdoutPipe()
		Expect(err).NotTo(HaveOccurred())
		var stderr strings.Builder
		logs.Stderr = &stderr
		Expect(logs.Start()).To(Succeed())
		lines := bufio.NewScanner(stdout)
		Expect(lines.Scan()).To(BeTrue(), stderr.String())
		Expect(lines.Text()).To(Equal("tick 1"))
		Expect(kubectlOK("get", "agentrun", "ticker", "-n", ns, "-o", "jsonpath={.status.phase}")).To(Equal("Running"),
			"the first line arrived before the run ended")
		// The same output through the API server with plain kubectl: the
		// fleet's aggregated API is what the plugin calls.
		Expect(kubectlOK("get", "--raw", "/apis/logs.agentrun.dev/v1alpha1/namespaces/"+ns+"/agentruns/ticker/log")).To(HavePrefix("tick 1\n"))
		var rest []string
		for lines.Scan() {
			rest = append(rest, lines.Text())
		}
		Expect(logs.Wait()).To(Succeed(), stderr.String())
		Expect(rest).To(Equal([]string{"tick 2", "tick 3", "tick 4", "tick 5", "tick 6"}))
	})

	It("run --follow creates a run, streams its output with secrets masked, and exits with its exit code", func() {
		ns := newNamespace()
		secret, value := "e2e-plugin-"+rand.String(6), "e2e-plugin-value-"+rand.String(12)
		remove, err := testenv.CreatePodmanSecret(secret, value)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(remove)
		cmd := kubectlPlugin("-n", ns, "run", "leaky", "--prompt", "leak", "--secret-env", "TOKEN="+secret, "--follow", "--",
			"sh", "-c", `echo "token: $TOKEN"; sleep 2; echo done; exit 4`)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		started := time.Now()
		Expect(exitCode(cmd.Run())).To(Equal(4), stderr.String())
		Expect(stdout.String()).To(Equal("token: ***\ndone\n"))
		Expect(stderr.String()).To(ContainSubstring("agentrun.agents.agentrun.dev/leaky created"))
		Expect(time.Since(started)).To(BeNumerically(">", 2*time.Second))
	})

	It("describe, hosts and cancel work against the stack", func() {
		ns := newNamespace()
		out, err := kubectlPlugin("-n", ns, "run", "sleeper", "--prompt", "wait", "--", "sh", "-c", "sleep 300").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Eventually(func() string {
			return kubectlOK("get", "agentrun", "sleeper", "-n", ns, "-o", "jsonpath={.status.phase}")
		}, "60s").Should(Equal("Running"))
		// The host publishes its load with its heartbeat (every 10 s).
		Eventually(func(g Gomega) {
			out, err := kubectlPlugin("hosts").CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), string(out))
			g.Expect(string(out)).To(MatchRegexp(`(?m)^` + hostName + `\s+True\s+1/\d+\s`))
		}, "30s", "1s").Should(Succeed())

		out, err = kubectlPlugin("-n", ns, "cancel", "sleeper").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(Equal("agentrun/sleeper cancelled\n"))
		kubectlOK("wait", "-n", ns, "--for=condition=Finished", "agentrun/sleeper", "--timeout=60s")
		out, err = kubectlPlugin("-n", ns, "describe", "sleeper").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(out).To(MatchRegexp(`Phase:\s+Cancelled`))
		Expect(out).To(MatchRegexp(`Host:\s+` + hostName))
		Expect(out).To(ContainSubstring("Events:"))
	})
})
