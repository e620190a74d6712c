package identity_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// finalizer is the reconciler's (controllers.Finalizer), written out: this
// package tests config/, and imports no controller.
const finalizer = "agents.agentrun.dev/container"

// writeStatus has c patch the run's status as the reconciler does (a merge
// patch with the resourceVersion read), after change.
func writeStatus(ctx context.Context, c client.Client, key client.ObjectKey, change func(*agentsv1alpha1.AgentRunStatus)) error {
	run := get(ctx, key)
	base := run.DeepCopy()
	change(&run.Status)
	return c.Status().Patch(ctx, run, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}

// writeRun has c patch the run itself (metadata and spec), after change.
func writeRun(ctx context.Context, c client.Client, key client.ObjectKey, change func(*agentsv1alpha1.AgentRun)) error {
	run := get(ctx, key)
	base := run.DeepCopy()
	change(run)
	return c.Patch(ctx, run, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}

func claimBy(host string) func(*agentsv1alpha1.AgentRunStatus) {
	return func(st *agentsv1alpha1.AgentRunStatus) {
		st.Host = host
		st.Phase = agentsv1alpha1.PhasePending
		st.Message = "claimed by host " + host
	}
}

func running(st *agentsv1alpha1.AgentRunStatus) {
	st.Phase = agentsv1alpha1.PhaseRunning
	st.ContainerName = "agentrun-run"
}

const runsPolicy = "agentrun-host-runs"

var _ = Describe("A host claiming a run", func() {
	It("may claim an unclaimed run pinned to it", func(ctx SpecContext) {
		key := newRun(ctx, "a", "")
		Expect(writeStatus(ctx, hostA, key, claimBy("a"))).To(Succeed())
		Expect(get(ctx, key).Status.Host).To(Equal("a"))
	})

	It("may write the status of an unclaimed run pinned to it without claiming it", func(ctx SpecContext) {
		key := newRun(ctx, "a", "")
		Expect(writeStatus(ctx, hostA, key, func(st *agentsv1alpha1.AgentRunStatus) {
			st.Phase = agentsv1alpha1.PhasePending
			st.Message = "waiting for a slot"
		})).To(Succeed())
	})

	It("may not claim a run pinned to another host, which that host may", func(ctx SpecContext) {
		key := newRun(ctx, "b", "")
		expectRefused(writeStatus(ctx, hostA, key, claimBy("a")), runsPolicy, "claim only runs pinned to this host")
		Expect(writeStatus(ctx, hostB, key, claimBy("b"))).To(Succeed())
	})

	It("may not pin a run to itself through a status write", func(ctx SpecContext) {
		key := newRun(ctx, "b", "")
		run := get(ctx, key)
		base := run.DeepCopy()
		run.Spec.HostName = "a"
		claimBy("a")(&run.Status)
		// The status subresource keeps the stored spec, and the policy sees that.
		expectRefused(hostA.Status().Patch(ctx, run, client.MergeFrom(base)), runsPolicy, "claim only runs pinned to this host")
		Expect(get(ctx, key).Spec.HostName).To(Equal("b"))
	})

	It("may not claim an unpinned run: the fleet places those", func(ctx SpecContext) {
		key := newRun(ctx, "", "")
		expectRefused(writeStatus(ctx, hostA, key, claimBy("a")), runsPolicy, "claim only runs pinned to this host")
		Expect(get(ctx, key).Status.Host).To(BeEmpty())
	})

	It("may not claim a run for another host", func(ctx SpecContext) {
		key := newRun(ctx, "a", "")
		expectRefused(writeStatus(ctx, hostA, key, claimBy("b")), runsPolicy, "claim and hold runs only for this host")
	})
})

var _ = Describe("A host writing the status of a claimed run", func() {
	It("may not write a run another host holds", func(ctx SpecContext) {
		key := newRun(ctx, "b", "b")
		expectRefused(writeStatus(ctx, hostA, key, running), runsPolicy, "only this host's runs")
		// Nor when the run was placed there unpinned.
		key = newRun(ctx, "", "b")
		expectRefused(writeStatus(ctx, hostA, key, running), runsPolicy, "only this host's runs")
		Expect(writeStatus(ctx, hostB, key, running)).To(Succeed())
	})

	It("may write a run it holds, pinned or placed", func(ctx SpecContext) {
		for _, pinned := range []string{"a", ""} {
			key := newRun(ctx, pinned, "a")
			Expect(writeStatus(ctx, hostA, key, running)).To(Succeed())
			Expect(writeStatus(ctx, hostA, key, func(st *agentsv1alpha1.AgentRunStatus) {
				st.Phase = agentsv1alpha1.PhaseSucceeded
				st.ExitCode = ptr.To[int32](0)
				st.Output = "hello"
			})).To(Succeed())
			Expect(get(ctx, key).Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded))
		}
	})

	It("may not hand its run to another host, nor let it go", func(ctx SpecContext) {
		key := newRun(ctx, "", "a")
		expectRefused(writeStatus(ctx, hostA, key, claimBy("b")), runsPolicy, "claim and hold runs only for this host")
		expectRefused(writeStatus(ctx, hostA, key, func(st *agentsv1alpha1.AgentRunStatus) { st.Host = "" }),
			runsPolicy, "claim and hold runs only for this host")
		Expect(get(ctx, key).Status.Host).To(Equal("a"))
	})
})

var _ = Describe("A host writing a run itself", func() {
	It("may add and remove the container finalizer on a run it holds", func(ctx SpecContext) {
		key := newRun(ctx, "a", "a")
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, finalizer) })).To(Succeed())
		Expect(get(ctx, key).Finalizers).To(ConsistOf(finalizer))
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.RemoveFinalizer(r, finalizer) })).To(Succeed())
		Expect(get(ctx, key).Finalizers).To(BeEmpty())
	})

	It("may remove its finalizer from its run being deleted", func(ctx SpecContext) {
		key := newRun(ctx, "a", "a")
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, finalizer) })).To(Succeed())
		Expect(admin.Delete(ctx, get(ctx, key))).To(Succeed())
		Expect(get(ctx, key).DeletionTimestamp).NotTo(BeNil())
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.RemoveFinalizer(r, finalizer) })).To(Succeed())
		Eventually(func() bool {
			return admin.Get(ctx, key, &agentsv1alpha1.AgentRun{}) != nil
		}).WithContext(ctx).Should(BeTrue(), "the run should be gone")
	})

	It("may not add or remove the finalizer on another host's run", func(ctx SpecContext) {
		key := newRun(ctx, "b", "b")
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, finalizer) }),
			runsPolicy, "only this host's runs")
		Expect(writeRun(ctx, hostB, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, finalizer) })).To(Succeed())
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.RemoveFinalizer(r, finalizer) }),
			runsPolicy, "only this host's runs")
		// Nor on an unclaimed run.
		key = newRun(ctx, "a", "")
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, finalizer) }),
			runsPolicy, "only this host's runs")
	})

	It("may not change the labels, annotations or other finalizers of its own run", func(ctx SpecContext) {
		key := newRun(ctx, "a", "a")
		for _, change := range []func(*agentsv1alpha1.AgentRun){
			func(r *agentsv1alpha1.AgentRun) { r.Labels = map[string]string{"team": "x"} },
			func(r *agentsv1alpha1.AgentRun) { r.Annotations = map[string]string{"note": "x"} },
			func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, "example.com/other") },
		} {
			expectRefused(writeRun(ctx, hostA, key, change), runsPolicy, "only the container finalizer")
		}
	})

	It("may release its finished run once its containers are removed, and only that", func(ctx SpecContext) {
		release := func(r *agentsv1alpha1.AgentRun) { r.Labels = map[string]string{agentsv1alpha1.LabelReleased: "true"} }
		key := newRun(ctx, "a", "a")
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, finalizer) })).To(Succeed())
		expectRefused(writeRun(ctx, hostA, key, release), runsPolicy, "release only finished runs")
		Expect(writeStatus(ctx, hostA, key, func(st *agentsv1alpha1.AgentRunStatus) { st.Phase = agentsv1alpha1.PhaseSucceeded })).To(Succeed())
		expectRefused(writeRun(ctx, hostA, key, release), runsPolicy, "release only finished runs")
		// In the write that drops the finalizer, as the host does it.
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) {
			controllerutil.RemoveFinalizer(r, finalizer)
			release(r)
		})).To(Succeed())
		Expect(get(ctx, key).Labels).To(HaveKeyWithValue(agentsv1alpha1.LabelReleased, "true"))
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { delete(r.Labels, agentsv1alpha1.LabelReleased) }),
			runsPolicy, "release only finished runs")
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { r.Labels["team"] = "x" }),
			runsPolicy, "only the container finalizer")
		// Nor another host's run.
		key = newRun(ctx, "b", "b")
		Expect(writeStatus(ctx, hostB, key, func(st *agentsv1alpha1.AgentRunStatus) { st.Phase = agentsv1alpha1.PhaseSucceeded })).To(Succeed())
		expectRefused(writeRun(ctx, hostA, key, release), runsPolicy, "only this host's runs")
	})

	It("may not change the spec of its own run, not even spec.cancel", func(ctx SpecContext) {
		key := newRun(ctx, "a", "a")
		// The CRD allows spec.cancel to everyone who may update the run.
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { r.Spec.Cancel = true }),
			runsPolicy, "hosts do not change spec")
		Expect(writeRun(ctx, fleet, key, func(r *agentsv1alpha1.AgentRun) { r.Spec.Cancel = true })).To(Succeed())
	})

	It("may not create a run, even with a role that allows it", func(ctx SpecContext) {
		// Unpinned and naming no secret: agentrun-podman-use has nothing
		// to refuse. A run pinned to a is refused by both policies, and the
		// API server names whichever it evaluated first.
		run := &agentsv1alpha1.AgentRun{
			ObjectMeta: metav1.ObjectMeta{Name: "made-by-a", Namespace: runNamespace},
			Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "Say hello"},
		}
		expectRefused(hostA.Create(ctx, run), runsPolicy, "hosts do not create runs")
		// Host b has only the hosts' roles: RBAC refuses it first.
		err := hostB.Create(ctx, run)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).NotTo(ContainSubstring("ValidatingAdmissionPolicy"))
	})

	It("may delete its own finished run with a TTL, and no other", func(ctx SpecContext) {
		mk := func(held string, ttl bool, phase agentsv1alpha1.AgentRunPhase) *agentsv1alpha1.AgentRun {
			runCount++
			run := &agentsv1alpha1.AgentRun{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ttl-%d", runCount), Namespace: runNamespace},
				Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "Say hello"},
			}
			if ttl {
				run.Spec.TTLSecondsAfterFinished = ptr.To[int32](60)
			}
			Expect(admin.Create(ctx, run)).To(Succeed())
			run.Status.Host = held
			run.Status.Phase = phase
			Expect(admin.Status().Update(ctx, run)).To(Succeed())
			return run
		}
		expectRefused(hostA.Delete(ctx, mk("b", true, agentsv1alpha1.PhaseSucceeded)), runsPolicy, "only this host's runs")
		expectRefused(hostA.Delete(ctx, mk("a", true, agentsv1alpha1.PhaseRunning)), runsPolicy, "delete only finished runs with a TTL")
		expectRefused(hostA.Delete(ctx, mk("a", false, agentsv1alpha1.PhaseFailed)), runsPolicy, "delete only finished runs with a TTL")
		Expect(hostA.Delete(ctx, mk("a", true, agentsv1alpha1.PhaseFailed))).To(Succeed())
	})
})

