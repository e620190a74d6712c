package kubectlplugin_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("kubectl agentrun grant", func() {
	It("lets a user and a ServiceAccount use one Podman secret in one namespace, and run again changes nothing", func(ctx SpecContext) {
		ns, other := newNamespace(), newNamespace()
		r := plugin("-n", ns, "grant", "github-token", "--to", "dora")
		Expect(r.code).To(Equal(0), r.errOut)
		Expect(r.out).To(Equal("user dora may use the Podman secret github-token in namespace " + ns +
			" (role.rbac.authorization.k8s.io/agentrun-podman-secret-github-token)\n"))
		Expect(plugin("-n", ns, "grant", "github-token", "--to", "dora").code).To(Equal(0))
		r = plugin("-n", ns, "grant", "github-token", "--serviceaccount", ns+":robot")
		Expect(r.code).To(Equal(0), r.errOut)

		binding := &rbacv1.RoleBinding{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "agentrun-podman-secret-github-token"}, binding)).To(Succeed())
		Expect(binding.Subjects).To(HaveLen(2), "dora once, and robot")

		Eventually(func() bool { return mayUse(ctx, ns, "github-token", "dora") }).WithContext(ctx).Should(BeTrue())
		Expect(mayUse(ctx, ns, "github-token", "system:serviceaccount:"+ns+":robot", "system:serviceaccounts", "system:serviceaccounts:"+ns)).To(BeTrue())
		Expect(mayUse(ctx, ns, "gitlab-token", "dora")).To(BeFalse(), "only the secret granted")
		Expect(mayUse(ctx, other, "github-token", "dora")).To(BeFalse(), "only in the namespace granted")
	})

	It("refuses a name Podman would not take, and needs exactly one subject", func() {
		ns := newNamespace()
		r := plugin("-n", ns, "grant", "a,b", "--to", "dora")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(ContainSubstring("rule: Podman secret name"))
		r = plugin("-n", ns, "grant", "github-token")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(ContainSubstring("give one of --to USER and --serviceaccount NAMESPACE:NAME"))
		r = plugin("-n", ns, "grant", "github-token", "--serviceaccount", "robot")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(ContainSubstring("want NAMESPACE:NAME"))
	})
})

// mayUse asks the API server whether user (with groups) may use the Podman
// secret name in namespace.
func mayUse(ctx context.Context, namespace, name, user string, groups ...string) bool {
	GinkgoHelper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: append(groups, "system:authenticated"),
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: "use", Group: "agents.agentrun.dev", Resource: "podmansecrets", Name: name,
		},
	}}
	Expect(k8s.Create(ctx, sar)).To(Succeed())
	return sar.Status.Allowed
}
