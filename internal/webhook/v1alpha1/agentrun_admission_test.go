package v1alpha1_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// referenceRun is the reference API's example request as an AgentRun.
func referenceRun() *agentsv1alpha1.AgentRun {
	return &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: "review-" + rand.String(6), Namespace: "default"},
		Spec: agentsv1alpha1.AgentRunSpec{
			Prompt:  "Review the open PRs using gh CLI",
			Workdir: "/workspace",
			Podman: agentsv1alpha1.PodmanSpec{
				Volumes: []string{"/home/user/myrepo:/workspace"},
				SecretsEnv: map[string]agentsv1alpha1.SecretName{
					"GH_TOKEN":     "github-token",
					"GITLAB_TOKEN": "gitlab-token",
				},
			},
		},
	}
}

func manySecrets(n int) map[string]agentsv1alpha1.SecretName {
	m := map[string]agentsv1alpha1.SecretName{}
	for i := range n {
		m[fmt.Sprintf("VAR_%d", i)] = "tok"
	}
	return m
}

// expectRefused asserts that the API server refused the run as invalid with a
// message naming every given field and rule.
func expectRefused(err error, fieldAndRules ...string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred())
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
	for _, s := range fieldAndRules {
		Expect(err.Error()).To(ContainSubstring(s))
	}
}

type invalidCase struct {
	mutate func(*agentsv1alpha1.AgentRun)
	// field and rule as both CEL and the webhook name them.
	field, rule string
}

// webhookWords are the webhook's own field and rule where the API server's
// schema answers first, in its own words (by those words).
var webhookWords = map[string][2]string{
	"may not be more than 253 bytes": {"spec.podman.secretsEnv[GH_TOKEN]", "(rule: secret name)"},
	"must have at most 50 items":     {"spec.podman.secretsEnv", "(rule: max per run)"},
	"Duplicate value":                {"spec.egress.allow[1]", "(rule: unique egress names)"},
}

func egressAllow(names ...string) func(*agentsv1alpha1.AgentRun) {
	return func(r *agentsv1alpha1.AgentRun) { r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: names} }
}

// withCredential lets the run reach api.github.com and github.com and adds
// a credential for api.github.com from github-token, as edit changes it.
func withCredential(edit func(*agentsv1alpha1.EgressCredential)) func(*agentsv1alpha1.AgentRun) {
	return func(r *agentsv1alpha1.AgentRun) {
		c := agentsv1alpha1.EgressCredential{Host: "api.github.com", SecretName: "github-token"}
		edit(&c)
		r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{"api.github.com", "github.com"}, Credentials: []agentsv1alpha1.EgressCredential{c}}
	}
}

