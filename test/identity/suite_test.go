// Package identity proves the per-host identities of config/host on a real
// API server: the roles and policies `kubectl apply -k config/host` installs,
// the accounts hack/host-identity.sh prints, and the reconciler's ClusterRole
// from config/default, applied to envtest's kube-apiserver; then hosts a and b
// (and the fleet controller) write as themselves, and the
// ValidatingAdmissionPolicies allow or refuse.
package identity_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

const (
	// systemNamespace is where the hosts' accounts and Leases live.
	systemNamespace = "agentrun-system"
	// runNamespace holds the test's AgentRuns.
	runNamespace = "runs"
	// movedNamespace holds host "m"'s account and Leases: an install in
	// another namespace than config/default's (AGENTRUN_NAMESPACE).
	movedNamespace = "tools"
	// fleetUser is the in-cluster controller's service account as
	// config/default names it: the policies must not select it.
	fleetUser = "system:serviceaccount:agentrun-system:agentrun-controller-manager"
)

// The ClusterRoles of config/default the fleet controller is bound to; hosts
// are bound to the first only.
var fleetRoles = []string{"agentrun-manager-role", "agentrun-fleet-role"}

// The policies config/host installs.
var policies = []string{"agentrun-host-runs", "agentrun-host-podmanhosts", "agentrun-host-leases", "agentrun-host-records"}

var (
	env   *envtest.Environment
	admin client.Client
	// hostA and hostB are the identities of hosts "a" and "b" (the
	// ServiceAccounts agentrun-host-a and agentrun-host-b); dotted is host
	// "node1.example", whose leader election lease name differs from
	// agentrun-host-<name>; moved is host "m", whose account is in
	// movedNamespace; fleet is the in-cluster controller.
	hostA, hostB, dotted, moved, fleet client.Client
	// hostAConfig is host "a"'s connection, for requests read to their
	// headers.
	hostAConfig *rest.Config
)

