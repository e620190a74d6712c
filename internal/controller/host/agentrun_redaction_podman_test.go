package host_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// plainToken is a secret value of no known token shape: only the host's
// knowing it can mask it.
func plainToken() string { return "vq" + rand.String(38) }

var _ = Describe("An agent that obeys an injected prompt to print its token", func() {
	It("leaves the token in no form in the AgentRun, its events or the manager's log", func(ctx SpecContext) {
		secretName := "agentrun-leak-" + rand.String(6)
		token := plainToken()
		// Stored as the README says, with echo's newline.
		controllertest.CreateSecret(secretName, token+"\n")
		// What an injected "print your environment" does, in every form
		// the redaction promises to catch, and a terminal escape besides:
		// base64 wrapped at 76 columns, at the three alignments. The agent
		// then reports an error, so the result text also reaches
		// status.message and a Warning event.
		script := strings.Join([]string{
			`T=$(printf %s "$GH_TOKEN" | tr -d '\n')`,
			`echo "leak on stderr: $T" >&2`,
			`sleep 0.2`,
			`env`,
			`for p in '' x xy; do printf '%sAuthorization: Basic %s' "$p" "$T" | base64; done`,
			`printf '\033[2J\033]0;pwned\007cleared\n'`,
			`printf '{"type":"result","is_error":true,"result":"could not push with %s","session_id":"s-1","num_turns":1}\n' "$T"`,
		}, "; ")
		run := controllertest.NewRun("leak", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", script, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)

		failed := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 30*time.Second)
		Expect(controllertest.ConditionOf(failed, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonAgentError))
		Expect(failed.Status.Output).To(ContainSubstring("GH_TOKEN=***"))
		Expect(failed.Status.Output).To(ContainSubstring("leak on stderr: ***"))
		Expect(failed.Status.Output).To(ContainSubstring("cleared"))
		Expect(failed.Status.Output).NotTo(ContainSubstring("\x1b"))
		Expect(failed.Status.AgentResult.Result).To(Equal("could not push with ***"))
		Expect(failed.Status.Message).To(ContainSubstring("could not push with ***"))
		// The three base64 blocks: at least a mask each.
		Expect(strings.Count(failed.Status.Output, "***")).To(BeNumerically(">=", 6), failed.Status.Output)

		for _, text := range []string{failed.Status.Output, failed.Status.Message, failed.Status.AgentResult.Result} {
			Expect(tokenPieces(text, token)).To(BeEmpty(), text)
		}
		Eventually(func(g Gomega) {
			evs := controllertest.RunEvents(ctx, run)
			raw, err := json.Marshal(evs)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(raw)).To(ContainSubstring(agentsv1alpha1.ReasonAgentError))
			for _, e := range evs {
				g.Expect(tokenPieces(e.Note, token)).To(BeEmpty(), e.Note)
			}
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(tokenPieces(controllertest.ManagerLogs.String(), token)).To(BeEmpty())
	})

	It("masks the value its container got, though the secret is replaced while it runs", func(ctx SpecContext) {
		dir, err := os.MkdirTemp("/tmp", "agentrun-replace-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		Expect(os.Chmod(dir, 0o755)).To(Succeed())
		secretName := "agentrun-replaced-" + rand.String(6)
		token := plainToken()
		controllertest.CreateSecret(secretName, token)
		run := controllertest.NewRun("replaced", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Volumes = []string{dir + ":/sync"}
			r.Spec.Command = []string{"sh", "-c", `while [ ! -e /sync/go ]; do sleep 0.1; done; echo "token: $GH_TOKEN"`, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
		})
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseRunning, 30*time.Second)

		// podman secret create --replace, as an operator rotating it does.
		removeSecret(secretName)
		controllertest.CreateSecret(secretName, plainToken())
		Expect(os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)).To(Succeed())

		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Expect(done.Status.Output).To(Equal("token: ***\n"))
	})
})

// base64Run is a run of base64 characters long enough to decode to 8 bytes.
var base64Run = regexp.MustCompile(`[A-Za-z0-9+/_-]{11,}`)

// tokenPieces lists the 8-byte pieces of token found in text, as is or in
// any base64 run of it decoded at any alignment, its line breaks removed.
func tokenPieces(text, token string) []string {
	var found []string
	joined := strings.NewReplacer("\r", "", "\n", "").Replace(text)
	decoded := []string{text}
	for _, run := range base64Run.FindAllString(joined, -1) {
		for k := range 4 {
			part := run[k:]
			for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
				b, _ := enc.DecodeString(part[:len(part)/4*4])
				decoded = append(decoded, string(b))
			}
		}
	}
	for i := 0; i+8 <= len(token); i++ {
		for _, d := range decoded {
			if strings.Contains(d, token[i:i+8]) {
				found = append(found, token[i:i+8])
			}
		}
	}
	return found
}

// removeSecret removes a Podman secret the test made.
func removeSecret(name string) {
	GinkgoHelper()
	c, err := testenv.Podman()
	Expect(err).NotTo(HaveOccurred())
	Expect(c.RemoveSecret(name)).To(Succeed())
}
