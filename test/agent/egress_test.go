package agent

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	names "k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/internet"
)

// The egress matrix of issue 27: runs in proxy mode, their containers with
// no network but loopback and the host's proxy behind the forwarder, against
// the simulated internet (inet, whose resolver the host's proxy uses). Each
// run's command is checkScript with the checks of its role: one line per
// check, which the spec holds against what it must say, the cause of a
// refusal included (the proxy's answer, or the kernel's "Network is
// unreachable" for what never reaches the proxy), so that a check cannot pass
// for another reason (a missing tool, a typo in a name).

// The simulated internet's names. The matrix run asks for the first four:
// allowed.test is served; the other three resolve to addresses the host
// refuses, so that their refusal is the address's, not the name's.
const (
	allowedName  = "allowed.test"
	loopbackName = "loopback.test" // 127.0.0.1
	metadataName = "metadata.test" // 169.254.169.254
	hostName4    = "hostaddr.test" // this machine's main address
	deniedName   = "denied.test"   // served, asked for by no run
	frontedName  = "fronted.test"  // served: the server name of the fronting check
	otherName    = "other.test"    // served, the second run's only name
	udpProbeName = "udp-probe.test"
)

// caPath is where the runs find the internet's CA (a test-only arrangement:
// a real run trusts the public CAs its image holds).
const caPath = "/etc-test/internet-ca.pem"

// checkFunc defines check NAME CMD..., which runs CMD and prints "check
// NAME: rc=N OUTPUT", its output on one line (see checks).
const checkFunc = `check() { local name=$1; shift; local out rc; out=$("$@" 2>&1); rc=$?
  printf 'check %s: rc=%d %s\n' "$name" "$rc" "$(printf %s "$out" | tr '\n' ' ' | cut -c1-400)"; }
`

// checkScript is a run's command: the role's checks, after every run of the
// spec has started (each leaves a file in /sync and waits for the others'),
// so that they run at once.
const checkScript = checkFunc + `touch "/sync/$ROLE"; for i in $(seq 600); do [ "$(ls /sync | wc -l)" -ge "$RUNS" ] && break; sleep 0.2; done
check together ls /sync
direct() { curl -sSv --noproxy '*' --max-time 10 "$@" 2>&1 | grep -E '^curl:|connect fail|Connected to'; return "${PIPESTATUS[0]}"; }
udp() { printf "$DNS_QUERY" > "/dev/udp/$DNS_IP/53"; }
claude_result() { set -o pipefail; claude -p --output-format json -- 'Say hello through the proxy.' | grep -o '"result":"[^"]*"'; }
routes() { echo "interfaces: $(ls /sys/class/net | tr '\n' ' ')ipv4 routes: $(tail -n +2 /proc/net/route | wc -l) ipv6 routes: $(grep -vc ' lo$' /proc/net/ipv6_route)"; }
case $ROLE in
matrix)
  check curl curl -sS https://allowed.test/
  check git sh -c 'git clone -q https://allowed.test/repo.git /tmp/repo && cat /tmp/repo/README.md'
  check gh env GH_HOST=allowed.test GH_ENTERPRISE_TOKEN=t gh api /probe
  check claude claude_result
  check denied-https curl -sS https://denied.test/
  check denied-http curl -sS http://denied.test/
  check other-run curl -sS https://other.test/
  check ip-proxied curl -sS "http://$ALLOWED_IP/"
  check ip-direct direct "https://$ALLOWED_IP/"
  check host-main-proxied curl -sS "http://$HOST_IP:$HOST_PORT/"
  check host-main-direct direct "http://$HOST_IP:$HOST_PORT/"
  check host-main-by-name curl -sS http://hostaddr.test/
  check host-bridge-direct direct "http://$BRIDGE_IP:$HOST_PORT/"
  check metadata-proxied curl -sS http://169.254.169.254/latest/meta-data/
  check metadata-direct direct http://169.254.169.254/latest/meta-data/
  check metadata-by-name curl -sS http://metadata.test/latest/meta-data/
  check loopback-by-name curl -sS http://loopback.test/
  check loopback-by-name-https curl -sS https://loopback.test/
  check udp udp
  check icmp routes
  check ipv6-direct direct -g 'http://[2001:db8::10]/'
  check ipv6-proxied curl -sS -g 'http://[2001:db8::10]/'
  check fronting curl -sS --connect-to fronted.test:443:allowed.test:443 https://fronted.test/
  ;;
other)
  check curl curl -sS https://other.test/
  check matrix-run curl -sS https://allowed.test/
  ;;
defaults)
  check default curl -sS https://api.anthropic.com/
  check matrix-run curl -sS https://allowed.test/
  ;;
esac`

