package kubectlplugin_test

import (
	"context"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/testenv"
)

const secretValue = "s3cr3t-v4lue-of-the-token"

// startContainer does what the run's host does when it launches it: a
// running container in the host's engine, recorded in the run's status.
func startContainer(ctx context.Context, ns, name string) string {
	GinkgoHelper()
	run := &agentsv1alpha1.AgentRun{}
	Eventually(func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, run) }).Should(Succeed())
	id, err := rt.Create(ctx, containers.Spec{
		Name: "agentrun-" + ns + "-" + name, Image: testImage, SecretEnv: runSecretEnv(run),
		Labels: map[string]string{agentsv1alpha1.LabelUID: string(run.UID)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(rt.Start(ctx, id)).To(Succeed())
	run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseRunning, Host: logsHost, ContainerID: id, Attempts: 1}
	Expect(k8s.Status().Update(ctx, run)).To(Succeed())
	return id
}

func runSecretEnv(run *agentsv1alpha1.AgentRun) map[string]string {
	out := map[string]string{}
	for k, v := range run.Spec.Podman.SecretsEnv {
		out[k] = string(v)
	}
	return out
}

// finish records the end of the run as its host would.
func finish(ctx context.Context, ns, name string, phase agentsv1alpha1.AgentRunPhase, code int32, output string) {
	GinkgoHelper()
	run := &agentsv1alpha1.AgentRun{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, run)).To(Succeed())
	run.Status.Phase, run.Status.ExitCode, run.Status.Output = phase, ptr.To(code), output
	Expect(k8s.Status().Update(ctx, run)).To(Succeed())
}

var _ = Describe("kubectl agentrun logs", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("with -f shows each line as the run prints it, masked, and returns when the container exits", func(ctx SpecContext) {
		rt.SetSecret("gh-"+ns, secretValue)
		Expect(plugin("-n", ns, "run", "counter", "--prompt", "count", "--secret-env", "GH_TOKEN=gh-"+ns).code).To(Equal(0))
		id := startContainer(ctx, ns, "counter")
		Expect(rt.Print(id, "line 1\n")).To(Succeed())

		var out, errOut testenv.SyncBuffer
		done := make(chan int, 1)
		go func() { done <- pluginTo(&out, &errOut, kubeconfig, "-n", ns, "logs", "-f", "counter") }()
		Eventually(out.String).Should(Equal("line 1\n"))
		Expect(rt.Print(id, "line 2 token="+secretValue+"\n")).To(Succeed())
		Eventually(out.String).Should(Equal("line 1\nline 2 token=***\n"))
		Consistently(done, "500ms").ShouldNot(Receive(), "it returned while the container ran")
		Expect(rt.Exit(id, 0, "bye\n")).To(Succeed())
		Eventually(done, "10s").Should(Receive(Equal(0)), errOut.String())
		Expect(out.String()).To(Equal("line 1\nline 2 token=***\nbye\n"))
	})

	It("shows the last lines with --tail, and the tail kept in status, with a note, once the container is gone", func(ctx SpecContext) {
		Expect(plugin("-n", ns, "run", "done", "--prompt", "x").code).To(Equal(0))
		id := startContainer(ctx, ns, "done")
		Expect(rt.Exit(id, 0, "a\nb\nc\n")).To(Succeed())
		r := plugin("-n", ns, "logs", "done", "--tail", "2")
		Expect(r.code).To(Equal(0), r.errOut)
		Expect(r.out).To(Equal("b\nc\n"))

		Expect(rt.Remove(ctx, id)).To(Succeed())
		finish(ctx, ns, "done", agentsv1alpha1.PhaseSucceeded, 0, "b\nc\n")
		r = plugin("-n", ns, "logs", "done")
		Expect(r.code).To(Equal(0), r.errOut)
		Expect(r.out).To(Equal("b\nc\n"))
		Expect(r.errOut).To(HavePrefix("note: agentrun/done: its container is gone; this is the end of its output kept in its status"))
	})

	It("says in one line that a user without agentruns/log is refused by the host", func(ctx SpecContext) {
		Expect(plugin("-n", ns, "run", "private", "--prompt", "x").code).To(Equal(0))
		startContainer(ctx, ns, "private")
		// May read the run and the hosts, not the output.
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "runs-reader-"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{agentsv1alpha1.GroupVersion.Group}, Resources: []string{"agentruns", "podmanhosts"}, Verbs: []string{"get"}},
			},
		}
		Expect(k8s.Create(ctx, role)).To(Succeed())
		Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "runs-reader-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "runs-reader"}},
		})).To(Succeed())
		r := pluginAs(writeKubeconfig(envtest.User{Name: "runs-reader"}), "-n", ns, "logs", "private")
		Expect(r.code).To(Equal(1))
		Expect(r.errOut).To(Equal(`error: host ` + logsHost + `: Forbidden: User "runs-reader" cannot get agentruns/log in the namespace "` + ns + `"` + "\n"))
	})
})

