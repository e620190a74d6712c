package v1alpha1_test

import (
	"context"
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// Using a Podman secret or pinning to a Podman host is the verb use on
// podmansecrets or podmanhosts, per name, in the run's namespace. The same
// specs run against the webhook alone (its SubjectAccessReviews) and against
// config/default's admission policy alone (CEL's authorizer, no webhook):
// each must give the same answers on its own.
const (
	teamA = "team-a"
	teamB = "team-b"
	// alice may use github-token in team-a, and nothing else.
	alice = "alice"
	// robot is a ServiceAccount of team-a with the same grant.
	robot = "system:serviceaccount:team-a:robot"
)

var _ = Describe("Using Podman secrets and hosts", func() {
	for _, tc := range []struct {
		name     string
		config   func() *rest.Config
		byPolicy bool
	}{
		{"checked by the webhook alone (no admission policy)", func() *rest.Config { return webhookConfig }, false},
		{"checked by the admission policy alone (no webhook)", func() *rest.Config { return celConfig }, true},
	} {
		// The specs are independent; they share the users and grants
		// BeforeAll makes.
		Context(tc.name, Ordered, ContinueOnFailure, func() {
			var admin client.Client
			as := func(user string, groups ...string) client.Client {
				GinkgoHelper()
				cfg := rest.CopyConfig(tc.config())
				cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
				c, err := client.New(cfg, client.Options{Scheme: useScheme()})
				Expect(err).NotTo(HaveOccurred())
				return c
			}
			var aliceClient, robotClient client.Client

			// expectUseRefused checks that err refuses the use of name (a
			// Podman secret or host) by user in namespace, naming the Role
			// rule that would allow it and, from the webhook, the field.
			expectUseRefused := func(err error, user, what, name, namespace, fieldPath string) {
				GinkgoHelper()
				Expect(err).To(HaveOccurred(), "the run was admitted")
				msg := err.Error()
				Expect(msg).To(ContainSubstring("user %s may not use the %s %s in namespace %s", user, what, name, namespace))
				Expect(msg).To(ContainSubstring("resourceNames: [%s], verbs: [use]}", name))
				if tc.byPolicy {
					Expect(msg).To(ContainSubstring("ValidatingAdmissionPolicy 'agentrun-podman-use'"))
				} else {
					Expect(msg).To(ContainSubstring(fieldPath + ": Forbidden"))
				}
				GinkgoWriter.Println("refused as expected:", msg)
			}

			BeforeAll(func(ctx SpecContext) {
				var err error
				admin, err = client.New(tc.config(), client.Options{Scheme: useScheme()})
				Expect(err).NotTo(HaveOccurred())
				for _, ns := range []string{teamA, teamB} {
					Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
				}
				// Everyone may write runs anywhere; what they name is the question.
				grant(ctx, admin, "", "run-author", rbacv1.PolicyRule{
					APIGroups: []string{agentsv1alpha1.GroupVersion.Group}, Resources: []string{"agentruns"},
					Verbs: []string{"create", "get", "update", "patch"},
				}, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:authenticated"})
				grant(ctx, admin, teamA, "github-token", useRule("podmansecrets", "github-token"),
					rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: alice},
					rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "robot", Namespace: teamA})
				aliceClient = as(alice)
				robotClient = as(robot, "system:serviceaccounts", "system:serviceaccounts:"+teamA)
				if tc.byPolicy {
					// The API server enforces a policy a moment after it is created.
					Eventually(func(g Gomega) {
						g.Expect(aliceClient.Create(ctx, runNaming(teamA, "gitlab-token"), client.DryRunAll)).NotTo(Succeed())
					}).WithContext(ctx).Should(Succeed())
				}
			})

			It("admits a run naming a secret the user may use, and refuses one naming another", func(ctx SpecContext) {
				Expect(aliceClient.Create(ctx, runNaming(teamA, "github-token"))).To(Succeed())
				err := aliceClient.Create(ctx, runNaming(teamA, "github-token", "gitlab-token"))
				expectUseRefused(err, alice, "Podman secret", "gitlab-token", teamA, "spec.podman.secretsEnv[VAR_1]")
				Expect(err.Error()).NotTo(ContainSubstring("Podman secret github-token"))
			})

			It("checks the credentials' and the callback's secrets", func(ctx SpecContext) {
				run := runNaming(teamA)
				run.Spec.Egress = &agentsv1alpha1.EgressSpec{
					Allow:       []string{"api.github.com", "gitlab.com"},
					Credentials: []agentsv1alpha1.EgressCredential{{Host: "api.github.com", SecretName: "github-token"}},
				}
				run.Spec.Notify = &agentsv1alpha1.NotifySpec{URL: "https://hooks.example.com/done", SecretName: "github-token"}
				Expect(aliceClient.Create(ctx, run.DeepCopy())).To(Succeed())

				credential := run.DeepCopy()
				credential.Name += "-credential"
				credential.Spec.Egress.Credentials = append(credential.Spec.Egress.Credentials,
					agentsv1alpha1.EgressCredential{Host: "gitlab.com", SecretName: "gitlab-token"})
				expectUseRefused(aliceClient.Create(ctx, credential), alice, "Podman secret", "gitlab-token", teamA,
					"spec.egress.credentials[1].secretName")

				notify := run.DeepCopy()
				notify.Name += "-notify"
				notify.Spec.Notify.SecretName = "signing-key"
				expectUseRefused(aliceClient.Create(ctx, notify), alice, "Podman secret", "signing-key", teamA,
					"spec.notify.secretName")
			})

			It("holds a ServiceAccount's grant to its namespace", func(ctx SpecContext) {
				Expect(robotClient.Create(ctx, runNaming(teamA, "github-token"))).To(Succeed())
				expectUseRefused(robotClient.Create(ctx, runNaming(teamB, "github-token")), robot, "Podman secret", "github-token", teamB,
					"spec.podman.secretsEnv[VAR_0]")
			})

			It("grants every secret of a namespace with a rule without names, however many a run names", func(ctx SpecContext) {
				names := make([]agentsv1alpha1.SecretName, 40)
				for i := range names {
					names[i] = agentsv1alpha1.SecretName(fmt.Sprintf("token-%d", i))
				}
				bob := as("bob")
				err := bob.Create(ctx, runNaming(teamB, names...))
				// More names than the admission policy checks one by one (the
				// policy reports its first refusal, the webhook every field's).
				Expect(err).To(MatchError(ContainSubstring("user bob may not use 40 distinct Podman secrets in namespace team-b")))
				Expect(err).To(MatchError(ContainSubstring("(rule: use Podman secrets)")))
				if !tc.byPolicy {
					Expect(err).To(MatchError(ContainSubstring("user bob may not use the Podman secret token-")))
				}
				grant(ctx, admin, teamB, "all-secrets", useRule("podmansecrets"),
					rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob"})
				Eventually(func() error {
					return bob.Create(ctx, runNaming(teamB, names...))
				}).WithContext(ctx).Should(Succeed())
			})

			It("needs use on the Podman host a run is pinned to, and nothing for an unpinned run", func(ctx SpecContext) {
				pinned := runNaming(teamA)
				pinned.Spec.HostName = "gpu-1"
				expectUseRefused(aliceClient.Create(ctx, pinned.DeepCopy()), alice, "Podman host", "gpu-1", teamA, "spec.hostName")
				Expect(aliceClient.Create(ctx, runNaming(teamA))).To(Succeed())

				grant(ctx, admin, teamA, "gpu-1", useRule("podmanhosts", "gpu-1"),
					rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: alice})
				Eventually(func() error {
					return aliceClient.Create(ctx, pinned.DeepCopy())
				}).WithContext(ctx).Should(Succeed())
			})

			It("never checks again on update: a run whose creator lost the grant can be cancelled", func(ctx SpecContext) {
				carol := as("carol")
				grant(ctx, admin, teamA, "carol-github-token", useRule("podmansecrets", "github-token"),
					rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "carol"})
				run := runNaming(teamA, "github-token")
				Eventually(func() error {
					return carol.Create(ctx, run.DeepCopy())
				}).WithContext(ctx).Should(Succeed())
				Expect(carol.List(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace(teamA))).NotTo(Succeed(),
					"carol may only create and change runs")

				Expect(admin.Delete(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "carol-github-token", Namespace: teamA}})).To(Succeed())
				Eventually(func() error {
					return carol.Create(ctx, runNaming(teamA, "github-token"), client.DryRunAll)
				}).WithContext(ctx).ShouldNot(Succeed(), "carol still may use github-token")

				stored := &agentsv1alpha1.AgentRun{}
				Expect(carol.Get(ctx, client.ObjectKey{Namespace: teamA, Name: run.Name}, stored)).To(Succeed())
				base := stored.DeepCopy()
				stored.Spec.Cancel = true
				Expect(carol.Patch(ctx, stored, client.MergeFrom(base))).To(Succeed())
			})
		})
	}
})

