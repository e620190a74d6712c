package kubectlplugin_test

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

var _ = Describe("kubectl agentrun run", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("prints the manifest with --dry-run=client -o yaml, the command after --, and creates nothing", func(ctx SpecContext) {
		r := plugin("-n", ns, "run", "review", "--prompt", "Review the PRs", "--workdir", "/workspace",
			"--volume", "/home/user/myrepo:/workspace:ro", "--secret-env", "GH_TOKEN=github-token",
			"--image", "localhost/agent:1", "--host", "local-2", "--timeout", "10m",
			"--dry-run=client", "-o", "yaml", "--", "claude", "-p")
		Expect(r.code).To(Equal(0), r.errOut)
		run := &agentsv1alpha1.AgentRun{}
		Expect(yaml.UnmarshalStrict([]byte(r.out), run)).To(Succeed(), r.out)
		Expect(run.APIVersion).To(Equal("agents.agentrun.dev/v1alpha1"))
		Expect(run.Kind).To(Equal("AgentRun"))
		Expect(run.Name).To(Equal("review"))
		Expect(run.Namespace).To(Equal(ns))
		Expect(run.Spec).To(Equal(agentsv1alpha1.AgentRunSpec{
			Prompt: "Review the PRs", Workdir: "/workspace", Image: "localhost/agent:1",
			Command: []string{"claude", "-p"}, HostName: "local-2",
			Timeout: &metav1.Duration{Duration: 10 * time.Minute},
			Podman: agentsv1alpha1.PodmanSpec{
				Volumes:    []string{"/home/user/myrepo:/workspace:ro"},
				SecretsEnv: map[string]agentsv1alpha1.SecretName{"GH_TOKEN": "github-token"},
			},
		}))
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "review"}, &agentsv1alpha1.AgentRun{})
		Expect(err).To(MatchError(ContainSubstring("not found")))
	})

	It("creates the run in the namespace -n names, as kubectl create does", func(ctx SpecContext) {
		r := plugin("-n", ns, "run", "hello", "--prompt", "Say hello")
		Expect(r.code).To(Equal(0), r.errOut)
		Expect(r.out).To(Equal("agentrun.agents.agentrun.dev/hello created\n"))
		run := &agentsv1alpha1.AgentRun{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hello"}, run)).To(Succeed())
		Expect(run.Spec.Prompt).To(Equal("Say hello"))
		Expect(run.Spec.Command).To(BeEmpty())
	})

	It("refuses a bad run with one line naming the rule, before the API server sees it", func() {
		r := plugin("-n", ns, "run", "bad", "--prompt", "x", "--secret-env", "LD_PRELOAD=foo", "--dry-run=client")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(HavePrefix("error: "))
		Expect(r.errOut).To(ContainSubstring("LD_PRELOAD"))
		Expect(strings.Count(r.errOut, "\n")).To(Equal(1), r.errOut)
		r = plugin("-n", ns, "run", "bad", "--prompt", "x", "--secret-env", "NOEQUALS")
		Expect(r.errOut).To(Equal("error: --secret-env \"NOEQUALS\": want VAR=SECRET\n"))
	})

	It("refuses a run without --prompt, and a second run of the same name, in one line each", func() {
		r := plugin("-n", ns, "run", "nameless")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(ContainSubstring(`"prompt" not set`))
		Expect(plugin("-n", ns, "run", "twice", "--prompt", "x").code).To(Equal(0))
		r = plugin("-n", ns, "run", "twice", "--prompt", "x")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(Equal("error: agentruns.agents.agentrun.dev \"twice\" already exists\n"))
	})

	It("waits with --wait and exits with the run's exit code", func(ctx SpecContext) {
		done := make(chan result, 1)
		go func() {
			defer GinkgoRecover()
			done <- plugin("-n", ns, "run", "failing", "--prompt", "x", "--wait")
		}()
		key := client.ObjectKey{Namespace: ns, Name: "failing"}
		run := &agentsv1alpha1.AgentRun{}
		Eventually(func() error { return k8s.Get(ctx, key, run) }).Should(Succeed())
		Consistently(done, "1500ms").ShouldNot(Receive(), "it returned before the run finished")
		run.Status.Phase = agentsv1alpha1.PhaseFailed
		run.Status.ExitCode = ptr.To[int32](3)
		run.Status.Message = "container x exited 3"
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		var r result
		Eventually(done, "10s").Should(Receive(&r))
		Expect(r.code).To(Equal(3), r.errOut)
		Expect(r.errOut).To(ContainSubstring("agentrun/failing Failed: container x exited 3"))
	})
})

