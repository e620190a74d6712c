package logserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/logserver"
	"github.com/agentrun/agentrun/internal/redact"
	"github.com/agentrun/agentrun/internal/runoutput"
	"github.com/agentrun/agentrun/internal/testing/testenv"
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

// call asks the endpoint for a run's output showing cert (nil: none).
func call(ctx context.Context, cert *tls.Certificate, r logserver.Request) (*http.Response, error) {
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(caBundle)).To(BeTrue())
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL(endpoint), nil)
	Expect(err).NotTo(HaveOccurred())
	return c.Do(req)
}

// get asks the endpoint for a run's output as the fleet.
func get(ctx context.Context, r logserver.Request) *http.Response {
	GinkgoHelper()
	resp, err := call(ctx, &fleet.Certificate, r)
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
	It("streams a run's output live to the fleet, masked, until the container exits, reading the secret values once", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		_, id := runningRun(ctx, ns, "counter")
		Expect(rt.Print(id, "line 1 token="+secretValue+"\n")).To(Succeed())
		reads := rt.Calls("SecretValues")
		resp := get(ctx, logserver.Request{Namespace: ns, Name: "counter", Follow: true, TailLines: -1})
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
		Expect(rt.Calls("SecretValues")).To(Equal(reads+1), "the secret values are read once per stream, not per line")
	})

	It("masks with the values its container started with, though the secret was replaced since", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		run, id := runningRun(ctx, ns, "replaced")
		c, err := rt.Inspect(ctx, id)
		Expect(err).NotTo(HaveOccurred())
		// What the host holds from the container's start.
		held, err := runoutput.Redactor(ctx, rt, run, c)
		Expect(err).NotTo(HaveOccurred())
		// Replaced during the run: the engine (as Podman 5 does) now shows
		// the new value, while the container still has the old one.
		rt.SetSecret("gh-"+ns, "an0ther-v4lue-set-after-the-start")
		Expect(rt.Print(id, "token="+secretValue+"\n")).To(Succeed())
		Expect(rt.Exit(id, 0, "")).To(Succeed())

		srv := &logserver.Server{Host: hostName, Runtime: rt, Reader: k8s, Log: GinkgoLogr,
			Held: func(key types.NamespacedName, containerID string) *redact.Redactor {
				if key == client.ObjectKeyFromObject(run) && containerID == id {
					return held
				}
				return nil
			}}
		req := httptest.NewRequestWithContext(ctx, http.MethodGet,
			logserver.Request{Namespace: ns, Name: "replaced", TailLines: -1}.URL("https://host.invalid"), nil)
		// What the endpoint's TLS settings let through: a verified chain.
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		Expect(rec.Code).To(Equal(http.StatusOK), rec.Body.String())
		Expect(rec.Body.String()).To(ContainSubstring("token=***"))
		Expect(rec.Body.String()).NotTo(ContainSubstring(secretValue))
	})

	It("sends the last lines with tailLines, and says 410 once the container is gone", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		_, id := runningRun(ctx, ns, "tail")
		Expect(rt.Exit(id, 0, "one\ntwo\nthree\n")).To(Succeed())
		resp := get(ctx, logserver.Request{Namespace: ns, Name: "tail", TailLines: 2})
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(body(resp)).To(Equal("two\nthree\n"))

		Expect(rt.Remove(ctx, id)).To(Succeed())
		resp = get(ctx, logserver.Request{Namespace: ns, Name: "tail", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusGone))
	})

	It("refuses callers without the fleet's certificate: none, or one another CA signed", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		runningRun(ctx, ns, "anonymous")
		r := logserver.Request{Namespace: ns, Name: "anonymous", TailLines: -1}
		_, err := call(ctx, nil, r)
		Expect(err).To(HaveOccurred(), "the handshake needs a client certificate")
		other, err := testenv.NewCA("not-the-fleet")
		Expect(err).NotTo(HaveOccurred())
		impostor, err := other.IssueTLS("agentrun-fleet")
		Expect(err).NotTo(HaveOccurred())
		_, err = call(ctx, &impostor, r)
		Expect(err).To(HaveOccurred(), "a certificate of the same name from another CA")
	})

	It("serves only this host's runs", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		run, _ := runningRun(ctx, ns, "elsewhere")
		run.Status.Host = "host-b"
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		resp := get(ctx, logserver.Request{Namespace: ns, Name: "elsewhere", TailLines: -1})
		Expect(resp.StatusCode).To(Equal(http.StatusNotFound))
		Expect(body(resp)).To(ContainSubstring("does not run on host host-a"))
	})
})