var documentedRules = []TableEntry{
	Entry("env var format in secretsEnv (reference)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.SecretsEnv["1BAD"] = "tok" },
		"spec.podman.secretsEnv", "(rule: env var format)"}),
	Entry("env var format in env (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"MY-VAR": "x"}
		},
		"spec.podman.env", "(rule: env var format)"}),
	Entry("LD_PRELOAD in secretsEnv (reference)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.SecretsEnv["LD_PRELOAD"] = "tok" },
		"spec.podman.secretsEnv", "(rule: blocked vars)"}),
	Entry("LD_LIBRARY_PATH in env (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"LD_LIBRARY_PATH": "/tmp"}
		},
		"spec.podman.env", "(rule: blocked vars)"}),
	Entry("AGENT_PROMPT in env (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"AGENT_PROMPT": "x"}
		},
		"spec.podman.env", "(rule: reserved vars)"}),
	Entry("empty secret name (reference)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.SecretsEnv["GH_TOKEN"] = "" },
		"spec.podman.secretsEnv", "(rule: secret name)"}),
	Entry("254-character secret name (reference)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.SecretsEnv["GH_TOKEN"] = agentsv1alpha1.SecretName(strings.Repeat("a", 254))
		},
		"spec.podman.secretsEnv.GH_TOKEN", "may not be more than 253 bytes"}),
	Entry("secret name with a comma (Podman's pattern)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.SecretsEnv["GH_TOKEN"] = "tok,type=mount" },
		"spec.podman.secretsEnv", "(rule: Podman secret name)"}),
	Entry("secret name with a space (Podman's pattern)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.SecretsEnv["GH_TOKEN"] = "my token" },
		"spec.podman.secretsEnv", "(rule: Podman secret name)"}),
	// The schema's maxProperties answers before any CEL rule or the webhook
	// runs, in the API server's own words.
	Entry("51 secrets (reference)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.SecretsEnv = manySecrets(51) },
		"spec.podman.secretsEnv", "must have at most 50 items"}),
	Entry("a variable in env and secretsEnv (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"GH_TOKEN": "plain"}
		},
		"spec.podman", "(rule: one source per variable)"}),
	Entry("relative volume path (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"myrepo:/workspace"} },
		"spec.podman.volumes", "(rule: volume format)"}),
	Entry("unknown volume option (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/src:/workspace:suid"} },
		"spec.podman.volumes", "(rule: volume options)"}),
	Entry("two volumes on one container path (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Podman.Volumes = []string{"/a:/workspace", "/b:/workspace"} },
		"spec.podman.volumes", "(rule: unique container paths)"}),
	Entry("hostSelector In without values (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn}}}
		},
		"spec.hostSelector", "(rule: label selector)"}),
	Entry("hostSelector with an unknown operator (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: "Near"}}}
		},
		"spec.hostSelector", "(rule: label selector)"}),
	Entry("relative workdir (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Workdir = "workspace" },
		"spec.workdir", "(rule: absolute paths)"}),
	Entry("image with a terminal escape sequence (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) { r.Spec.Image = "localhost/agent\x1b[2J:1" },
		"spec.image", "(rule: no control characters)"}),
	Entry("notify URL with a C1 control (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Notify = &agentsv1alpha1.NotifySpec{URL: "https://ci.example.com/done\u009b2J", SecretName: "hook-key"}
		},
		"spec.notify.url", "(rule: no control characters)"}),
	Entry("an IP address in egress.allow (ours)", invalidCase{egressAllow("github.com", "169.254.169.254:80"), "spec.egress.allow[1]", "(rule: egress name)"}),
	Entry("a URL in egress.allow (ours)", invalidCase{egressAllow("https://github.com/org"), "spec.egress.allow[0]", "(rule: egress name)"}),
	Entry("a wildcard inside a name in egress.allow (ours)", invalidCase{egressAllow("api.*.example.com"), "spec.egress.allow[0]", "(rule: egress name)"}),
	Entry("a port with a leading zero in egress.allow (ours)", invalidCase{egressAllow("github.com:0443"), "spec.egress.allow[0]", "(rule: egress name)"}),
	// A list of type set answers duplicates in the API server's own words.
	Entry("a name twice in egress.allow (ours)", invalidCase{egressAllow("github.com", "github.com"), "spec.egress.allow[1]", "Duplicate value"}),
	Entry("a credential format without {} (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Format = "Bearer" }),
		"spec.egress.credentials[0].format", "(rule: credential format)"}),
	Entry("a credential format with a newline (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Format = "Bearer {}\r\nX-Evil: 1" }),
		"spec.egress.credentials[0].format", "(rule: credential format)"}),
	Entry("a credential format with an unknown function (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Format = "Basic sha256(x-access-token:{})" }),
		"spec.egress.credentials[0].format", "(rule: credential format)"}),
	Entry("a credential in Content-Length (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Header = "Content-Length" }),
		"spec.egress.credentials[0].header", "(rule: credential header)"}),
	Entry("a credential header with a colon (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Header = "Authorization:" }),
		"spec.egress.credentials[0].header", "(rule: credential header)"}),
	// CEL names the list (the rule spans allow and credentials), the
	// webhook the host.
	Entry("a credential for a host egress.allow does not let through (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Host = "gist.github.com" }),
		"spec.egress.credentials", "(rule: credential host allowed)"}),
	Entry("a credential for a wildcard (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Host = "*.github.com" })(r)
			r.Spec.Egress.Allow = []string{"*.github.com"}
		},
		"spec.egress.credentials[0].host", "(rule: credential host)"}),
	Entry("a credential for a name with a port (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			withCredential(func(c *agentsv1alpha1.EgressCredential) { c.Host = "github.com:443" })(r)
			r.Spec.Egress.Allow = []string{"github.com:443"}
		},
		"spec.egress.credentials[0].host", "(rule: credential host)"}),
	Entry("a credential's secret name with a space (Podman's pattern)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.SecretName = "github token" }),
		"spec.egress.credentials[0].secretName", "(rule: Podman secret name)"}),
	Entry("LD_PRELOAD as a credential's placeholder (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.PlaceholderEnv = []string{"LD_PRELOAD"} }),
		"spec.egress.credentials[0].placeholderEnv[0]", "(rule: blocked vars)"}),
	Entry("a credential's placeholder also in secretsEnv (ours)", invalidCase{
		withCredential(func(c *agentsv1alpha1.EgressCredential) { c.PlaceholderEnv = []string{"GH_TOKEN"} }),
		"spec.egress.credentials", "(rule: one source per variable)"}),
	Entry("egress with a network of the run's own (ours)", invalidCase{
		func(r *agentsv1alpha1.AgentRun) {
			egressAllow("github.com")(r)
			r.Spec.Podman.Network = "bridge"
		},
		"spec.podman.network", "(rule: egress without network)"}),
}