var _ = Describe("kubectl agentrun cancel", func() {
	It("sets spec.cancel on an unfinished run, and leaves a finished one alone", func(ctx SpecContext) {
		ns := newNamespace()
		Expect(plugin("-n", ns, "run", "long", "--prompt", "x").code).To(Equal(0))
		r := plugin("-n", ns, "cancel", "long")
		Expect(r.code).To(Equal(0), r.errOut)
		Expect(r.out).To(Equal("agentrun/long cancelled\n"))
		run := &agentsv1alpha1.AgentRun{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "long"}, run)).To(Succeed())
		Expect(run.Spec.Cancel).To(BeTrue())

		Expect(plugin("-n", ns, "run", "done", "--prompt", "x").code).To(Equal(0))
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "done"}, run)).To(Succeed())
		run.Status.Phase = agentsv1alpha1.PhaseSucceeded
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		Expect(plugin("-n", ns, "cancel", "done").out).To(Equal("agentrun/done already finished (Succeeded)\n"))
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "done"}, run)).To(Succeed())
		Expect(run.Spec.Cancel).To(BeFalse())

		r = plugin("-n", ns, "cancel", "missing")
		Expect(r.errOut).To(Equal("error: agentruns.agents.agentrun.dev \"missing\" not found\n"))
	})
})

var _ = Describe("kubectl agentrun describe", func() {
	It("shows phase, host, attempts, the agent's result, cost and turns, conditions and the run's events", func(ctx SpecContext) {
		ns := newNamespace()
		Expect(plugin("-n", ns, "run", "summary", "--prompt", "Summarize").code).To(Equal(0))
		run := &agentsv1alpha1.AgentRun{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "summary"}, run)).To(Succeed())
		run.Status = agentsv1alpha1.AgentRunStatus{
			Phase: agentsv1alpha1.PhaseSucceeded, Host: "local-2", Attempts: 2, DisruptedAttempts: 1,
			ExitCode: ptr.To[int32](0), Duration: "12s", Message: "container c exited 0",
			AgentResult: &agentsv1alpha1.AgentResult{Result: "Three sentences.\nSecond line.", SessionID: "s-1", NumTurns: 4, CostUSD: "0.0123"},
			Egress: &agentsv1alpha1.EgressStatus{Mode: agentsv1alpha1.EgressProxy, Allow: []string{"api.anthropic.com", "github.com"},
				Allowed: 12, Refused: 4, TopRefused: []agentsv1alpha1.EgressRefusal{{Destination: "evil.test:443", Count: 3}, {Destination: "10.0.0.1:80", Count: 1}},
				Credentials: []agentsv1alpha1.EgressCredentialStatus{{Host: "api.anthropic.com", SecretName: "anthropic-key", Requests: 9, Rejected: 2}}},
		}
		meta.SetStatusCondition(&run.Status.Conditions, metav1.Condition{Type: "Succeeded", Status: metav1.ConditionTrue, Reason: "Completed", Message: "container c exited 0"})
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		Expect(k8s.Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "summary-", Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: "AgentRun", Namespace: ns, Name: "summary", UID: run.UID},
			Reason:         "Launched", Message: "started container c on local-2", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "agentrun-local-2"}, LastTimestamp: metav1.Now(),
		})).To(Succeed())

		r := plugin("-n", ns, "describe", "summary")
		Expect(r.code).To(Equal(0), r.errOut)
		for _, want := range []string{
			"Name:", "summary", "Phase:", "Succeeded", "Host:", "local-2", "Attempts:", "2 (disrupted: 1)",
			"Exit Code:", "Turns:", "4", "Cost (USD):", "0.0123", "Session:", "s-1",
			"    Three sentences.\n    Second line.", "Completed", "Launched", "agentrun-local-2", "started container c on local-2",
			"Egress:", "proxy", "api.anthropic.com,github.com", "12 allowed, 4 refused", "Top Refused:", "evil.test:443 (3), 10.0.0.1:80 (1)",
			"Credential:", "api.anthropic.com from Podman secret anthropic-key: added to 9 request(s), 2 refused (HTTP 401/403)",
		} {
			Expect(r.out).To(ContainSubstring(want))
		}
	})
})