var runCount int

// runNaming is a run of namespace that names secrets in spec.podman.secretsEnv,
// the first as VAR_0, the next VAR_1, ...
func runNaming(namespace string, secrets ...agentsv1alpha1.SecretName) *agentsv1alpha1.AgentRun {
	runCount++
	env := map[string]agentsv1alpha1.SecretName{}
	for i, s := range secrets {
		env[fmt.Sprintf("VAR_%d", i)] = s
	}
	return &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("use-%d", runCount), Namespace: namespace},
		Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "Say hello", Podman: agentsv1alpha1.PodmanSpec{SecretsEnv: env}},
	}
}

// useRule is the rule that grants use on names of resource (podmansecrets,
// podmanhosts), or on every name when none is given.
func useRule(resource string, names ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{
		APIGroups: []string{agentsv1alpha1.GroupVersion.Group}, Resources: []string{resource},
		ResourceNames: names, Verbs: []string{"use"},
	}
}

// grant makes a Role (a ClusterRole when namespace is "") with rule and
// binds it to subjects.
func grant(ctx context.Context, c client.Client, namespace, name string, rule rbacv1.PolicyRule, subjects ...rbacv1.Subject) {
	GinkgoHelper()
	meta := metav1.ObjectMeta{Name: name, Namespace: namespace}
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
	if namespace == "" {
		ref.Kind = "ClusterRole"
		Expect(c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{rule}})).To(Succeed())
		Expect(c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subjects})).To(Succeed())
		return
	}
	Expect(c.Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{rule}})).To(Succeed())
	Expect(c.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subjects})).To(Succeed())
}

// useScheme knows runs, namespaces and RBAC.
func useScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	Expect(corev1.AddToScheme(scheme)).To(Succeed())
	Expect(rbacv1.AddToScheme(scheme)).To(Succeed())
	Expect(agentsv1alpha1.AddToScheme(scheme)).To(Succeed())
	return scheme
}
