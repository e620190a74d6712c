package host_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/netguard"
	"github.com/agentrun/agentrun/internal/testing/internet"
)

// A host that proxies its runs, on the simulated internet: allowed.test and
// denied.test are sites there, and the host's proxy resolves names with the
// internet's DNS and may reach its addresses (198.18.0.0/15, which it
// refuses by default).
var _ = Describe("A proxied run", func() {
	var (
		web      *internet.Internet
		hostName string
		cfg      host.HostConfig
	)
	BeforeEach(func() {
		web = internet.Start(GinkgoTB())
		for _, name := range []string{"allowed.test", "denied.test"} {
			web.Serve(name, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from "+name) }))
		}
		hostName = "host-egress-" + rand.String(5)
		cfg = controllertest.HostConfig(hostName, controllertest.Podman, false, 0)
		cfg.Egress.Permitted = []string{"allowed.test"}
		cfg.EgressProxy.Proxy = egress.Config{
			Resolver:     web.Resolver(),
			Destinations: netguard.Destinations{Allowed: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}},
		}
	})

	proxiedRun := func(script string, volumes ...string) *agentsv1alpha1.AgentRun {
		return controllertest.NewRun("egress", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = hostName
			r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{"allowed.test"}}
			r.Spec.Podman.Volumes = volumes
			r.Spec.Command = []string{"sh", "-c", script, "sh"}
		})
	}

	It("reaches the name it may and is refused another, and status counts both", func(ctx SpecContext) {
		DeferCleanup(controllertest.StartHostConfig(cfg))
		run := proxiedRun(`exec 2>&1; wget -q -O- http://allowed.test/; echo " allowed=$?"; wget -q -O- http://denied.test/; echo " denied=$?"`)
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 60*time.Second)

		Expect(done.Status.Output).To(ContainSubstring("hello from allowed.test allowed=0"))
		Expect(done.Status.Output).To(ContainSubstring("403 Forbidden\n denied=1"))
		Expect(done.Status.Output).NotTo(ContainSubstring("hello from denied.test"))
		Expect(web.Connections("denied.test")).To(BeZero())
		Expect(done.Status.Egress).To(Equal(&agentsv1alpha1.EgressStatus{
			Mode: agentsv1alpha1.EgressProxy, Allow: []string{"allowed.test"}, Allowed: 1, Refused: 1,
			TopRefused: []agentsv1alpha1.EgressRefusal{{Destination: "denied.test:80", Count: 1}},
		}))
		Eventually(func() []string { return eventReasons(ctx, run) }).WithContext(ctx).WithTimeout(10 * time.Second).
			Should(ContainElement(agentsv1alpha1.ReasonEgressDenied))
		expectNoSocketDir(cfg, done)
	}, SpecTimeout(2*time.Minute))

	It("has no network while no manager serves its socket, and its proxy again once one does", func(ctx SpecContext) {
		sync, err := os.MkdirTemp("/tmp", "agentrun-egress-sync-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, sync)
		Expect(os.Chmod(sync, 0o777)).To(Succeed())
		stop := controllertest.StartHostConfig(cfg)
		run := proxiedRun(`exec 2>&1
await() { while [ ! -e /sync/$1 ]; do sleep 0.1; done; }
touch /sync/started
await down; wget -q -O- http://allowed.test/down; echo " down=$?"; touch /sync/tried
await up; wget -q -O- http://allowed.test/up; echo " up=$?"`, sync+":/sync")
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		// Running means the container started, not that the command did:
		// the egress forwarder runs it once the proxy answers, and waits
		// for it (a minute) when the manager is stopped first. The command
		// says when it runs.
		Eventually(func() error { _, err := os.Stat(filepath.Join(sync, "started")); return err }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())

		stop()
		Expect(os.WriteFile(filepath.Join(sync, "down"), nil, 0o644)).To(Succeed())
		Eventually(func() error { _, err := os.Stat(filepath.Join(sync, "tried")); return err }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		// The next manager's first pass finds the run running and serves
		// its socket again.
		DeferCleanup(controllertest.StartHostConfig(cfg))
		// Cleanups run last first: this one, registered after the next
		// manager's start, removes the run while that manager still runs to
		// remove its container.
		controllertest.CleanUp(run)
		socket := filepath.Join(cfg.EgressProxy.SocketDir, string(controllertest.Get(ctx, run).UID), "egress.sock")
		Eventually(func() error {
			c, err := net.Dial("unix", socket)
			if err == nil {
				_ = c.Close()
			}
			return err
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(os.WriteFile(filepath.Join(sync, "up"), nil, 0o644)).To(Succeed())

		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
		Expect(done.Status.Output).To(ContainSubstring(" down=1"))
		Expect(done.Status.Output).To(ContainSubstring("hello from allowed.test up=0"))
		Expect(done.Status.Egress.Allowed).To(Equal(int64(1)))
	}, SpecTimeout(2*time.Minute))

	It("with a credential trusts its run's CA at the image's bundle path and holds only the placeholder", func(ctx SpecContext) {
		cfg.EgressProxy.CABundlePaths = []string{"/etc/ssl/certs/ca-certificates.crt"}
		cfg.EgressProxy.UpstreamCAFile = web.CAFile()
		DeferCleanup(controllertest.StartHostConfig(cfg))
		secret, value := "agentrun-cred-"+rand.String(5), "mq3-copper-"+rand.String(12)
		controllertest.CreateSecret(secret, value)
		run := proxiedRun(`exec 2>&1
cmp /etc/ssl/certs/ca-certificates.crt /run/agentrun/ca-bundle.pem && echo bundle=mounted
awk '$5 == "/etc/ssl/certs/ca-certificates.crt" { split($6, o, ","); print "bundle=" o[1] }' /proc/self/mountinfo
echo "ssl=$SSL_CERT_FILE git=$GIT_SSL_CAINFO node=$NODE_EXTRA_CA_CERTS key=$API_KEY"
env; cat /proc/self/environ`)
		run.Spec.Egress.Credentials = []agentsv1alpha1.EgressCredential{{Host: "allowed.test", SecretName: agentsv1alpha1.SecretName(secret), PlaceholderEnv: []string{"API_KEY"}}}
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 60*time.Second)

		Expect(done.Status.Output).To(ContainSubstring("bundle=mounted\n"))
		Expect(done.Status.Output).To(ContainSubstring("bundle=ro\n"))
		Expect(done.Status.Output).To(ContainSubstring("ssl=/run/agentrun/ca-bundle.pem git=/run/agentrun/ca-bundle.pem node=/run/agentrun/ca-bundle.pem key=agentrun-injected\n"))
		Expect(done.Status.Output).NotTo(ContainSubstring(value))
		Expect(done.Status.Egress.Credentials).To(Equal([]agentsv1alpha1.EgressCredentialStatus{{Host: "allowed.test", SecretName: agentsv1alpha1.SecretName(secret)}}))
	}, SpecTimeout(2*time.Minute))

	It("ends EgressUnavailable when its forwarder finds no proxy", func(ctx SpecContext) {
		cfg.Runtime = socketRemovedAtStart{Runtime: cfg.Runtime, dir: cfg.EgressProxy.SocketDir}
		// Not the minute a manager's restart is given.
		cfg.EgressProxy.ProxyWait = 2 * time.Second
		DeferCleanup(controllertest.StartHostConfig(cfg))
		run := proxiedRun(`echo ran`)
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 60*time.Second)
		Expect(controllertest.ConditionOf(done, agentsv1alpha1.ConditionFinished).Reason).To(Equal(agentsv1alpha1.ReasonEgressUnavailable))
		Expect(done.Status.Message).To(ContainSubstring("found no proxy on host " + hostName))
		Expect(done.Status.Output).To(ContainSubstring("no egress proxy answers"))
		Expect(done.Status.Output).NotTo(ContainSubstring("ran"))
	}, SpecTimeout(2*time.Minute))

	It("asking beyond its host's ceiling ends EgressNotPermitted without a container", func(ctx SpecContext) {
		DeferCleanup(controllertest.StartHostConfig(cfg))
		run := proxiedRun(`echo ran`)
		run.Spec.Egress.Allow = append(run.Spec.Egress.Allow, "denied.test", "*.denied.test")
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)
		done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseFailed, 30*time.Second)
		Expect(controllertest.ConditionOf(done, agentsv1alpha1.ConditionFinished).Reason).To(Equal(agentsv1alpha1.ReasonEgressNotPermitted))
		Expect(done.Status.Message).To(ContainSubstring("asks for denied.test, *.denied.test, beyond what host " + hostName + " permits"))
		Expect(controllertest.HostCreates.WithPrefix("agentrun-default-" + run.Name + "-")).To(BeZero())
	}, SpecTimeout(time.Minute))
})