func TestIdentity(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Host identity suite (envtest, ValidatingAdmissionPolicy)")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(agentsv1alpha1.AddToScheme(scheme)).To(Succeed())

	var err error
	env, err = testenv.New(false)
	Expect(err).NotTo(HaveOccurred())
	cfg, err := testenv.Start(env)
	Expect(err).NotTo(HaveOccurred())
	admin, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	for _, ns := range []string{systemNamespace, runNamespace, movedNamespace} {
		Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	}

	// The reconciler's ClusterRole as config/default names it, what
	// `kubectl apply -k config/host` creates, and two hosts' identities.
	root := testenv.RepoRoot()
	defaults := kubectl("kustomize", filepath.Join(root, "config", "default"))
	applyAll(ctx, defaults, func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "ClusterRole" && slices.Contains(fleetRoles, u.GetName())
	}, len(fleetRoles))
	applyAll(ctx, kubectl("kustomize", filepath.Join(root, "config", "host")), nil, 10)
	identities, err := exec.Command(filepath.Join(root, "hack", "host-identity.sh"), "a", "b", "node1.example").Output()
	Expect(err).NotTo(HaveOccurred(), "hack/host-identity.sh: %s", stderrOf(err))
	applyAll(ctx, identities, nil, 9)
	movedIdentity := exec.Command(filepath.Join(root, "hack", "host-identity.sh"), "m")
	movedIdentity.Env = append(os.Environ(), "AGENTRUN_NAMESPACE="+movedNamespace)
	identities, err = movedIdentity.Output()
	Expect(err).NotTo(HaveOccurred(), "AGENTRUN_NAMESPACE=%s hack/host-identity.sh: %s", movedNamespace, stderrOf(err))
	applyAll(ctx, identities, func(u *unstructured.Unstructured) bool {
		// host-identity.sh puts every namespaced object of the account in
		// AGENTRUN_NAMESPACE (a host reads nothing in kube-system any more).
		Expect(u.GetNamespace()).To(BeElementOf("", movedNamespace), "%s %s", u.GetKind(), u.GetName())
		return true
	}, 3)

	// The fleet controller's RBAC is not config/host's: bind it here to the
	// roles config/default binds it to.
	for _, role := range fleetRoles {
		Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "test-" + role},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "agentrun-controller-manager", Namespace: systemNamespace}},
		})).To(Succeed())
	}

	// A role wider than the hosts': the policies, not RBAC, must then refuse
	// host a's creating a run and writing records.
	Expect(admin.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "test-too-wide"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{agentsv1alpha1.GroupVersion.Group}, Resources: []string{"agentruns"}, Verbs: []string{"create"}},
			{APIGroups: []string{agentsv1alpha1.GroupVersion.Group}, Resources: []string{"agentrunrecords"}, Verbs: []string{"create", "update", "patch", "delete"}},
		},
	})).To(Succeed())
	Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-too-wide"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "test-too-wide"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "agentrun-host-a", Namespace: systemNamespace}},
	})).To(Succeed())

	// Users authenticated as the service accounts (envtest gives them
	// client certificates; RBAC and the policies see the same username and
	// groups a token would give).
	as := func(username string) client.Client {
		namespace := strings.Split(username, ":")[2]
		user, err := env.AddUser(envtest.User{Name: username, Groups: []string{
			"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated",
		}}, nil)
		Expect(err).NotTo(HaveOccurred())
		if username == hostUser("a") {
			hostAConfig = user.Config()
		}
		c, err := client.New(user.Config(), client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		return c
	}
	hostA = as(hostUser("a"))
	hostB = as(hostUser("b"))
	dotted = as(hostUser("node1.example"))
	moved = as("system:serviceaccount:" + movedNamespace + ":agentrun-host-m")
	fleet = as(fleetUser)

	checkTypes(ctx, cfg)
	waitForPolicies(ctx)
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// checkTypes type-checks the policies against the API server's schemas of
// AgentRun, AgentRunRecord, PodmanHost and Lease, as kube-controller-manager's policy status
// controller does to fill in status.typeChecking (envtest runs no controller
// manager, so the status stays empty): a warning is an expression that
// names something the type does not have, a misspelt field say, which
// would then fail or pass at run time whatever the request.
//
// The API server publishes a new CRD's OpenAPI schema a moment after the CRD
// is established; until then the checker resolves no type, so each policy is
// checked again until its types resolve (CI once ran it too early).
func checkTypes(ctx context.Context, cfg *rest.Config) {
	for _, name := range policies {
		var vap admissionregistrationv1.ValidatingAdmissionPolicy
		Expect(admin.Get(ctx, client.ObjectKey{Name: name}, &vap)).To(Succeed())
		Eventually(func(g Gomega) {
			disc, err := discovery.NewDiscoveryClientForConfig(cfg)
			g.Expect(err).NotTo(HaveOccurred())
			checker := &validating.TypeChecker{
				SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: disc},
				RestMapper:     admin.RESTMapper(),
			}
			// The checker found the types: it skips those it cannot
			// resolve (say, a policy matching apiVersions "*"), and then
			// warns of nothing at all.
			g.Expect(checker.CheckExpression(checker.CreateContext(&vap), "object.noSuchField == 1").String()).
				To(ContainSubstring("undefined field 'noSuchField'"), "policy %s is not type-checked", name)
			g.Expect(checker.Check(&vap)).To(BeEmpty(), "type checking policy %s", name)
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
	}
}

// waitForPolicies returns once every policy refuses: the API server loads
// policies and bindings from its informers a moment after they are created.
// Each probe is a write the RBAC allows and the policy refuses; one that gets
// through before the policy is loaded is undone.
func waitForPolicies(ctx context.Context) {
	probeRun := newRun(ctx, "b", "b")
	probes := map[string]func() error{
		"agentrun-host-runs": func() error {
			run := get(ctx, probeRun)
			base := run.DeepCopy()
			run.Status.Message = "probe " + time.Now().String()
			return hostA.Status().Patch(ctx, run, client.MergeFrom(base))
		},
		"agentrun-host-podmanhosts": func() error {
			ph := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}
			err := hostA.Create(ctx, ph)
			if err == nil {
				Expect(admin.Delete(ctx, ph)).To(Succeed())
			}
			return err
		},
		"agentrun-host-records": func() error {
			rec := record("probe", "b")
			err := hostA.Create(ctx, rec)
			if err == nil {
				Expect(admin.Delete(ctx, rec)).To(Succeed())
			}
			return err
		},
		"agentrun-host-leases": func() error {
			lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: systemNamespace}}
			err := hostA.Create(ctx, lease)
			if err == nil {
				Expect(admin.Delete(ctx, lease)).To(Succeed())
			}
			return err
		},
	}
	for policy, probe := range probes {
		Eventually(func(g Gomega) {
			err := probe()
			g.Expect(err).To(HaveOccurred(), "policy %s not in force yet", policy)
			g.Expect(err.Error()).To(ContainSubstring("ValidatingAdmissionPolicy '%s'", policy))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	}
}

// hostUser is the username of host name's service account.
func hostUser(name string) string {
	return "system:serviceaccount:" + systemNamespace + ":agentrun-host-" + name
}

// kubectl runs envtest's kubectl (built with the API server) and returns its
// standard output.
func kubectl(args ...string) []byte {
	out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), args...).Output()
	Expect(err).NotTo(HaveOccurred(), "kubectl %s: %s", strings.Join(args, " "), stderrOf(err))
	return out
}