var _ = Describe("Creating an AgentRun", func() {
	It("accepts the reference example, with and without the webhook", func(sctx SpecContext) {
		for _, c := range []client.Client{webhookClient, celOnlyClient} {
			Expect(c.Create(sctx, referenceRun())).To(Succeed())
		}
	})

	It("accepts a run with spec.egress, with and without the webhook", func(sctx SpecContext) {
		for _, c := range []client.Client{webhookClient, celOnlyClient} {
			run := referenceRun()
			egressAllow("github.com", "*.githubusercontent.com", "registry.npmjs.org:443")(run)
			Expect(c.Create(sctx, run)).To(Succeed())
		}
	})

	It("accepts GitHub's credentials in both forms, with and without the webhook, and defaults the header and format", func(sctx SpecContext) {
		for _, c := range []client.Client{webhookClient, celOnlyClient} {
			run := referenceRun()
			delete(run.Spec.Podman.SecretsEnv, "GH_TOKEN")
			run.Spec.Egress = &agentsv1alpha1.EgressSpec{
				Allow: []string{"api.github.com", "github.com:443"},
				Credentials: []agentsv1alpha1.EgressCredential{
					{Host: "api.github.com", SecretName: "github-token", PlaceholderEnv: []string{"GH_TOKEN"}},
					{Host: "github.com", SecretName: "github-token", Header: "authorization", Format: "Basic base64(x-access-token:{})"},
				},
			}
			Expect(c.Create(sctx, run)).To(Succeed())
			Expect(run.Spec.Egress.Credentials[0].Header).To(Equal("Authorization"))
			Expect(run.Spec.Egress.Credentials[0].Format).To(Equal("Bearer {}"))
			Expect(run.Spec.Egress.Credentials[1].Format).To(Equal("Basic base64(x-access-token:{})"))

			By("cancelling it: the defaults do not count as a change")
			Expect(c.Patch(sctx, run, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancel":true}}`)))).To(Succeed())
			changed := run.DeepCopy()
			changed.Spec.Egress.Credentials[0].Format = "token {}"
			expectRefused(c.Update(sctx, changed), "spec", "(rule: immutable spec)")
		}
	})

	It("accepts exactly 50 secrets", func(sctx SpecContext) {
		for _, c := range []client.Client{webhookClient, celOnlyClient} {
			run := referenceRun()
			run.Spec.Podman.SecretsEnv = manySecrets(50)
			Expect(c.Create(sctx, run)).To(Succeed())
		}
	})

	// The API server's schema and CEL rules answer before it calls the
	// webhook, so the webhook's own code for each rule is asked directly.
	DescribeTable("refuses a run that breaks a rule, naming the field and the rule",
		func(sctx SpecContext, tc invalidCase) {
			By("CEL only")
			run := referenceRun()
			tc.mutate(run)
			expectRefused(celOnlyClient.Create(sctx, run), tc.field, tc.rule)

			By("the webhook's own check")
			run = referenceRun()
			tc.mutate(run)
			_, err := (&webhookv1alpha1.AgentRunValidator{}).ValidateCreate(sctx, run)
			field, rule := tc.field, tc.rule
			if words, ok := webhookWords[tc.rule]; ok {
				field, rule = words[0], words[1]
			}
			expectRefused(err, field, rule)
		},
		documentedRules,
	)

	It("reports every violation at once", func(sctx SpecContext) {
		for _, c := range []client.Client{webhookClient, celOnlyClient} {
			run := referenceRun()
			run.Spec.Podman.SecretsEnv["1BAD"] = "tok"
			run.Spec.Podman.SecretsEnv["LD_PRELOAD"] = "tok"
			run.Spec.Podman.Volumes = []string{"relative:/workspace"}
			expectRefused(c.Create(sctx, run), "(rule: env var format)", "(rule: blocked vars)", "(rule: volume format)")
		}
	})

	DescribeTable("refuses, through the webhook, what CEL does not check, naming the exact entry",
		func(sctx SpecContext, mutate func(*agentsv1alpha1.AgentRun), field, rule string) {
			run := referenceRun()
			mutate(run)
			Expect(celOnlyClient.Create(sctx, run.DeepCopy())).To(Succeed(), "CEL alone accepts this run")
			expectRefused(webhookClient.Create(sctx, run), field, rule, "admission webhook", "denied the request")
		},
		Entry("a volume path with ..", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Volumes = []string{"/home/user/../../etc:/workspace"}
		}, "spec.podman.volumes[0]", "(rule: clean paths)"),
		Entry("ro and rw together", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Volumes = []string{"/src:/workspace:ro,rw"}
		}, "spec.podman.volumes[0]", "(rule: one option of each kind)"),
		Entry("mounting over the container's /", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Podman.Volumes = []string{"/src:/"}
		}, "spec.podman.volumes[0]", "(rule: volume format)"),
		Entry("a workdir with ..", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Workdir = "/workspace/../etc"
		}, "spec.workdir", "(rule: clean paths)"),
	)
})

