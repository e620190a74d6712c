package host

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressgate"
	"github.com/agentrun/agentrun/internal/egressgate/egressgatetest"
	"github.com/agentrun/agentrun/internal/intercept"
	"github.com/agentrun/agentrun/internal/testing/internet"
)

// Secret values of no known token shape, so that nothing recognises them
// but the tests.
const (
	apiValue = "qv7Rk2-plum-orchard-5531"
	gitValue = "zt0Wm9-slate-harbour-8206"
)

var systemBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}

// credentialedRun asks for two credentials, one secret in its env and a
// TLS variable of its own.
func credentialedRun(name string) *agentsv1alpha1.AgentRun {
	return agentrunstest.PlainRun(name, func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Egress = &agentsv1alpha1.EgressSpec{
			Allow: []string{"api.test", "git.test"},
			Credentials: []agentsv1alpha1.EgressCredential{
				{Host: "api.test", SecretName: "api-token", Header: "x-api-key", Format: "{}", PlaceholderEnv: []string{"API_KEY"}},
				{Host: "git.test", SecretName: "git-token", Format: "Basic base64(x-access-token:{})", PlaceholderEnv: []string{"GH_TOKEN", "GITHUB_TOKEN"}},
			},
		}
		r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"OTHER_TOKEN": "other-token"}
		r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"SSL_CERT_FILE": "/home/agent/mine.pem"}
	})
}

func credentialHarness(t *testing.T, run *agentsv1alpha1.AgentRun) *harness {
	t.Helper()
	h := proxyingHarness(t, []string{"api.test", "git.test"}, run)
	h.r.EgressProxy.CABundlePaths = systemBundles
	h.podman.SetSecret("api-token", apiValue)
	h.podman.SetSecret("git-token", gitValue)
	h.podman.AddSecret("other-token")
	return h
}

// The container trusts the run's CA where the images and tools look, sees
// placeholders, and holds no credential: neither its value nor its secret
// as one of Podman's env secrets.
func TestACredentialedRunsContainerTrustsItsCAAndHoldsOnlyPlaceholders(t *testing.T) {
	h := credentialHarness(t, credentialedRun("creds"))
	run := h.reconcileUntil("creds", agentsv1alpha1.PhaseRunning)
	spec, _ := h.podman.SpecOf(run.Status.ContainerName)

	bundle := h.r.egress.gate.RunDir(string(run.UID)) + "/ca-bundle.pem"
	for _, path := range systemBundles {
		if !slices.ContainsFunc(spec.Mounts, func(m containers.Mount) bool {
			return m.Source == bundle && m.Destination == path && slices.Equal(m.Options, []string{"ro"})
		}) {
			t.Errorf("mounts %+v lack the run's bundle read-only at %s", spec.Mounts, path)
		}
	}
	for _, name := range []string{"SSL_CERT_FILE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} {
		if spec.Env[name] != "/run/agentrun/ca-bundle.pem" {
			t.Errorf("%s=%q, want the run's bundle (over the run's own)", name, spec.Env[name])
		}
	}
	for _, name := range []string{"API_KEY", "GH_TOKEN", "GITHUB_TOKEN"} {
		if spec.Env[name] != agentsv1alpha1.CredentialPlaceholder {
			t.Errorf("%s=%q, want the placeholder", name, spec.Env[name])
		}
	}
	if want := map[string]string{"OTHER_TOKEN": "other-token"}; !reflect.DeepEqual(spec.SecretEnv, want) {
		t.Errorf("env secrets %v, want only the run's secretsEnv %v", spec.SecretEnv, want)
	}
	if all := fmt.Sprintf("%#v", spec); strings.Contains(all, apiValue) || strings.Contains(all, gitValue) {
		t.Errorf("the container's spec holds a credential's value: %s", all)
	}
	want := []agentsv1alpha1.EgressCredentialStatus{{Host: "api.test", SecretName: "api-token"}, {Host: "git.test", SecretName: "git-token"}}
	if !reflect.DeepEqual(run.Status.Egress.Credentials, want) {
		t.Errorf("status.egress.credentials = %+v, want %+v", run.Status.Egress.Credentials, want)
	}
	if n := h.podman.Calls("SecretValue"); n != 2 {
		t.Errorf("%d secret reads, want one a credential", n)
	}
	if _, err := os.Stat(bundle); err != nil {
		t.Errorf("the gate wrote no bundle, so it serves the run without its credentials: %v", err)
	}
}

// A run without credentials keeps the images' bundles and its own TLS
// variables: the proxy ends none of its TLS.
func TestARunWithoutCredentialsKeepsItsOwnTrust(t *testing.T) {
	run := credentialedRun("plain")
	run.Spec.Egress.Credentials = nil
	h := credentialHarness(t, run)
	run = h.reconcileUntil("plain", agentsv1alpha1.PhaseRunning)
	spec, _ := h.podman.SpecOf(run.Status.ContainerName)
	if slices.ContainsFunc(spec.Mounts, func(m containers.Mount) bool { return slices.Contains(systemBundles, m.Destination) }) {
		t.Errorf("mounts %+v cover a system bundle", spec.Mounts)
	}
	if spec.Env["SSL_CERT_FILE"] != "/home/agent/mine.pem" || spec.Env["GIT_SSL_CAINFO"] != "" {
		t.Errorf("env %v: want the run's own SSL_CERT_FILE and no other TLS variable", spec.Env)
	}
}