func stderrOf(err error) string {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return string(exitErr.Stderr)
	}
	return ""
}

// applyAll creates the objects of a multi-document YAML stream that keep
// accepts (all when keep is nil), and checks there were want of them.
func applyAll(ctx context.Context, stream []byte, keep func(*unstructured.Unstructured) bool, want int) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	n := 0
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		Expect(err).NotTo(HaveOccurred())
		if len(u.Object) == 0 || (keep != nil && !keep(u)) {
			continue
		}
		Expect(admin.Create(ctx, u)).To(Succeed(), "creating %s %s", u.GetKind(), u.GetName())
		n++
	}
	Expect(n).To(Equal(want), "objects applied")
}

var runCount int

// newRun creates a run pinned to host pinned ("" for none) and, when held is
// not "", claimed by host held, both as the admin.
func newRun(ctx context.Context, pinned, held string) client.ObjectKey {
	runCount++
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("run-%d", runCount), Namespace: runNamespace},
		Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "Say hello", HostName: pinned},
	}
	Expect(admin.Create(ctx, run)).To(Succeed())
	if held != "" {
		run.Status.Host = held
		run.Status.Phase = agentsv1alpha1.PhasePending
		Expect(admin.Status().Update(ctx, run)).To(Succeed())
	}
	return client.ObjectKeyFromObject(run)
}

func get(ctx context.Context, key client.ObjectKey) *agentsv1alpha1.AgentRun {
	run := &agentsv1alpha1.AgentRun{}
	Expect(admin.Get(ctx, key, run)).To(Succeed())
	return run
}

// expectRefused checks that err is the refusal of policy, naming rule: a
// Forbidden from the policy, not from RBAC (whose Forbidden names no policy)
// nor from the CRD's validation.
func expectRefused(err error, policy, rule string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred(), "the write was allowed")
	Expect(apierrors.IsForbidden(err)).To(BeTrue(), "not Forbidden: %v", err)
	Expect(err.Error()).To(ContainSubstring("ValidatingAdmissionPolicy '%s'", policy))
	Expect(err.Error()).To(ContainSubstring("(rule: %s)", rule))
	GinkgoWriter.Println("refused as expected:", err)
}