var _ = Describe("The fleet controller", func() {
	It("is not held by the hosts' policy: it places unclaimed runs and takes runs off a lost host", func(ctx SpecContext) {
		key := newRun(ctx, "", "")
		Expect(writeStatus(ctx, fleet, key, claimBy("b"))).To(Succeed())
		Expect(get(ctx, key).Status.Host).To(Equal("b"))

		key = newRun(ctx, "", "a")
		Expect(writeStatus(ctx, fleet, key, func(st *agentsv1alpha1.AgentRunStatus) {
			st.Host = ""
			st.Phase = agentsv1alpha1.PhasePending
			st.Message = "host a was lost; placing the run again"
		})).To(Succeed())
		Expect(get(ctx, key).Status.Host).To(BeEmpty())

		ph := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "fleet-made"}}
		Expect(fleet.Create(ctx, ph)).To(Succeed())
	})
})

const podmanHostsPolicy = "agentrun-host-podmanhosts"

var _ = Describe("A host writing PodmanHosts", func() {
	It("may create and update its own PodmanHost and its status", func(ctx SpecContext) {
		ph := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"gpu": "no"}}}
		Expect(hostA.Create(ctx, ph)).To(Succeed())
		base := ph.DeepCopy()
		ph.Labels["gpu"] = "yes"
		Expect(hostA.Patch(ctx, ph, client.MergeFrom(base))).To(Succeed())
		base = ph.DeepCopy()
		ph.Status.PodmanVersion = "5.4.2"
		ph.Status.Capacity = 4
		ph.Status.LastHeartbeatTime = ptr.To(metav1.Now())
		Expect(hostA.Status().Patch(ctx, ph, client.MergeFrom(base))).To(Succeed())
		Expect(hostA.Status().Update(ctx, ph)).To(Succeed())
	})

	It("may not create or write another host's PodmanHost", func(ctx SpecContext) {
		expectRefused(hostA.Create(ctx, &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "b"}}),
			podmanHostsPolicy, "own PodmanHost only")
		ph := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "b"}}
		Expect(hostB.Create(ctx, ph)).To(Succeed())
		base := ph.DeepCopy()
		ph.Status.PodmanVersion = "4.3.1"
		expectRefused(hostA.Status().Patch(ctx, ph, client.MergeFrom(base)), podmanHostsPolicy, "own PodmanHost only")
		expectRefused(hostA.Patch(ctx, ph, client.MergeFrom(base)), podmanHostsPolicy, "own PodmanHost only")
		Expect(hostB.Status().Patch(ctx, ph, client.MergeFrom(base))).To(Succeed())
	})

	It("may not cordon or uncordon itself", func(ctx SpecContext) {
		ph := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "node1.example"}}
		Expect(dotted.Create(ctx, ph)).To(Succeed())
		base := ph.DeepCopy()
		ph.Spec.Unschedulable = true
		expectRefused(dotted.Patch(ctx, ph, client.MergeFrom(base)), podmanHostsPolicy, "hosts do not change their spec")
		Expect(admin.Patch(ctx, ph, client.MergeFrom(base))).To(Succeed())
		base = ph.DeepCopy()
		ph.Spec.Unschedulable = false
		expectRefused(dotted.Patch(ctx, ph, client.MergeFrom(base)), podmanHostsPolicy, "hosts do not change their spec")
	})
})