var _ = Describe("Secret names", func() {
	It("are checked by the CRD's CEL rules as the real API server accepted them", func(sctx SpecContext) {
		// envtest fails to start when the API server refuses the CRD (for
		// one, when a CEL rule's estimated cost exceeds the budget); this
		// shows the rule is in the CRD it accepted, not in a stale copy.
		// Read as unstructured: the typed CRD API is not a dependency.
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		Expect(webhookClient.Get(sctx, client.ObjectKey{Name: "agentruns.agents.agentrun.dev"}, crd)).To(Succeed())
		conditions, _, err := unstructured.NestedSlice(crd.Object, "status", "conditions")
		Expect(err).NotTo(HaveOccurred())
		Expect(conditions).To(ContainElement(And(HaveKeyWithValue("type", "Established"), HaveKeyWithValue("status", "True"))))
		versions, _, err := unstructured.NestedSlice(crd.Object, "spec", "versions")
		Expect(err).NotTo(HaveOccurred())
		Expect(versions).To(HaveLen(1))
		rules, _, err := unstructured.NestedSlice(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec",
			"properties", "podman", "properties", "secretsEnv", "additionalProperties", "x-kubernetes-validations")
		Expect(err).NotTo(HaveOccurred())
		Expect(rules).To(ContainElement(HaveKeyWithValue("message", ContainSubstring("(rule: Podman secret name)"))))
	})

	DescribeTable("that Podman's pattern refuses are refused with and without the webhook, naming the variable",
		func(sctx SpecContext, name string) {
			for plane, c := range map[string]client.Client{"webhook": webhookClient, "CEL only": celOnlyClient} {
				By(plane)
				run := referenceRun()
				run.Spec.Podman.SecretsEnv["GH_TOKEN"] = agentsv1alpha1.SecretName(name)
				expectRefused(c.Create(sctx, run), "spec.podman.secretsEnv[GH_TOKEN]", "(rule: Podman secret name)")
			}
			// The API server's CEL rule answers before the webhook is
			// called, so the webhook's own check is asked directly.
			By("the webhook's own check")
			run := referenceRun()
			run.Spec.Podman.SecretsEnv["GH_TOKEN"] = agentsv1alpha1.SecretName(name)
			_, err := (&webhookv1alpha1.AgentRunValidator{}).ValidateCreate(sctx, run)
			expectRefused(err, "spec.podman.secretsEnv[GH_TOKEN]", "(rule: Podman secret name)")
		},
		Entry("a semicolon", "a;b"),
		Entry("command substitution", "$(id)"),
		Entry("a backquote", "a`id`"),
		Entry("a newline", "gh\ntoken"),
		Entry("a leading dash", "-leading-dash"),
	)

	DescribeTable("that Podman's pattern accepts are accepted with and without the webhook",
		func(sctx SpecContext, name string) {
			for _, c := range []client.Client{webhookClient, celOnlyClient} {
				run := referenceRun()
				run.Spec.Podman.SecretsEnv["GH_TOKEN"] = agentsv1alpha1.SecretName(name)
				Expect(c.Create(sctx, run)).To(Succeed())
			}
		},
		Entry("dashes", "github-token"),
		Entry("a dot, an underscore and a digit", "gh.token_2"),
	)
})