var _ = Describe("kubectl agentrun run --follow", func() {
	It("creates the run, streams its output live and exits with its exit code", func(ctx SpecContext) {
		ns := newNamespace()
		var out, errOut testenv.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- pluginTo(&out, &errOut, kubeconfig, "-n", ns, "run", "job", "--prompt", "x", "--follow")
		}()
		id := startContainer(ctx, ns, "job")
		Expect(rt.Print(id, "working\n")).To(Succeed())
		Eventually(out.String, "10s").Should(Equal("working\n"))
		Expect(errOut.String()).To(ContainSubstring("agentrun.agents.agentrun.dev/job created"))
		Expect(rt.Exit(id, 3, "failed\n")).To(Succeed())
		Consistently(done, "500ms").ShouldNot(Receive(), "it returned before the run finished")
		finish(ctx, ns, "job", agentsv1alpha1.PhaseFailed, 3, "working\nfailed\n")
		Eventually(done, "10s").Should(Receive(Equal(3)), errOut.String())
		Expect(out.String()).To(Equal("working\nfailed\n"))
		Expect(strings.Count(errOut.String(), "note:")).To(BeZero())
	})

	It("shows the output kept in status, with a note, when the run's host serves no live output", func(ctx SpecContext) {
		ns := newNamespace()
		host := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: "no-endpoint-" + ns}}
		Expect(k8s.Create(ctx, host)).To(Succeed())
		var out, errOut testenv.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- pluginTo(&out, &errOut, kubeconfig, "-n", ns, "run", "plain", "--prompt", "x", "--follow")
		}()
		run := &agentsv1alpha1.AgentRun{}
		Eventually(func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain"}, run) }).Should(Succeed())
		run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseRunning, Host: host.Name, ContainerID: "c1", Attempts: 1}
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		Consistently(done, "1500ms").ShouldNot(Receive(), "it returned before the run finished")
		finish(ctx, ns, "plain", agentsv1alpha1.PhaseFailed, 2, "kept\n")
		Eventually(done, "10s").Should(Receive(Equal(2)), errOut.String())
		Expect(out.String()).To(Equal("kept\n"))
		Expect(errOut.String()).To(ContainSubstring("note: agentrun/plain: its host serves no live output"))
	})

	It("shows a run whose container went before it could be streamed from its status", func(ctx SpecContext) {
		ns := newNamespace()
		var out, errOut testenv.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- pluginTo(&out, &errOut, kubeconfig, "-n", ns, "run", "quick", "--prompt", "x", "--follow")
		}()
		id := startContainer(ctx, ns, "quick")
		Expect(rt.Exit(id, 0, "all done\n")).To(Succeed())
		Expect(rt.Remove(ctx, id)).To(Succeed())
		finish(ctx, ns, "quick", agentsv1alpha1.PhaseSucceeded, 0, "all done\n")
		Eventually(done, "10s").Should(Receive(Equal(0)), errOut.String())
		Expect(errOut.String()).To(ContainSubstring("note: agentrun/quick:"))
		// Streamed live, or from status when it was gone first: the output
		// once either way.
		Expect(out.String()).To(Equal("all done\n"))
	})
})