// dnsQuery is a DNS question (A, udp-probe.test) as printf escapes.
func dnsQuery() string {
	msg := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split(udpProbeName, ".") {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0, 0, 1, 0, 1)
	var b strings.Builder
	for _, c := range msg {
		fmt.Fprintf(&b, `\x%02x`, c)
	}
	return b.String()
}

// checks reads the "check NAME: rc=N OUTPUT" lines of a run's output.
func checks(output string) map[string]string {
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^check ([a-z0-9-]+): (.*)$`).FindAllStringSubmatch(output, -1) {
		got[m[1]] = m[2]
	}
	return got
}

// unreachable is what curl and bash say when the kernel has no route: the
// container's network is loopback alone.
const unreachable = "Network is unreachable"

// refusedName, refusedIP and refusedAddress are the proxy's answers (its
// body, which curl prints for plain HTTP; for a CONNECT it shows the status).
const (
	refusedConnect = "CONNECT tunnel failed, response 403"
	refusedName    = "not on the run's egress list"
	refusedIP      = "an IP address: the proxy connects to names only"
	refusedAddress = "the name leads to an address the host refuses"
)

// mainAndBridgeAddress are this machine's first IPv4 address on an
// interface that is not a bridge, and on one that is (Podman's, the local
// stack's): a service bound to 0.0.0.0 answers on both.
func mainAndBridgeAddress(t *testing.T) (main, bridge string) {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipnet, ok := a.(*net.IPNet)
			if !ok || ipnet.IP.To4() == nil || ipnet.IP.IsLoopback() {
				continue
			}
			_, err := os.Stat(filepath.Join("/sys/class/net", ifc.Name, "bridge"))
			switch {
			case err == nil && bridge == "":
				bridge = ipnet.IP.String()
			case err != nil && main == "" && !strings.HasPrefix(ifc.Name, "arinet"):
				main = ipnet.IP.String()
			}
		}
	}
	if main == "" || bridge == "" {
		t.Fatalf("want an IPv4 address on an interface that is not a bridge (got %q) and on a bridge, Podman's (got %q)", main, bridge)
	}
	return main, bridge
}

// The simulated internet's sites and what the matrix run needs to know of
// them, made by simulateInternet.
var (
	allowedIP        netip.Addr
	mainIP, bridgeIP string
	// anthropic serves api.anthropic.com: the spec's Messages API stand-in.
	anthropic atomic.Pointer[messagesAPI]
)

// simulateInternet starts inet with the names of the egress spec; in
// TestAgent, as it needs t.
func simulateInternet(t *testing.T) {
	inet = internet.Start(t)
	inet.Serve("api.anthropic.com", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if api := anthropic.Load(); api != nil {
			api.ServeHTTP(w, r)
			return
		}
		http.Error(w, "no stand-in now", http.StatusServiceUnavailable)
	}))
	// allowed.test serves a repository too, at /repo.git.
	repos := t.TempDir()
	internet.NewGitRepo(t, repos, "repo", map[string]string{"README.md": "cloned through the egress proxy"})
	mux := http.NewServeMux()
	mux.Handle("/repo.git/", internet.GitHandler(t, repos))
	mux.Handle("/", site(allowedName))
	allowedIP = inet.Serve(allowedName, mux)
	serveCredentialSites(t, repos)
	for _, name := range []string{deniedName, frontedName, otherName} {
		inet.Serve(name, site(name))
	}
	mainIP, bridgeIP = mainAndBridgeAddress(t)
	inet.Resolve(loopbackName, netip.MustParseAddr("127.0.0.1"))
	inet.Resolve(metadataName, netip.MustParseAddr("169.254.169.254"))
	inet.Resolve(hostName4, netip.MustParseAddr(mainIP))
}

// hostService serves HTTP on 0.0.0.0 (every address of this machine) until
// the spec ends, counting the requests it gets.
func hostService() (port int, hits *atomic.Int64) {
	GinkgoHelper()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	Expect(err).NotTo(HaveOccurred())
	hits = &atomic.Int64{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "the host's service")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	DeferCleanup(srv.Close)
	return l.Addr().(*net.TCPAddr).Port, hits
}

// site answers every request with its name and the path, and /api/v3/probe
// (gh's API on an Enterprise host) with JSON.
func site(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v3/probe" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"site":%q,"tool":"gh"}`, name)
			return
		}
		fmt.Fprintf(w, "%s says hello at %s", name, r.URL.Path)
	})
}

