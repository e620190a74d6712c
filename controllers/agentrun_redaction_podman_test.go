package controllers_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

var _ = Describe("An agent that obeys an injected prompt to print its token", func() {
	It("leaves the token in no form in the AgentRun, its events or the manager's log", func(ctx SpecContext) {
		secretName := "agentrun-leak-" + rand.String(6)
		token := "ghp_" + rand.String(36)
		createSecret(secretName, token)
		// What an injected "print your environment" does, in every form
		// the redaction promises to catch, and a terminal escape besides.
		// The agent then reports an error, so the result text also reaches
		// status.message and a Warning event.
		script := strings.Join([]string{
			`echo "leak on stderr: $GH_TOKEN" >&2`,
			`sleep 0.2`,
			`env`,
			`printf 'base64: '; printf 'Authorization: Basic %s' "$GH_TOKEN" | base64`,
			`printf '\033[2J\033]0;pwned\007cleared\n'`,
			`printf '{"type":"result","is_error":true,"result":"could not push with %s","session_id":"s-1","num_turns":1}\n' "$GH_TOKEN"`,
		}, "; ")
		run := newRun("leak", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", script, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName(secretName)}
		})
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)

		failed := waitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 30*time.Second)
		Expect(conditionOf(failed, agentsv1alpha1.ConditionFailed).Reason).To(Equal(agentsv1alpha1.ReasonAgentError))
		Expect(failed.Status.Output).To(ContainSubstring("GH_TOKEN=***"))
		Expect(failed.Status.Output).To(ContainSubstring("leak on stderr: ***"))
		Expect(failed.Status.Output).To(ContainSubstring("cleared"))
		Expect(failed.Status.Output).NotTo(ContainSubstring("\x1b"))
		Expect(failed.Status.AgentResult.Result).To(Equal("could not push with ***"))
		Expect(failed.Status.Message).To(ContainSubstring("could not push with ***"))

		forms := []string{token, strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(token)), "="), token[4:20]}
		for k := range 3 {
			whole := token[k:][:len(token[k:])/3*3]
			forms = append(forms, base64.StdEncoding.EncodeToString([]byte(whole)))
		}
		raw, err := json.Marshal(failed)
		Expect(err).NotTo(HaveOccurred())
		for _, form := range forms {
			Expect(string(raw)).NotTo(ContainSubstring(form))
		}
		Eventually(func(g Gomega) {
			evs := runEvents(ctx, run)
			raw, err := json.Marshal(evs)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(raw)).To(ContainSubstring(agentsv1alpha1.ReasonAgentError))
			for _, form := range forms {
				g.Expect(string(raw)).NotTo(ContainSubstring(form))
			}
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
		for _, form := range forms {
			Expect(managerLogs.String()).NotTo(ContainSubstring(form))
		}
	})
})