func TestAVolumeOverASystemBundleOfACredentialedRunIsRefused(t *testing.T) {
	run := credentialedRun("over")
	run.Spec.Podman.Volumes = []string{"/srv/ca.pem:" + systemBundles[1] + ":ro"}
	h := credentialHarness(t, run)
	h.r.Policy.BlockedContainerPaths = nil // the host's rule, not the policy's
	run = h.reconcileUntil("over", agentsv1alpha1.PhaseFailed)
	if st := agentruns.StateOf(&run.Status); st.Reason != agentsv1alpha1.ReasonVolumeNotAllowed ||
		st.Message != "a volume mounts at "+systemBundles[1]+", where a proxied run gets its egress" {
		t.Errorf("%s: %s; want VolumeNotAllowed naming the bundle's path", st.Reason, st.Message)
	}
}

// A credential's missing secret keeps the run waiting as a missing env
// secret does, naming the field; the run starts once it exists.
func TestARunWaitsForItsCredentialsSecret(t *testing.T) {
	h := credentialHarness(t, credentialedRun("waits"))
	h.podman.RemoveSecret("git-token")
	var run *agentsv1alpha1.AgentRun
	for range 3 {
		run, _, _ = h.reconcile("waits")
	}
	st := agentruns.StateOf(&run.Status)
	if st.Phase != agentsv1alpha1.PhasePending || st.Reason != agentsv1alpha1.ReasonSecretNotFound ||
		!strings.Contains(st.Message, "'git-token' (spec.egress.credentials[1].secretName)") ||
		!strings.Contains(st.Message, "podman secret create 'git-token' -") || strings.Contains(st.Message, "api-token") {
		t.Fatalf("%s %s: %s; want Pending SecretNotFound naming git-token, its field and the fix", st.Phase, st.Reason, st.Message)
	}
	if n := h.podman.Calls("Create"); n != 0 {
		t.Fatalf("%d containers created without the credential's secret", n)
	}
	h.podman.SetSecret("git-token", gitValue)
	h.reconcileUntil("waits", agentsv1alpha1.PhaseRunning)
}

// A secret that cannot be read, or whose value cannot be sent, is named
// with its field; the value never is.
func TestACredentialThatCannotBeReadOrSentSaysWhyWithoutItsValue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(h *harness)
		phase agentsv1alpha1.AgentRunPhase
		want  string
	}{
		{"a read that fails", func(h *harness) { h.podman.FailNext("SecretValue", errors.New("the secret's driver failed")) },
			agentsv1alpha1.PhaseFailed, "spec.egress.credentials[0].secretName: reading Podman secret 'api-token': the secret's driver failed"},
		{"a value with a line break", func(h *harness) { h.podman.SetSecret("git-token", gitValue+"\nsecond-line") },
			agentsv1alpha1.PhaseFailed, "spec.egress.credentials[1].secretName: Podman secret 'git-token' cannot go in a header: " +
				"the secret's value has a line break or another control character inside it: store the token alone; " +
				"update it with podman secret create --replace 'git-token' -"},
		{"a secret removed since it was looked up", func(h *harness) { h.podman.FailNext("SecretValue", containers.ErrNotFound) },
			agentsv1alpha1.PhasePending, "spec.egress.credentials[0].secretName: reading Podman secret 'api-token'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := credentialHarness(t, credentialedRun("unread"))
			tc.fault(h)
			var run *agentsv1alpha1.AgentRun
			for range 2 {
				run, _, _ = h.reconcile("unread")
			}
			st := agentruns.StateOf(&run.Status)
			if st.Phase != tc.phase || !strings.Contains(st.Message, tc.want) {
				t.Errorf("%s %s: %s; want %s saying %q", st.Phase, st.Reason, st.Message, tc.phase, tc.want)
			}
			if strings.Contains(st.Message, apiValue) || strings.Contains(st.Message, gitValue) {
				t.Errorf("the message shows a value: %s", st.Message)
			}
			if n := h.podman.Calls("Create"); n != 0 {
				t.Errorf("%d containers created", n)
			}
		})
	}
}

// A manager that restarts while the run runs serves it again with its
// credentials, read afresh: the earlier process's went with it.
func TestARestartedHostReadsTheCredentialsAgain(t *testing.T) {
	h := credentialHarness(t, credentialedRun("again"))
	run := h.reconcileUntil("again", agentsv1alpha1.PhaseRunning)
	reads := h.podman.Calls("SecretValue")
	_ = h.r.egress.gate.Close()
	gate, err := egressgate.New(h.r.EgressProxy.SocketDir, egress.Config{}, egressgate.Roots{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gate.Close() })
	h.r.egress = egressRuns{gate: gate, host: agentrunstest.Host, recorder: h.recorder, clock: h.clock}
	h.pass("again")
	if !gate.Serving(string(run.UID)) {
		t.Fatal("the restarted host does not serve the run")
	}
	if n := h.podman.Calls("SecretValue") - reads; n != 2 {
		t.Errorf("%d secret reads after the restart, want one a credential", n)
	}
}

