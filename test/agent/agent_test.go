package agent

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	names "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// createSecret makes a Podman secret, removed after the spec.
func createSecret(name, value string) {
	GinkgoHelper()
	remove, err := testenv.CreatePodmanSecret(name, value)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(remove)
}

// standIn serves the Messages API stand-in answering reply, with a fresh API
// key kept in a new Podman secret; it returns the key and the secret's name.
func standIn(reply string) (key, secret string, api *messagesAPI) {
	GinkgoHelper()
	key = "sk-ant-test-" + rand.Text()
	secret = "agentrun-agent-test-" + names.String(6)
	createSecret(secret, key)
	return key, secret, serveMessagesAPI(key, reply)
}

// standInRun is a run of the host's default command, Claude Code, against
// the stand-in, with the key from the Podman secret named secret.
func standInRun(prompt, secret string, api *messagesAPI) *agentsv1alpha1.AgentRun {
	apiURL := agentsv1alpha1.EnvValue("http://" + api.Addr)
	// The image and command are left to the host's defaults.
	return &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: "claude-" + names.String(5), Namespace: "default"},
		Spec: agentsv1alpha1.AgentRunSpec{
			// A prompt that looks like a flag is still the prompt.
			Prompt: prompt,
			Podman: agentsv1alpha1.PodmanSpec{
				SecretsEnv: map[string]agentsv1alpha1.SecretName{"ANTHROPIC_API_KEY": agentsv1alpha1.SecretName(secret)},
				// The host's network, to reach the stand-in on the host's loopback.
				Network: "host",
				Env: map[string]agentsv1alpha1.EnvValue{
					"ANTHROPIC_BASE_URL": apiURL,
					// Claude Code's switches for everything but the API
					// calls: with them it makes no DNS lookup and connects
					// to nothing but the stand-in.
					"DISABLE_TELEMETRY":                        "1",
					"DISABLE_ERROR_REPORTING":                  "1",
					"DISABLE_AUTOUPDATER":                      "1",
					"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
					// A refused call ends the run at once, with the CLI's
					// reason in its result, rather than after minutes of
					// retries.
					"CLAUDE_CODE_MAX_RETRIES": "0",
					// Should it still try another host over HTTP(S), the
					// request goes to the stand-in, which refuses it and
					// records it.
					"HTTPS_PROXY": apiURL,
					"HTTP_PROXY":  apiURL,
					"NO_PROXY":    "127.0.0.1",
				},
			},
		},
	}
}

// runToEnd creates the run, waits for it to finish and returns it; it is
// deleted after the spec, once its host removed its container.
func runToEnd(ctx SpecContext, run *agentsv1alpha1.AgentRun) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	Expect(k8s.Create(ctx, run)).To(Succeed())
	return awaitEnd(ctx, run)
}

// awaitEnd is runToEnd for a run already created.
func awaitEnd(ctx SpecContext, run *agentsv1alpha1.AgentRun) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	DeferCleanup(deleteRun, run)

	done := &agentsv1alpha1.AgentRun{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(run), done)).To(Succeed())
		g.Expect(done.Status.Phase.IsFinished()).To(BeTrue(), "phase %s: %s", done.Status.Phase, done.Status.Message)
	}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(250 * time.Millisecond).Should(Succeed())
	return done
}

// deleteRun deletes the run and waits for it to go: its host removes its
// container first.
func deleteRun(ctx SpecContext, run *agentsv1alpha1.AgentRun) {
	GinkgoHelper()
	Expect(client.IgnoreNotFound(k8s.Delete(ctx, run))).To(Succeed())
	Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{}))
	}).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeTrue())
}

