package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// writeConfigFile writes a configuration file with body after its header.
func writeConfigFile(body string) string {
	GinkgoHelper()
	file := filepath.Join(GinkgoT().TempDir(), "agentrun.yaml")
	Expect(os.WriteFile(file, []byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\n"+body), 0o644)).To(Succeed())
	return file
}

var _ = Describe("The manager's configuration file", func() {
	manager := func() string { return filepath.Join(root, "bin", "manager") }
	kubeconfig := func() string { return "--kubeconfig=" + filepath.Join(stateDir, "kubeconfig") }

	It("is refused at start when invalid, with the field's path named", func(ctx SpecContext) {
		file := writeConfigFile("host:\n  volumes:\n    allowedPaths: [/srv/a, /srv/b, repos]\n")
		// A manager that accepted the file would run until killed: 30 s
		// are far more than a refusal takes.
		run, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(run, manager(), "--mode=host", "--host-name=e2e-refused", "--config="+file, kubeconfig())
		out, err := cmd.CombinedOutput()
		Expect(run.Err()).NotTo(HaveOccurred(), "the manager started with an invalid file:\n%s", out)
		var exit *exec.ExitError
		Expect(err).To(BeAssignableToTypeOf(exit), "the manager started with an invalid file:\n%s", out)
		Expect(string(out)).To(ContainSubstring(`host.volumes.allowedPaths[2]: Invalid value: "repos": must be an absolute path`))
		Expect(string(out)).To(ContainSubstring(file))
		got, err := kubectl("get", "podmanhost", "e2e-refused")
		Expect(err).To(HaveOccurred(), "a refused manager registered its host:\n%s", got)
		Expect(got).To(ContainSubstring("NotFound"))
	})

	// A webhook-only manager on ports of its own, with the stack's serving
	// certificate: it takes part in nothing the other specs watch.
	It("takes an old flag as a deprecated override of its field, and says so", func() {
		fromFile, fromFlag := fmt.Sprintf("127.0.0.1:%d", freePort()), fmt.Sprintf("127.0.0.1:%d", freePort())
		file := writeConfigFile(fmt.Sprintf(`metrics:
  bindAddress: "0"
health:
  bindAddress: %q
leaderElection:
  leaderElect: false
webhook:
  host: 127.0.0.1
  port: %d
  certDir: %q
`, fromFile, freePort(), filepath.Join(stateDir, "webhook")))
		var out testenv.SyncBuffer
		cmd := exec.Command(manager(), "--mode=webhook", "--config="+file, kubeconfig(), "--health-probe-bind-address="+fromFlag)
		cmd.Stdout, cmd.Stderr = &out, &out
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		Eventually(func(g Gomega) {
			resp, err := http.Get("http://" + fromFlag + "/readyz")
			g.Expect(err).NotTo(HaveOccurred(), "the manager's output:\n%s", out.String())
			_ = resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		}).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		if resp, err := http.Get("http://" + fromFile + "/readyz"); err == nil {
			_ = resp.Body.Close()
			Fail("the probes also listen where the file says, though the flag overrode it")
		}
		Expect(out.String()).To(ContainSubstring("flag --health-probe-bind-address is deprecated"))
		Expect(out.String()).To(ContainSubstring(`"field":"health.bindAddress"`))
	})
})