// A host that refuses a credential gets one event a minute naming the
// secret, the host and the fix. The gate calls Rejected; the test calls
// what the reconciler gave it, as the gate's own tests cover the calling.
func TestARejectedCredentialIsToldAtMostOnceAMinute(t *testing.T) {
	h := credentialHarness(t, credentialedRun("stale"))
	run := h.reconcileUntil("stale", agentsv1alpha1.PhaseRunning)
	_ = h.events()
	p := h.r.egress.byRun[client.ObjectKeyFromObject(run)]
	h.r.egress.rejected(p, "git.test", 401)
	h.clock.Step(30 * time.Second)
	h.r.egress.rejected(p, "api.test", 403)
	evs := h.events()
	want := "Warning CredentialRejected the token in Podman secret git-token was refused by git.test (HTTP 401): " +
		"it may be expired or revoked; update it with podman secret create --replace 'git-token' -"
	if len(evs) != 1 || evs[0] != want {
		t.Errorf("events %q, want only %q", evs, want)
	}
	h.clock.Step(30 * time.Second)
	h.r.egress.rejected(p, "api.test", 403)
	if evs := h.events(); len(evs) != 1 || !strings.Contains(evs[0], "secret api-token was refused by api.test (HTTP 403)") {
		t.Errorf("a minute on: events %q, want one for api.test", evs)
	}
}

// What the proxy counts and a host's refusal reach the run: requests
// through the run's socket to a stand-in that takes the credential once and
// refuses it once, as a service does a revoked token.
func TestTheProxysCountsReachStatusAndARefusalMakesAnEvent(t *testing.T) {
	n := internet.Start(t)
	n.Serve("api.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" || r.Header.Get("X-Api-Key") != apiValue {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
		}
	}))
	h := credentialHarness(t, credentialedRun("used"))
	h.r.ProgressPeriod = 10 * time.Second
	_ = h.r.egress.gate.Close()
	roots, err := egressgate.SystemRoots(n.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	gate, err := egressgate.New(h.r.EgressProxy.SocketDir, egress.Config{Resolver: n.Resolver()}, roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gate.Close() })
	h.r.egress.gate = gate
	run := h.reconcileUntil("used", agentsv1alpha1.PhaseRunning)
	_ = h.events()

	dir := gate.RunDir(string(run.UID))
	c := egressgatetest.RunClient(t, filepath.Join(dir, egressgate.CABundleName), filepath.Join(dir, egressgate.SocketName))
	for path, want := range map[string]int{"/ok": http.StatusOK, "/stale": http.StatusUnauthorized} {
		resp, err := c.Get("https://api.test" + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	evs := h.events()
	if len(evs) != 1 || !strings.Contains(evs[0], "Warning CredentialRejected the token in Podman secret api-token was refused by api.test (HTTP 401)") {
		t.Errorf("events %q, want one CredentialRejected for api-token and api.test", evs)
	}
	want := []agentsv1alpha1.EgressCredentialStatus{{Host: "api.test", SecretName: "api-token", Requests: 2, Rejected: 1}, {Host: "git.test", SecretName: "git-token"}}
	h.clock.Step(10 * time.Second)
	run, _ = h.publish("used")
	if !reflect.DeepEqual(run.Status.Egress.Credentials, want) {
		t.Errorf("status.egress.credentials after a progress refresh = %+v, want %+v", run.Status.Egress.Credentials, want)
	}
	run, _, _ = h.reconcile("used")
	if !reflect.DeepEqual(run.Status.Egress.Credentials, want) {
		t.Errorf("status.egress.credentials after a pass too = %+v, want %+v: counted twice?", run.Status.Egress.Credentials, want)
	}
}

// This process's counts are added to an earlier one's, and setting them
// twice (a pass and a progress refresh) gives the same figures.
func TestCredentialCountsAddToAnEarlierProcesssOnce(t *testing.T) {
	before := []agentsv1alpha1.EgressCredentialStatus{{Host: "api.test", SecretName: "a", Requests: 5, Rejected: 1}, {Host: "git.test", SecretName: "g"}}
	now := map[string]intercept.Counts{"api.test": {Requests: 2, Rejected: 2}}
	want := []agentsv1alpha1.EgressCredentialStatus{{Host: "api.test", SecretName: "a", Requests: 7, Rejected: 3}, {Host: "git.test", SecretName: "g"}}
	for range 2 {
		if got := addCredentialCounts(before, now); !reflect.DeepEqual(got, want) {
			t.Errorf("counts %+v, want %+v", got, want)
		}
	}
	if before[0].Requests != 5 {
		t.Errorf("the earlier process's counts changed: %+v", before[0])
	}
}