const leasesPolicy = "agentrun-host-leases"

var _ = Describe("A host writing Leases", func() {
	lease := func(name string) *coordinationv1.Lease {
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: systemNamespace},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](40)},
		}
	}

	It("may write its heartbeat and leader election Leases", func(ctx SpecContext) {
		for _, name := range []string{"a", "agentrun-host-a"} {
			l := lease(name)
			Expect(hostA.Create(ctx, l)).To(Succeed())
			l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(metav1.Now().Time))
			Expect(hostA.Update(ctx, l)).To(Succeed())
		}
		// A dotted host name's, named after it unchanged: with '.' turned
		// into '-' it would be host node1-example's.
		for _, name := range []string{"node1.example", "agentrun-host-node1.example"} {
			Expect(dotted.Create(ctx, lease(name))).To(Succeed())
		}
		expectRefused(dotted.Create(ctx, lease("agentrun-host-node1-example")), leasesPolicy, "own Leases only")
	})

	It("has its Leases served at the leader-election priority level, and only its Leases", func(ctx SpecContext) {
		leases := &unstructured.Unstructured{}
		leases.SetGroupVersionKind(schema.GroupVersionKind{Group: "flowcontrol.apiserver.k8s.io", Version: "v1", Kind: "FlowSchema"})
		Expect(admin.Get(ctx, client.ObjectKey{Name: "agentrun-leases"}, leases)).To(Succeed())
		// The API server names the FlowSchema that classified a request in
		// its answer's headers.
		flowSchemaOf := func(path string) string {
			GinkgoHelper()
			hc, err := rest.HTTPClientFor(hostAConfig)
			Expect(err).NotTo(HaveOccurred())
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, hostAConfig.Host+path, nil)
			Expect(err).NotTo(HaveOccurred())
			resp, err := hc.Do(req)
			Expect(err).NotTo(HaveOccurred())
			_ = resp.Body.Close()
			return resp.Header.Get("X-Kubernetes-PF-FlowSchema-UID")
		}
		Expect(flowSchemaOf("/apis/coordination.k8s.io/v1/namespaces/"+systemNamespace+"/leases/agentrun-host-a")).
			To(Equal(string(leases.GetUID())), "host a's leader election Lease")
		Expect(flowSchemaOf("/apis/agents.agentrun.dev/v1alpha1/podmanhosts/a")).
			NotTo(Or(BeEmpty(), Equal(string(leases.GetUID()))), "host a's PodmanHost: not a Lease")
	})

	It("may not write another host's Leases, nor the fleet's", func(ctx SpecContext) {
		for _, name := range []string{"b", "agentrun-host-b", "agentrun-cluster"} {
			expectRefused(hostA.Create(ctx, lease(name)), leasesPolicy, "own Leases only")
		}
		l := lease("agentrun-host-b")
		Expect(hostB.Create(ctx, l)).To(Succeed())
		l.Spec.HolderIdentity = ptr.To("a")
		expectRefused(hostA.Update(ctx, l), leasesPolicy, "own Leases only")
		expectRefused(hostA.Delete(ctx, l), leasesPolicy, "own Leases only")
	})

	It("may not write a Lease of its name in another namespace, which its role allows", func(ctx SpecContext) {
		for _, ns := range []string{runNamespace, "kube-system"} {
			l := lease("a")
			l.Namespace = ns
			expectRefused(hostA.Create(ctx, l), leasesPolicy, "own Leases only")
		}
	})
})