var _ = Describe("Volume options that change files on the host", func() {
	It("are accepted with a warning naming the volume and what the option does", func(sctx SpecContext) {
		run := referenceRun()
		run.Spec.Podman.Volumes = []string{"/home/user/myrepo:/workspace", "/data:/data:ro,Z", "/cache:/cache:U", "/shared:/shared:z"}
		warnings, err := (&webhookv1alpha1.AgentRunValidator{}).ValidateCreate(sctx, run)
		Expect(err).NotTo(HaveOccurred())
		Expect(warnings).To(ConsistOf(
			HavePrefix("spec.podman.volumes[1]: option Z relabels every file under the host path for SELinux"),
			HavePrefix("spec.podman.volumes[2]: option U changes the owner of every file under the host path"),
			HavePrefix("spec.podman.volumes[3]: option z relabels every file under the host path for SELinux"),
		))
		for _, w := range warnings {
			Expect(w).To(HaveSuffix("hosts refuse it at launch unless their configuration sets host.volumes.allowRelabel"))
		}
	})

	It("bring no warning when no option changes the host", func(sctx SpecContext) {
		run := referenceRun()
		run.Spec.Podman.Volumes = []string{"/home/user/myrepo:/workspace:ro,nosuid,nodev"}
		warnings, err := (&webhookv1alpha1.AgentRunValidator{}).ValidateCreate(sctx, run)
		Expect(err).NotTo(HaveOccurred())
		Expect(warnings).To(BeEmpty())
	})
})