var _ = Describe("kubectl agentrun hosts", func() {
	It("lists the hosts with readiness, load, secrets and images, and prints them as JSON with -o json", func(ctx SpecContext) {
		host := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "plugin-host", Labels: map[string]string{"podman": "5"}}}
		Expect(k8s.Create(ctx, host)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, host)).To(Succeed()) })
		host.Status = agentsv1alpha1.PodmanHostStatus{
			PodmanVersion: "5.4.2", Capacity: 4, Running: 1,
			Secrets: []string{"github-token", "anthropic-key"}, Images: []string{"localhost/agentrun-test:latest"},
			Egress: &agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy, Default: []string{"api.anthropic.com"}, Permitted: []string{"*.github.com", "registry.npmjs.org"}},
		}
		meta.SetStatusCondition(&host.Status.Conditions, metav1.Condition{Type: agentsv1alpha1.HostConditionReady, Status: metav1.ConditionTrue, Reason: agentsv1alpha1.ReasonHostReady})
		Expect(k8s.Status().Update(ctx, host)).To(Succeed())

		r := plugin("hosts")
		Expect(r.code).To(Equal(0), r.errOut)
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "READY", "LOAD", "PODMAN", "SECRETS", "IMAGES", "AGE"}))
		Expect(lines).To(ContainElement(WithTransform(func(l string) []string { return strings.Fields(l)[:6] },
			Equal([]string{"plugin-host", "True", "1/4", "5.4.2", "github-token,anthropic-key", "localhost/agentrun-test:latest"}))))
		wide := plugin("hosts", "-o", "wide").out
		Expect(wide).To(ContainSubstring("podman=5"))
		Expect(wide).To(MatchRegexp(`(?m)^plugin-host .*podman=5 +proxy +\*\.github\.com,registry\.npmjs\.org$`))

		r = plugin("hosts", "-o", "json")
		list := &agentsv1alpha1.PodmanHostList{}
		Expect(json.Unmarshal([]byte(r.out), list)).To(Succeed(), r.out)
		Expect(list.Items).To(ContainElement(WithTransform(func(h agentsv1alpha1.PodmanHost) []string { return h.Status.Secrets },
			ConsistOf("github-token", "anthropic-key"))))
	})
})

var _ = Describe("kubectl agentrun's connection flags", func() {
	It("uses the caller's credentials, so a user without rights is refused in one line", func() {
		nobody := writeKubeconfig(envtestUser("nobody"))
		r := pluginAs(nobody, "-n", "default", "describe", "x")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(HavePrefix("error: "))
		Expect(r.errOut).To(ContainSubstring(`User "nobody" cannot get resource "agentruns"`))
		Expect(strings.Count(r.errOut, "\n")).To(Equal(1))
	})
})

