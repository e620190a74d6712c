package kubectlplugin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/testing/testenv"
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
		Expect(r.errOut).To(HavePrefix(`error: agentrun/private on host ` + logsHost + `: `))
		Expect(r.errOut).To(ContainSubstring(`User "runs-reader" cannot get`))
		Expect(r.errOut).To(ContainSubstring(`agentruns/log`))
	})

	It("sends no credential the API server accepts to the run's host, whatever the host records", func(ctx SpecContext) {
		Expect(plugin("-n", ns, "run", "watched", "--prompt", "x").code).To(Equal(0))
		run := &agentsv1alpha1.AgentRun{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "watched"}, run)).To(Succeed())
		run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseRunning, Host: recordingHost, ContainerID: "c1", Attempts: 1}
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		before := len(recorder.Requests())
		// An administrator with a bearer token, and one with a client
		// certificate, follow the run.
		for _, kc := range []string{tokenKubeconfig(ctx, ns), kubeconfig} {
			r := pluginAs(kc, "-n", ns, "logs", "watched")
			Expect(r.code).To(Equal(0), r.errOut)
			Expect(r.out).To(Equal("recorded\n"))
		}
		got := recorder.Requests()[before:]
		Expect(got).To(HaveLen(2))
		for _, req := range got {
			Expect(replay(ctx, req, "/apis/agents.agentrun.dev/v1alpha1/namespaces/"+ns+"/agentruns")).To(BeAnonymous(),
				"the host's record of %s, replayed against the API server", req.URL)
			Expect(req.TLS.PeerCertificates).NotTo(BeEmpty())
			Expect(req.TLS.PeerCertificates[0].Subject.CommonName).To(Equal("agentrun-fleet"), "the fleet's identity, not the user's")
		}
	})
})

// tokenKubeconfig writes a kubeconfig whose user is a service account of
// ns, allowed everything, by a bearer token.
func tokenKubeconfig(ctx context.Context, ns string) string {
	GinkgoHelper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admin-bot"}}
	Expect(k8s.Create(ctx, sa)).To(Succeed())
	Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "admin-bot-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}},
	})).To(Succeed())
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	Expect(k8s.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["bot"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["bot"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "bot"}
	cfg.CurrentContext = "bot"
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(clientcmd.WriteToFile(*cfg, path)).To(Succeed())
	return path
}

// BeAnonymous matches the API server's answer to a request it
// authenticated as no one: 401, or 403 to system:anonymous where the API
// server lets anonymous requests in (envtest's does).
func BeAnonymous() OmegaMatcher {
	return Or(HaveField("Code", http.StatusUnauthorized),
		And(HaveField("Code", http.StatusForbidden), HaveField("Body", ContainSubstring("system:anonymous"))))
}

// answer is an HTTP answer's status code and body.
type answer struct {
	Code int
	Body string
}

// replay sends a recorded request's headers to the API server at path,
// as someone holding the record would (with no key of their own).
func replay(ctx context.Context, recorded *http.Request, path string) answer {
	GinkgoHelper()
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(env.Config.CAData)).To(BeTrue())
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(env.Config.Host, "/")+path, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header = recorded.Header.Clone()
	resp, err := c.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return answer{resp.StatusCode, string(body)}
}

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