// egressRun is a proxied run of role with the check script; allow nil: no
// spec.egress, the host's defaults alone.
func egressRun(role string, allow []string, syncDir string, env map[string]agentsv1alpha1.EnvValue) *agentsv1alpha1.AgentRun {
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: "egress-" + role + "-" + names.String(5), Namespace: "default"},
		Spec: agentsv1alpha1.AgentRunSpec{
			Prompt:  "the checks of " + role,
			Command: []string{"bash", "-c", checkScript},
			Timeout: &metav1.Duration{Duration: 4 * time.Minute},
			Podman: agentsv1alpha1.PodmanSpec{
				Volumes: []string{inet.CAFile() + ":" + caPath + ":ro", syncDir + ":/sync"},
				Env: map[string]agentsv1alpha1.EnvValue{
					"ROLE": agentsv1alpha1.EnvValue(role), "RUNS": "3",
					// The test CA, for curl and gh (OpenSSL and Go read
					// SSL_CERT_FILE), git and Claude Code.
					"SSL_CERT_FILE": caPath, "GIT_SSL_CAINFO": caPath, "NODE_EXTRA_CA_CERTS": caPath,
				},
			},
		},
	}
	for k, v := range env {
		run.Spec.Podman.Env[k] = v
	}
	if allow != nil {
		run.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: allow}
	}
	return run
}