var _ = Describe("kubectl agentrun list", func() {
	It("lists the namespace's runs, or every namespace's with -A", func(ctx SpecContext) {
		a, b := newNamespace(), newNamespace()
		Expect(plugin("-n", a, "run", "first", "--prompt", "x").code).To(Equal(0))
		Expect(plugin("-n", b, "run", "second", "--prompt", "x").code).To(Equal(0))
		run := &agentsv1alpha1.AgentRun{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: b, Name: "second"}, run)).To(Succeed())
		run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseFailed, Host: "local-1", Attempts: 2, ExitCode: ptr.To[int32](3)}
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())

		r := plugin("-n", a, "list")
		Expect(r.code).To(Equal(0), r.errOut)
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		Expect(lines).To(HaveLen(2))
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "PHASE", "HOST", "ATTEMPTS", "EXIT", "AGE"}))
		Expect(strings.Fields(lines[1])[:5]).To(Equal([]string{"first", "<none>", "<none>", "0", "<none>"}))

		r = plugin("list", "-A")
		Expect(r.code).To(Equal(0), r.errOut)
		Expect(r.out).To(MatchRegexp(`(?m)^NAMESPACE\s+NAME\s+PHASE`))
		Expect(r.out).To(MatchRegexp(`(?m)^` + a + `\s+first\s`))
		Expect(r.out).To(MatchRegexp(`(?m)^` + b + `\s+second\s+Failed\s+local-1\s+2\s+3\s`))

		r = plugin("-n", b, "list", "-o", "name")
		Expect(r.out).To(Equal("agentrun.agents.agentrun.dev/second\n"), r.errOut)
	})
})

// hostile holds what a terminal takes for commands: an ESC sequence that
// clears the screen, an OSC 8 hyperlink ended by BEL, a C1 CSI (U+009B) and a
// carriage return that would overwrite the line.
const hostile = "ok\x1b[2J\x1b]8;;https://evil.example/\x07link\u009b31m\rSucceeded"

// expectNoControls checks that out holds no control character but the
// newlines between lines, and shows hostile's escaped.
func expectNoControls(out string) {
	GinkgoHelper()
	Expect(strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && unicode.IsControl(r) })).To(BeFalse(), "%q", out)
	Expect(out).To(ContainSubstring(`ok\x1b[2J\x1b]8;;https://evil.example/\alink\u009b31m\rSucceeded`))
}

var _ = Describe("kubectl agentrun's output", func() {
	It("escapes the control characters of every value it prints: describe, list, hosts, -o jsonpath", func(ctx SpecContext) {
		ns := newNamespace()
		Expect(plugin("-n", ns, "run", "hostile", "--prompt", "x").code).To(Equal(0))
		run := &agentsv1alpha1.AgentRun{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hostile"}, run)).To(Succeed())
		// The status is any host's to write; the API does not refuse controls there.
		run.Status = agentsv1alpha1.AgentRunStatus{
			Phase: agentsv1alpha1.PhaseSucceeded, Host: "local-1", Message: hostile,
			AgentResult: &agentsv1alpha1.AgentResult{Result: "line one\n" + hostile, SessionID: hostile},
		}
		meta.SetStatusCondition(&run.Status.Conditions, metav1.Condition{Type: "Succeeded", Status: metav1.ConditionTrue, Reason: "Completed", Message: hostile})
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		Expect(k8s.Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "hostile-", Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: "AgentRun", Namespace: ns, Name: "hostile", UID: run.UID},
			Reason:         "Launched", Message: hostile, Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "agentrun-local-1"}, LastTimestamp: metav1.Now(),
		})).To(Succeed())
		host := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "hostile-host"}}
		Expect(k8s.Create(ctx, host)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, host)).To(Succeed()) })
		host.Status = agentsv1alpha1.PodmanHostStatus{PodmanVersion: hostile, Images: []string{hostile}}
		Expect(k8s.Status().Update(ctx, host)).To(Succeed())

		for _, args := range [][]string{
			{"-n", ns, "describe", "hostile"},
			{"-n", ns, "list", "-o", "wide"},
			{"-n", ns, "list", "-o", "jsonpath={.items[0].status.message}"},
			{"hosts"},
		} {
			r := plugin(args...)
			Expect(r.code).To(Equal(0), "%v: %s", args, r.errOut)
			expectNoControls(r.out)
		}
		// A multi-line result keeps its lines, indented.
		Expect(plugin("-n", ns, "describe", "hostile").out).To(ContainSubstring("    line one\n    ok\\x1b[2J"))
	})
})
