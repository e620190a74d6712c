package v1alpha1_test

import (
	"os"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// kubectlApply applies a manifest to env with the kubectl built for envtest,
// as an admin user, and returns its combined output and error.
func kubectlApply(env *envtest.Environment, manifest string) (string, error) {
	GinkgoHelper()
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	dir := GinkgoT().TempDir()
	Expect(os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(dir, "run.yaml"), []byte(manifest), 0o600)).To(Succeed())
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"),
		"--kubeconfig", filepath.Join(dir, "kubeconfig"), "apply", "-n", "default", "-f", filepath.Join(dir, "run.yaml"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const invalidManifest = `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: bad-run
spec:
  prompt: Review the open PRs using gh CLI
  workdir: /workspace
  podman:
    secretsEnv:
      LD_PRELOAD: github-token
      1BAD: gitlab-token
`

var _ = Describe("kubectl apply of an invalid AgentRun", func() {
	for name, env := range map[string]**envtest.Environment{"with the webhook": &webhookEnv, "with CEL alone": &celEnv} {
		It("is refused "+name+", printing the field and every rule broken", func() {
			out, err := kubectlApply(*env, invalidManifest)
			Expect(err).To(HaveOccurred(), out)
			GinkgoWriter.Println(out)
			Expect(out).To(ContainSubstring(`The AgentRun "bad-run" is invalid`))
			Expect(out).To(ContainSubstring("spec.podman.secretsEnv"))
			Expect(out).To(ContainSubstring("(rule: blocked vars)"))
			Expect(out).To(ContainSubstring("(rule: env var format)"))
		})
	}
})

const relabelManifest = `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: relabel-run
spec:
  prompt: Review the open PRs using gh CLI
  workdir: /workspace
  podman:
    volumes:
      - /home/user/myrepo:/workspace:Z
`

var _ = Describe("kubectl apply of an AgentRun with a relabelling volume", func() {
	It("creates it and prints the webhook's warning at once", func() {
		out, err := kubectlApply(webhookEnv, relabelManifest)
		Expect(err).NotTo(HaveOccurred(), out)
		GinkgoWriter.Println(out)
		Expect(out).To(ContainSubstring("Warning: spec.podman.volumes[0]: option Z relabels every file under the host path for SELinux, " +
			"private to this container; hosts refuse it at launch unless their configuration sets host.volumes.allowRelabel"))
		Expect(out).To(ContainSubstring("agentrun.agents.agentrun.dev/relabel-run created"))
	})
})