var _ = Describe("A host whose account is in another namespace than agentrun-system", func() {
	It("is held to its own runs as the others are", func(ctx SpecContext) {
		mine, theirs := newRun(ctx, "m", ""), newRun(ctx, "a", "")
		Expect(writeStatus(ctx, moved, mine, claimBy("m"))).To(Succeed())
		expectRefused(writeStatus(ctx, moved, theirs, claimBy("m")), runsPolicy, "claim only runs pinned to this host")
		held := newRun(ctx, "a", "a")
		expectRefused(writeStatus(ctx, moved, held, running), runsPolicy, "only this host's runs")
	})

	It("writes its Leases in its account's namespace, and nowhere else", func(ctx SpecContext) {
		for _, name := range []string{"m", "agentrun-host-m"} {
			Expect(moved.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: movedNamespace},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name)},
			})).To(Succeed())
		}
		for _, ns := range []string{systemNamespace, runNamespace} {
			expectRefused(moved.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: "m", Namespace: ns},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("m")},
			}), leasesPolicy, "own Leases only")
		}
	})
})

// writeAdminKubeconfig writes a kubeconfig of a cluster admin as dir/admin.
func writeAdminKubeconfig(dir string) {
	GinkgoHelper()
	adminUser, err := env.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	adminKubeconfig, err := adminUser.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(dir, "admin"), adminKubeconfig, 0o600)).To(Succeed())
}