// socketRemovedAtStart is a host's runtime that removes a run's egress
// socket as its container starts: a proxy gone at the worst moment.
type socketRemovedAtStart struct {
	containers.Runtime
	dir string
}

func (r socketRemovedAtStart) Start(ctx context.Context, id string) error {
	c, err := r.Inspect(ctx, id)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(r.dir, c.Labels[agentsv1alpha1.LabelUID], "egress.sock")); err != nil {
		return err
	}
	return r.Runtime.Start(ctx, id)
}

// expectNoSocketDir checks that a finished run's socket directory is gone.
func expectNoSocketDir(cfg host.HostConfig, run *agentsv1alpha1.AgentRun) {
	GinkgoHelper()
	Eventually(func() bool {
		_, err := os.Stat(filepath.Join(cfg.EgressProxy.SocketDir, string(run.UID)))
		return os.IsNotExist(err)
	}).WithTimeout(10 * time.Second).Should(BeTrue())
	_, err := net.Dial("unix", filepath.Join(cfg.EgressProxy.SocketDir, string(run.UID), "egress.sock"))
	Expect(err).To(HaveOccurred())
}

// eventReasons are the reasons of the run's events.
func eventReasons(ctx context.Context, run *agentsv1alpha1.AgentRun) []string {
	var out []string
	for _, e := range controllertest.RunEvents(ctx, run) {
		out = append(out, e.Reason)
	}
	return out
}
