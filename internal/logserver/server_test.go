package logserver_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/logserver"
)

const secretValue = "s3cr3t-v4lue-of-the-token"

// runningRun makes a run on this host whose container runs and can read a
// secret, with no output yet.
func runningRun(ctx context.Context, ns, name string) (*agentsv1alpha1.AgentRun, string) {
	GinkgoHelper()
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: agentsv1alpha1.AgentRunSpec{Prompt: "print a line a second", Podman: agentsv1alpha1.PodmanSpec{
			SecretsEnv: map[string]agentsv1alpha1.SecretName{"GH_TOKEN": agentsv1alpha1.SecretName("gh-" + ns)},
		}},
	}
	Expect(k8s.Create(ctx, run)).To(Succeed())
	rt.SetSecret("gh-"+ns, secretValue)
	id, err := rt.Create(ctx, containers.Spec{
		Name: "agentrun-" + ns + "-" + name, Image: testImage, SecretEnv: map[string]string{"GH_TOKEN": "gh-" + ns},
		Labels: map[string]string{agentsv1alpha1.LabelUID: string(run.UID)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(rt.Start(ctx, id)).To(Succeed())
	run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseRunning, Host: hostName, ContainerID: id, Attempts: 1}
	Expect(k8s.Status().Update(ctx, run)).To(Succeed())
	return run, id
}

func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "logs-"}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// grantLogs binds the shipped log viewer role to a subject in ns.
func grantLogs(ctx context.Context, ns string, subject rbacv1.Subject) {
	GinkgoHelper()
	Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "logs-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "log-viewer-role"},
		Subjects:   []rbacv1.Subject{subject},
	})).To(Succeed())
}

// get asks the endpoint for a run's output as caller (nil: no credentials).
func get(ctx context.Context, caller *rest.Config, r logserver.Request) *http.Response {
	GinkgoHelper()
	if caller == nil {
		caller = &rest.Config{}
	}
	c, err := logserver.Client(caller, caBundle)
	Expect(err).NotTo(HaveOccurred())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL(endpoint), nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := c.Do(req)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(resp.Body.Close)
	return resp
}

func body(resp *http.Response) string {
	GinkgoHelper()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

var _ = Describe("The log endpoint", func() {
	It("streams a run's output live to a user with the role, masked, until the container exits", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		_, id := runningRun(ctx, ns, "counter")
		grantLogs(ctx, ns, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "reader"})
		Expect(rt.Print(id, "line 1 token="+secretValue+"\n")).To(Succeed())

		resp := get(ctx, userConfig("reader"), logserver.Request{Namespace: ns, Name: "counter", Follow: true, TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		lines := bufio.NewReader(resp.Body)
		Expect(lines.ReadString('\n')).To(Equal("line 1 token=***\n"))
		Expect(rt.Print(id, "line 2\n")).To(Succeed())
		Expect(lines.ReadString('\n')).To(Equal("line 2\n"))

		ended := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(lines)
			ended <- err
		}()
		Consistently(ended, "500ms").ShouldNot(Receive(), "the stream ended while the container ran")
		Expect(rt.Exit(id, 0, "last, with "+secretValue)).To(Succeed())
		Eventually(ended, "10s").Should(Receive(BeNil()))
	})

	It("sends the last lines with tailLines, and says 410 once the container is gone", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		_, id := runningRun(ctx, ns, "tail")
		grantLogs(ctx, ns, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tailer"})
		Expect(rt.Exit(id, 0, "one\ntwo\nthree\n")).To(Succeed())
		tailer := userConfig("tailer")
		resp := get(ctx, tailer, logserver.Request{Namespace: ns, Name: "tail", TailLines: 2})
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(body(resp)).To(Equal("two\nthree\n"))

		Expect(rt.Remove(ctx, id)).To(Succeed())
		resp = get(ctx, tailer, logserver.Request{Namespace: ns, Name: "tail", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusGone))
	})

	It("refuses a user without the role with 403, in the run's namespace only", func(ctx SpecContext) {
		ns, other := newNamespace(ctx), newNamespace(ctx)
		runningRun(ctx, ns, "private")
		grantLogs(ctx, other, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "outsider"})
		resp := get(ctx, userConfig("outsider"), logserver.Request{Namespace: ns, Name: "private", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusForbidden))
		Expect(body(resp)).To(ContainSubstring(`User "outsider" cannot get agentruns/log`))
		Expect(body(resp)).NotTo(ContainSubstring(secretValue))
	})

	It("refuses a request without credentials, or with a token the API server does not know, with 401", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		runningRun(ctx, ns, "anonymous")
		resp := get(ctx, nil, logserver.Request{Namespace: ns, Name: "anonymous", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
		resp = get(ctx, &rest.Config{BearerToken: "made-up"}, logserver.Request{Namespace: ns, Name: "anonymous", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	})

	It("accepts a service account's bearer token, checked by TokenReview", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		_, id := runningRun(ctx, ns, "bot")
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bot"}}
		Expect(k8s.Create(ctx, sa)).To(Succeed())
		grantLogs(ctx, ns, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "bot"})
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
		Expect(k8s.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
		Expect(rt.Exit(id, 0, "done\n")).To(Succeed())
		resp := get(ctx, &rest.Config{BearerToken: tr.Status.Token, Timeout: 30 * time.Second}, logserver.Request{Namespace: ns, Name: "bot", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(body(resp)).To(Equal("done\n"))
	})

	It("serves only this host's runs", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		run, _ := runningRun(ctx, ns, "elsewhere")
		run.Status.Host = "host-b"
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		grantLogs(ctx, ns, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "wanderer"})
		resp := get(ctx, userConfig("wanderer"), logserver.Request{Namespace: ns, Name: "elsewhere", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusNotFound))
		Expect(body(resp)).To(ContainSubstring("does not run on host host-a"))
	})
})