var _ = Describe("Claude Code in the agent image", func() {
	It("completes a prompt against the stand-in API with its key from Podman's secret store", func(ctx SpecContext) {
		const reply = "Hello from the agentrun stand-in."
		const prompt = "--version is not a flag here: say hello."
		key, secret, api := standIn(reply)

		done := runToEnd(ctx, standInRun(prompt, secret, api))
		Expect(done.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "message: %s\noutput:\n%s", done.Status.Message, done.Status.Output)

		By("recording the CLI's own JSON result")
		result := done.Status.AgentResult
		Expect(result).NotTo(BeNil(), "output:\n%s", done.Status.Output)
		Expect(result.Result).To(Equal(reply))
		Expect(result.SessionID).NotTo(BeEmpty())
		Expect(result.NumTurns).To(BeNumerically(">=", 1))
		Expect(strconv.ParseFloat(result.CostUSD, 64)).To(BeNumerically(">=", 0), "costUSD %q", result.CostUSD)
		Expect(result.IsError).To(BeFalse())

		By("sending the stand-in nothing but streaming Messages API calls with the injected key")
		requests := api.Requests()
		Expect(requests).NotTo(BeEmpty(), "the CLI never reached the stand-in")
		Expect(requests).To(HaveEach(apiRequest{Method: "POST", Host: api.Addr, Path: "/v1/messages", Stream: true, KeyOK: true}))

		By("handing the CLI the prompt as its prompt, though it starts with --")
		Expect(api.UserText()).To(ContainElement(ContainSubstring(prompt)))

		By("never writing the key into the AgentRun")
		raw, err := json.Marshal(done)
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Contains(string(raw), key)).To(BeFalse(), "the key appears in the AgentRun")
	})

	It("continues a run's session in a later run, which waits for it, and forks it", func(ctx SpecContext) {
		_, secret, api := standIn("Noted.")

		first := standInRun("Remember the word alpaca.", secret, api)
		Expect(k8s.Create(ctx, first)).To(Succeed())
		second := standInRun("Which word did I ask you to remember?", secret, api)
		second.Spec.ContinueFrom = first.Name
		// Created before the first run ends: it waits for it.
		continued := runToEnd(ctx, second)
		earlier := awaitEnd(ctx, first)
		Expect(earlier.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "output:\n%s", earlier.Status.Output)
		Expect(continued.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "message %s, output:\n%s", continued.Status.Message, continued.Status.Output)
		Expect(continued.Status.AgentResult.SessionID).To(Equal(earlier.Status.AgentResult.SessionID), "the same session")
		Expect(continued.Status.SessionDir).To(Equal(string(continued.UID)), "a directory of its own")
		Expect(continued.Status.Host).To(Equal(earlier.Status.Host))
		Expect(continued.Status.StartTime.Time).NotTo(BeTemporally("<", earlier.Status.CompletionTime.Time), "it waited for the first run")

		By("carrying over nothing but the conversation")
		dirOf := func(run *agentsv1alpha1.AgentRun) string { return filepath.Join(sessionDir, run.Status.SessionDir) }
		Expect(os.WriteFile(filepath.Join(dirOf(earlier), "settings.json"), []byte(`{"permissions":{"defaultMode":"bypassPermissions"}}`), 0o600)).To(Succeed())
		Expect(filepath.Glob(filepath.Join(dirOf(continued), "projects", "*", earlier.Status.AgentResult.SessionID+".jsonl"))).To(HaveLen(1))

		By("touching no session before the run has its secrets")
		waiting := standInRun("Never sent.", "absent-"+names.String(5), api)
		// Pinned: the fleet places a run only on a host that has its secret.
		waiting.Spec.ContinueFrom, waiting.Spec.HostName = first.Name, hostName
		Expect(k8s.Create(ctx, waiting)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			g.Expect(meta.FindStatusCondition(waiting.Status.Conditions, agentsv1alpha1.ConditionStarted)).To(
				HaveField("Reason", agentsv1alpha1.ReasonSecretNotFound))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(filepath.Join(sessionDir, string(waiting.UID))).NotTo(BeAnExistingFile())
		deleteRun(ctx, waiting)

		fork := standInRun("Forget it and pick another word.", secret, api)
		fork.Spec.ContinueFrom, fork.Spec.Fork = first.Name, true
		forked := runToEnd(ctx, fork)
		Expect(filepath.Join(dirOf(forked), "settings.json")).NotTo(BeAnExistingFile(), "what the earlier run wrote to configure Claude Code")
		Expect(forked.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "output:\n%s", forked.Status.Output)
		Expect(forked.Status.AgentResult.SessionID).NotTo(BeEmpty())
		Expect(forked.Status.AgentResult.SessionID).NotTo(Equal(earlier.Status.AgentResult.SessionID), "a session of its own")
		Expect(forked.Status.SessionDir).NotTo(Equal(earlier.Status.SessionDir))

		By("sending the first conversation's messages along with each new prompt")
		carries := func(prompt string) types.GomegaMatcher {
			return ContainElement(And(
				ContainElement(ContainSubstring("Remember the word alpaca.")),
				ContainElement(ContainSubstring(prompt))))
		}
		Expect(api.Conversations()).To(carries("Which word did I ask you to remember?"))
		Expect(api.Conversations()).To(carries("Forget it and pick another word."))

		By("removing each session directory once its run is gone")
		for _, run := range []*agentsv1alpha1.AgentRun{forked, earlier, continued} {
			Expect(dirOf(run)).To(BeADirectory())
			deleteRun(ctx, run)
			Eventually(dirOf).WithArguments(run).WithTimeout(30 * time.Second).ShouldNot(BeAnExistingFile())
		}
	})

	It("passes spec.claude's options to the CLI as its flags", func(ctx SpecContext) {
		_, secret, api := standIn("Within budget? No.")
		run := standInRun("Spend more than you may.", secret, api)
		run.Spec.Claude = &agentsv1alpha1.ClaudeSpec{
			Model: "claude-agentrun-stand-in-1", MaxTurns: ptr.To[int32](3),
			// Below the cost of one call, which the CLI prices from the
			// stand-in's token counts.
			MaxBudgetUSD: "0.000001", PermissionMode: "dontAsk", AllowedTools: []string{"Read"},
		}
		done := runToEnd(ctx, run)

		Expect(api.Models()).NotTo(BeEmpty())
		Expect(api.Models()).To(HaveEach("claude-agentrun-stand-in-1"), "the model of every request")
		result := done.Status.AgentResult
		Expect(result).NotTo(BeNil(), "output:\n%s", done.Status.Output)
		Expect(done.Status.Output).To(ContainSubstring("max_budget"), "the CLI's own result says it stopped at the budget")
		Expect(result.IsError).To(BeTrue())
		Expect(result.NumTurns).To(BeEquivalentTo(1), "it stopped after the first call")
		Expect(done.Status.Phase).To(Equal(agentsv1alpha1.PhaseFailed))
	})

	It("ends the CLI after spec.claude.maxTurns turns", func(ctx SpecContext) {
		// Every answer is a tool call until the CLI sends the tool's
		// result, which takes a second turn: without the limit the CLI
		// would send it, and end with the stand-in's reply.
		_, secret, api := standIn("It says hello.")
		api.AskTool("Read", map[string]any{"file_path": "/etc/hostname"})
		run := standInRun("Read /etc/hostname and tell me what it says.", secret, api)
		run.Spec.Claude = &agentsv1alpha1.ClaudeSpec{MaxTurns: ptr.To[int32](1), AllowedTools: []string{"Read"}}
		done := runToEnd(ctx, run)

		Expect(done.Status.AgentResult).NotTo(BeNil(), "output:\n%s", done.Status.Output)
		Expect(done.Status.Output).To(ContainSubstring("error_max_turns"), "the CLI's own result says it stopped at the limit")
		Expect(api.ToolResults()).To(BeZero(), "the CLI took a second turn")
	})
})