var _ = Describe("A run's egress through the host's proxy", func() {
	It("reaches the names it lists with curl, git, gh and Claude Code, and nothing else by any way out", func(ctx SpecContext) {
		if inet == nil {
			Skip("the simulated internet needs root")
		}
		const reply = "Hello through the egress proxy."
		key, secret, _ := standIn(reply)
		api := &messagesAPI{Addr: "api.anthropic.com", key: key, reply: reply}
		anthropic.Store(api)
		DeferCleanup(func() { anthropic.Store(nil) })
		port, hostHits := hostService()

		syncDir, err := os.MkdirTemp("/tmp", "agentrun-egress-sync-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, syncDir)
		Expect(os.Chmod(syncDir, 0o777)).To(Succeed())
		dnsBefore := len(inet.Queries())

		matrix := egressRun("matrix", []string{allowedName, loopbackName, metadataName, hostName4}, syncDir, map[string]agentsv1alpha1.EnvValue{
			"ALLOWED_IP": agentsv1alpha1.EnvValue(allowedIP.String()),
			"HOST_IP":    agentsv1alpha1.EnvValue(mainIP), "BRIDGE_IP": agentsv1alpha1.EnvValue(bridgeIP),
			"HOST_PORT": agentsv1alpha1.EnvValue(fmt.Sprint(port)),
			"DNS_IP":    agentsv1alpha1.EnvValue(inet.DNSAddr().Addr().String()), "DNS_QUERY": agentsv1alpha1.EnvValue(dnsQuery()),
			// Claude Code as the host's default command runs it, with
			// nothing but its API calls, against api.anthropic.com (the
			// host's default name), the stand-in.
			"DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_MAX_RETRIES": "0",
		})
		matrix.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"ANTHROPIC_API_KEY": agentsv1alpha1.SecretName(secret)}
		other := egressRun("other", []string{otherName}, syncDir, nil)
		defaults := egressRun("defaults", nil, syncDir, nil)
		for _, r := range []*agentsv1alpha1.AgentRun{matrix, other, defaults} {
			Expect(k8s.Create(ctx, r)).To(Succeed())
		}
		var done []*agentsv1alpha1.AgentRun
		for _, r := range []*agentsv1alpha1.AgentRun{matrix, other, defaults} {
			d := awaitEnd(ctx, r)
			Expect(d.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "%s: %s\n%s", d.Name, d.Status.Message, d.Status.Output)
			Expect(d.Status.Egress).NotTo(BeNil(), "%s: status.egress", d.Name)
			Expect(d.Status.Egress.Mode).To(Equal(agentsv1alpha1.EgressProxy), d.Name)
			done = append(done, d)
		}

		// want is, for each check, what its line must hold: rc=0 and the
		// answer, or the cause of the refusal.
		type want map[string][]string
		hold := func(run *agentsv1alpha1.AgentRun, w want) {
			GinkgoHelper()
			got := checks(run.Status.Output)
			Expect(got).To(HaveKeyWithValue("together", ContainSubstring("rc=0")), "the runs did not run at once:\n%s", run.Status.Output)
			for name, subs := range w {
				Expect(got).To(HaveKey(name), "%s printed no check %s:\n%s", run.Name, name, run.Status.Output)
				for _, s := range subs {
					Expect(got[name]).To(ContainSubstring(s), "%s, check %s; its output:\n%s", run.Name, name, run.Status.Output)
				}
				if !strings.Contains(got[name], "rc=0") && len(subs) > 0 && subs[0] == "rc=0" {
					Fail(fmt.Sprintf("%s, check %s failed: %s", run.Name, name, got[name]))
				}
			}
		}
		By("reaching allowed.test with curl, git over HTTPS and gh, and the Messages API with Claude Code")
		hold(done[0], want{
			"curl":   {"rc=0", "allowed.test says hello at /"},
			"git":    {"rc=0", "cloned through the egress proxy"},
			"gh":     {"rc=0", `"tool":"gh"`},
			"claude": {"rc=0", reply},
		})
		// (The defaults run's curl and Claude Code's settings calls reach it
		// too.)
		Expect(api.Requests()).To(ContainElement(apiRequest{Method: "POST", Host: "api.anthropic.com", Path: "/v1/messages", Stream: true, KeyOK: true}))

		By("refusing every other way out, each for its own cause")
		hold(done[0], want{
			"denied-https":       {"rc=56", refusedConnect},
			"denied-http":        {"rc=0", "denied.test:80: " + refusedName},
			"other-run":          {"rc=56", refusedConnect},
			"ip-proxied":         {allowedIP.String() + ":80: " + refusedIP},
			"ip-direct":          {"rc=7", unreachable},
			"host-main-proxied":  {refusedIP},
			"host-main-direct":   {"rc=7", unreachable},
			"host-main-by-name":  {"hostaddr.test:80: " + refusedAddress},
			"host-bridge-direct": {"rc=7", unreachable},
			"metadata-proxied":   {refusedIP},
			"metadata-direct":    {"rc=7", unreachable},
			"metadata-by-name":   {"metadata.test:80: " + refusedAddress},
			"loopback-by-name":   {"loopback.test:80: " + refusedAddress},
			// The proxy answers a CONNECT to a listed name, reads the
			// ClientHello (its server name must be the CONNECT name) and
			// only then looks the name up: its refusal closes the tunnel,
			// and status.egress names it (below).
			"loopback-by-name-https": {"rc=35", "SSL_ERROR_SYSCALL"},
			"udp":                    {"rc=1", unreachable},
			"icmp":                   {"interfaces: lo ipv4 routes: 0 ipv6 routes: 0"},
			"ipv6-direct":            {"rc=7", unreachable},
			"ipv6-proxied":           {refusedIP},
			"fronting":               {"rc=35", "SSL_ERROR_SYSCALL"},
		})
		By("letting the second run reach its name and not the first's, and a run without spec.egress only the host's defaults")
		hold(done[1], want{"curl": {"rc=0", "other.test says hello"}, "matrix-run": {"rc=56", refusedConnect}})
		hold(done[2], want{"default": {"rc=0", "invalid x-api-key"}, "matrix-run": {"rc=56", refusedConnect}})

		By("sending nothing to the refused names, the host's service or the internet's resolver")
		Expect(inet.Connections(deniedName)).To(BeZero())
		Expect(inet.Connections(frontedName)).To(BeZero())
		Expect(hostHits.Load()).To(BeZero())
		for _, q := range inet.Queries()[dnsBefore:] {
			Expect(q.Name).NotTo(Equal(udpProbeName), "the run's UDP query reached the resolver")
		}

		By("counting the refusals in each run's status.egress, the fronted name among them")
		Expect(done[0].Status.Egress.Allowed).To(BeNumerically(">=", 4))
		Expect(done[0].Status.Egress.Refused).To(BeNumerically(">=", 10))
		Expect(done[0].Status.Egress.TopRefused).To(ContainElement(HaveField("Destination", frontedName+":443")))
		Expect(done[0].Status.Egress.TopRefused).To(ContainElement(HaveField("Destination", loopbackName+":443")))
		Expect(done[1].Status.Egress.TopRefused).To(ContainElement(HaveField("Destination", allowedName+":443")))
		Expect(done[2].Status.Egress.TopRefused).To(ContainElement(HaveField("Destination", allowedName+":443")))
	})
})