var _ = Describe("The identities hack/host-identity.sh makes", func() {
	It("keeps two installations' hosts of the same name apart: each binding names its own namespace's account", func(ctx SpecContext) {
		dir := GinkgoT().TempDir()
		writeAdminKubeconfig(dir)
		for _, ns := range []string{"install-one", "install-two"} {
			Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
			cmd := exec.CommandContext(ctx, filepath.Join(testenv.RepoRoot(), "hack", "host-identity.sh"), "twin")
			cmd.Env = append(os.Environ(), "AGENTRUN_NAMESPACE="+ns)
			manifest, err := cmd.Output()
			Expect(err).NotTo(HaveOccurred(), "hack/host-identity.sh: %s", stderrOf(err))
			file := filepath.Join(dir, ns+".yaml")
			Expect(os.WriteFile(file, manifest, 0o600)).To(Succeed())
			kubectl("--kubeconfig", filepath.Join(dir, "admin"), "apply", "-f", file)
		}
		bindings := &rbacv1.ClusterRoleBindingList{}
		Expect(admin.List(ctx, bindings, client.MatchingLabels{"agents.agentrun.dev/host": "twin"})).To(Succeed())
		var subjects []string
		for _, b := range bindings.Items {
			for _, s := range b.Subjects {
				subjects = append(subjects, s.Namespace+"/"+s.Name)
			}
		}
		Expect(subjects).To(ConsistOf("install-one/agentrun-host-twin", "install-two/agentrun-host-twin"),
			"the second installation's binding replaced the first's")
	})
})