var _ = Describe("Updating an AgentRun", func() {
	for name, c := range map[string]*client.Client{"webhook": &webhookClient, "CEL only": &celOnlyClient} {
		Context("with "+name, func() {
			It("allows cancelling, refuses un-cancelling and any other spec change", func(sctx SpecContext) {
				run := referenceRun()
				Expect((*c).Create(sctx, run)).To(Succeed())

				changed := run.DeepCopy()
				changed.Spec.Prompt = "Something else"
				expectRefused((*c).Update(sctx, changed), "spec", "(rule: immutable spec)")

				changed = run.DeepCopy()
				changed.Spec.Podman.SecretsEnv["EXTRA"] = "extra-token"
				expectRefused((*c).Update(sctx, changed), "spec", "(rule: immutable spec)")

				changed = run.DeepCopy()
				changed.Spec.Timeout = &metav1.Duration{Duration: 60_000_000_000}
				expectRefused((*c).Update(sctx, changed), "spec", "(rule: immutable spec)")

				patch := client.MergeFrom(run.DeepCopy())
				run.Spec.Cancel = true
				Expect((*c).Patch(sctx, run, patch)).To(Succeed())

				expectRefused((*c).Patch(sctx, run, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancel":false}}`))),
					"spec", "(rule: cancel is final)")
			})

			It("keeps the Kueue queue label as the run was created with, and lets other labels change", func(sctx SpecContext) {
				const queueLabel = "metadata.labels[kueue.x-k8s.io/queue-name]"
				queued := referenceRun()
				queued.Labels = map[string]string{agentsv1alpha1.LabelQueueName: "team-queue"}
				Expect((*c).Create(sctx, queued)).To(Succeed())
				unqueued := referenceRun()
				Expect((*c).Create(sctx, unqueued)).To(Succeed())

				By("moving the run to another queue")
				changed := queued.DeepCopy()
				changed.Labels[agentsv1alpha1.LabelQueueName] = "other-queue"
				// The API server enforces an admission policy a moment
				// after it is created (CEL only: config/kueue's).
				Eventually(func() error {
					return (*c).Update(sctx, changed.DeepCopy(), client.DryRunAll)
				}).WithContext(sctx).WithTimeout(30 * time.Second).ShouldNot(Succeed())
				expectRefused((*c).Update(sctx, changed), queueLabel, "(rule: immutable queue)")

				By("taking the run out of its queue")
				expectRefused((*c).Patch(sctx, queued.DeepCopy(), client.RawPatch(types.MergePatchType,
					[]byte(`{"metadata":{"labels":{"kueue.x-k8s.io/queue-name":null}}}`))), queueLabel, "(rule: immutable queue)")

				By("putting a run created without a queue into one")
				changed = unqueued.DeepCopy()
				changed.Labels = map[string]string{agentsv1alpha1.LabelQueueName: "team-queue"}
				expectRefused((*c).Update(sctx, changed), queueLabel, "(rule: immutable queue)")

				By("changing another label of the queued run, and cancelling it")
				patch := client.MergeFrom(queued.DeepCopy())
				queued.Labels["team"] = "a"
				queued.Spec.Cancel = true
				Expect((*c).Patch(sctx, queued, patch)).To(Succeed())
				Expect(queued.Labels).To(HaveKeyWithValue(agentsv1alpha1.LabelQueueName, "team-queue"))
			})
		})
	}
})

var _ = Describe("A run stored before a create rule was tightened", func() {
	It("can still be cancelled, get and lose a finalizer and be deleted, but not changed", func(sctx SpecContext) {
		run := referenceRun()
		Expect(webhookClient.Create(sctx, run)).To(Succeed())

		stricterPrompts.Store(true)
		DeferCleanup(func() { stricterPrompts.Store(false) })
		// The stored run would now be refused at creation.
		expectRefused(webhookClient.Create(sctx, referenceRun()), "spec.prompt", "(rule: tightened prompt size)")

		By("cancelling it")
		Expect(webhookClient.Patch(sctx, run, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancel":true}}`)))).To(Succeed())
		Expect(run.Spec.Cancel).To(BeTrue())

		By("adding a finalizer, as a host does before it launches a container")
		Expect(webhookClient.Patch(sctx, run, client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"finalizers":["agents.agentrun.dev/container"]}}`)))).To(Succeed())

		By("refusing a change to the prompt")
		changed := run.DeepCopy()
		changed.Spec.Prompt = "Short"
		expectRefused(webhookClient.Update(sctx, changed), "spec", "(rule: immutable spec)")

		By("deleting it: the finalizer holds it until removed")
		Expect(webhookClient.Delete(sctx, run)).To(Succeed())
		Expect(webhookClient.Get(sctx, client.ObjectKeyFromObject(run), run)).To(Succeed())
		Expect(run.DeletionTimestamp).NotTo(BeNil())
		Expect(webhookClient.Patch(sctx, run, client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"finalizers":null}}`)))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(webhookClient.Get(sctx, client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{}))
		}).Should(BeTrue(), "the run is gone once its finalizer is removed")
	})
})
