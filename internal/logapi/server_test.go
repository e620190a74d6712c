package logapi_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/logserver"
	"github.com/agentrun/agentrun/internal/logserver/logservertest"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "logapi-"}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// runningRun makes a run on hostName whose container runs.
func runningRun(ctx context.Context, ns, name string) string {
	GinkgoHelper()
	run := &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: agentsv1alpha1.AgentRunSpec{Prompt: "x"}}
	Expect(k8s.Create(ctx, run)).To(Succeed())
	id, err := rt.Create(ctx, containers.Spec{
		Name: "agentrun-" + ns + "-" + name, Image: testImage, Labels: map[string]string{agentsv1alpha1.LabelUID: string(run.UID)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(rt.Start(ctx, id)).To(Succeed())
	run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseRunning, Host: hostName, ContainerID: id, Attempts: 1}
	Expect(k8s.Status().Update(ctx, run)).To(Succeed())
	return id
}

// grantLogs binds the shipped log viewer role to a user in ns.
func grantLogs(ctx context.Context, ns, user string) {
	GinkgoHelper()
	Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "logs-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "log-viewer-role"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})).To(Succeed())
}

func follow(ctx context.Context, user *rest.Config, ns, name string) (*bufio.Reader, error) {
	s, err := logapi.Stream(ctx, user, logserver.Request{Namespace: ns, Name: name, Follow: true, TailLines: -1})
	if err != nil {
		return nil, err
	}
	DeferCleanup(s.Close)
	return bufio.NewReader(s), nil
}

var _ = Describe("The aggregated log API", func() {
	It("streams a run's output, through the API server, to a user allowed in its namespace only", func(ctx SpecContext) {
		a, b := newNamespace(ctx), newNamespace(ctx)
		idA := runningRun(ctx, a, "run")
		runningRun(ctx, b, "run")
		grantLogs(ctx, a, "alice")
		alice := userConfig("alice")
		Expect(rt.Print(idA, "hello\n")).To(Succeed())
		lines, err := follow(ctx, alice, a, "run")
		Expect(err).NotTo(HaveOccurred())
		Expect(lines.ReadString('\n')).To(Equal("hello\n"))

		_, err = follow(ctx, alice, b, "run")
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "alice reads in %s only: %v", a, err)
		_, err = follow(ctx, userConfig("mallory"), a, "run")
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "a user without get agentruns/log: %v", err)
	})

	It("refuses with 403 a user the API server lets through but who may not get agentruns/log in the CRD's group", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		runningRun(ctx, ns, "run")
		// Allowed the aggregated path, not the log itself.
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "path-only"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{logapi.Group}, Resources: []string{"agentruns/log"}, Verbs: []string{"get"}}},
		}
		Expect(k8s.Create(ctx, role)).To(Succeed())
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "path-only"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "pathfinder"}},
		})).To(Succeed())
		_, err := follow(ctx, userConfig("pathfinder"), ns, "run")
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring(`User "pathfinder" cannot get agentruns/log in the namespace "` + ns + `"`))
	})

	It("caps the streams one user follows, and the streams to one host, with 429", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		for _, u := range []string{"carol", "dave"} {
			grantLogs(ctx, ns, u)
		}
		carol, dave := userConfig("carol"), userConfig("dave")
		open := func(user *rest.Config, name string) error {
			runningRun(ctx, ns, name)
			_, err := follow(ctx, user, ns, name)
			return err
		}
		for i := range limits.PerUser {
			Expect(open(carol, "carol-"+string(rune('a'+i)))).To(Succeed())
		}
		// The refusal reaches the user at once: one request, not the ten
		// retries client-go makes on a Retry-After by default (50 s of
		// silence in kubectl agentrun logs).
		var asked atomic.Int32
		counted := rest.CopyConfig(carol)
		counted.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(req *http.Request) (*http.Response, error) {
				asked.Add(1)
				return rt.RoundTrip(req)
			})
		}
		err := open(counted, "carol-over")
		Expect(apierrors.IsTooManyRequests(err)).To(BeTrue(), "past the per-user cap: %v", err)
		Expect(err.Error()).To(ContainSubstring(`user "carol" already follows`))
		Expect(asked.Load()).To(BeEquivalentTo(1), "requests sent for one refused stream")
		for i := range limits.PerHost - limits.PerUser {
			Expect(open(dave, "dave-"+string(rune('a'+i)))).To(Succeed())
		}
		err = open(dave, "dave-over")
		Expect(apierrors.IsTooManyRequests(err)).To(BeTrue(), "past the per-host cap: %v", err)
		Expect(err.Error()).To(ContainSubstring("host " + hostName + " already serves"))
	})

	It("refuses a host that publishes a plain http:// endpoint, and sends it nothing", func(ctx SpecContext) {
		var got atomic.Int32
		plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
		DeferCleanup(plain.Close)
		// A CA that would pass, so that only the scheme is wrong.
		Expect(logservertest.PublishHost(ctx, k8s, "plain-http", plain.URL, fleet.CA.CertPEM)).To(Succeed())
		ns := newNamespace(ctx)
		run := &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "run"}, Spec: agentsv1alpha1.AgentRunSpec{Prompt: "x"}}
		Expect(k8s.Create(ctx, run)).To(Succeed())
		run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseRunning, Host: "plain-http", ContainerID: "c1", Attempts: 1}
		Expect(k8s.Status().Update(ctx, run)).To(Succeed())
		grantLogs(ctx, ns, "erin")
		_, err := follow(ctx, userConfig("erin"), ns, "run")
		Expect(apierrors.IsServiceUnavailable(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("is not an https:// URL"))
		Expect(got.Load()).To(BeZero())
	})

	It("refuses callers that go around the API server, whatever credentials they show", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		runningRun(ctx, ns, "run")
		path := "/apis/" + logapi.Group + "/" + logapi.Version + "/namespaces/" + ns + "/agentruns/run/log"
		// The admin's own client certificate, and a request that claims to
		// be the admin in the aggregator's headers, sent to the fleet's API
		// directly: neither is the aggregator's front-proxy certificate.
		tlsCfg, err := rest.TLSConfigFor(admin)
		Expect(err).NotTo(HaveOccurred())
		tlsCfg.RootCAs, tlsCfg.InsecureSkipVerify = nil, true //nolint:gosec // the test's own server; the point is what it accepts
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+apiAddress+path, nil)
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("X-Remote-User", "admin")
		req.Header.Set("X-Remote-Group", "system:masters")
		resp, err := hc.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	})
})