var _ = Describe("The kubeconfig hack/host-identity.sh makes", func() {
	It("authenticates with a token of the host's account, which the policies hold to its own runs", func(ctx SpecContext) {
		dir := GinkgoT().TempDir()
		writeAdminKubeconfig(dir)

		cmd := exec.CommandContext(ctx, filepath.Join(testenv.RepoRoot(), "hack", "host-identity.sh"), "--kubeconfig", "a", "1h")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "admin"),
			"KUBECTL="+filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"))
		hostKubeconfig, err := cmd.Output()
		Expect(err).NotTo(HaveOccurred(), "hack/host-identity.sh --kubeconfig: %s", stderrOf(err))
		Expect(string(hostKubeconfig)).To(ContainSubstring("token: "))
		Expect(os.WriteFile(filepath.Join(dir, "a"), hostKubeconfig, 0o600)).To(Succeed())

		Expect(string(kubectl("--kubeconfig", filepath.Join(dir, "a"), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"))).
			To(Equal(hostUser("a")))

		cfg, err := clientcmd.RESTConfigFromKubeConfig(hostKubeconfig)
		Expect(err).NotTo(HaveOccurred())
		withToken, err := client.New(cfg, client.Options{Scheme: admin.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		key := newRun(ctx, "a", "")
		Expect(writeStatus(ctx, withToken, key, claimBy("a"))).To(Succeed())
		key = newRun(ctx, "b", "b")
		expectRefused(writeStatus(ctx, withToken, key, running), runsPolicy, "only this host's runs")
	})
})

const recordsPolicy = "agentrun-host-records"

// recordFinalizer is the fleet's (controllers.RecordFinalizer), written out
// as finalizer is.
const recordFinalizer = "agents.agentrun.dev/record"

// record is the record of a run of host, named name, in the runs' namespace.
func record(name, host string) *agentsv1alpha1.AgentRunRecord {
	return &agentsv1alpha1.AgentRunRecord{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: runNamespace},
		Spec: agentsv1alpha1.AgentRunRecordSpec{
			RunKey: "sha256:0", RunUID: "0123", Host: host, Phase: agentsv1alpha1.PhaseSucceeded, Reason: "Completed",
		},
	}
}

// expectRefusedByRBAC checks that err is RBAC's refusal, which names no
// policy: the request never reached admission.
func expectRefusedByRBAC(err error) {
	GinkgoHelper()
	Expect(apierrors.IsForbidden(err)).To(BeTrue(), "not Forbidden: %v", err)
	Expect(err.Error()).NotTo(ContainSubstring("ValidatingAdmissionPolicy"))
}

var _ = Describe("A host and AgentRunRecords", func() {
	// Records are the fleet's: it writes them from the final status the
	// run's host wrote. A host that wrote them could hold back any
	// manifest of any namespace, ended AlreadyRan without running.
	It("may not create, replace or delete a record, not even one naming itself; the fleet writes them", func(ctx SpecContext) {
		// Host b has only the hosts' roles: RBAC refuses it.
		expectRefusedByRBAC(hostB.Create(ctx, record("forged-by-b", "b")))
		// Host a's role is wider: the policy refuses it.
		expectRefused(hostA.Create(ctx, record("forged-by-a", "a")), recordsPolicy, "hosts do not write records")

		rec := record("ran-on-a", "a")
		Expect(fleet.Create(ctx, rec)).To(Succeed())
		forged := rec.DeepCopy()
		forged.Spec.Phase, forged.Spec.Reason = agentsv1alpha1.PhaseFailed, "ExitedNonZero"
		expectRefusedByRBAC(hostB.Update(ctx, forged))
		expectRefused(hostA.Update(ctx, forged), recordsPolicy, "hosts do not write records")
		expectRefused(hostA.Patch(ctx, forged, client.MergeFrom(rec)), recordsPolicy, "hosts do not write records")
		expectRefusedByRBAC(hostB.Delete(ctx, rec))
		expectRefused(hostA.Delete(ctx, rec), recordsPolicy, "hosts do not write records")
		Expect(fleet.Update(ctx, forged)).To(Succeed())
		Expect(fleet.Delete(ctx, forged)).To(Succeed())
	})

	It("may read records: its run-once guard does", func(ctx SpecContext) {
		rec := record("read-by-b", "a")
		Expect(fleet.Create(ctx, rec)).To(Succeed())
		Expect(hostB.Get(ctx, client.ObjectKeyFromObject(rec), &agentsv1alpha1.AgentRunRecord{})).To(Succeed())
	})

	It("may add the fleet's record finalizer with its own to a run it holds, and never remove it", func(ctx SpecContext) {
		key := newRun(ctx, "a", "a")
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) {
			controllerutil.AddFinalizer(r, finalizer)
			controllerutil.AddFinalizer(r, recordFinalizer)
		})).To(Succeed())
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.RemoveFinalizer(r, recordFinalizer) }),
			runsPolicy, "only the fleet removes the record finalizer")
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) {
			controllerutil.RemoveFinalizer(r, finalizer)
			controllerutil.RemoveFinalizer(r, recordFinalizer)
		}), runsPolicy, "only the fleet removes the record finalizer")
		// Its own finalizer goes; the run waits for the fleet's.
		Expect(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.RemoveFinalizer(r, finalizer) })).To(Succeed())
		Expect(admin.Delete(ctx, get(ctx, key))).To(Succeed())
		Expect(get(ctx, key).Finalizers).To(ConsistOf(recordFinalizer))
		Expect(writeRun(ctx, fleet, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.RemoveFinalizer(r, recordFinalizer) })).To(Succeed())
		Eventually(func() bool {
			return admin.Get(ctx, key, &agentsv1alpha1.AgentRun{}) != nil
		}).WithContext(ctx).Should(BeTrue(), "the run should be gone")
	})

	It("may not add the record finalizer to another host's run", func(ctx SpecContext) {
		key := newRun(ctx, "b", "b")
		expectRefused(writeRun(ctx, hostA, key, func(r *agentsv1alpha1.AgentRun) { controllerutil.AddFinalizer(r, recordFinalizer) }),
			runsPolicy, "only this host's runs")
	})
})
