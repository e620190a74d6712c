package agent

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	names "k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// credentialScript is the credentials run's command: Claude Code, gh, git and
// curl reach their hosts with the placeholder the run's environment holds,
// and the proxy adds the real values; then the run looks for any form of
// them where an agent could: its environment, every process's, the whole
// file system, and what a site without a credential echoes back.
//
// The search cannot hold the values (it would find itself, and the run
// would hold them): it looks for the first 9 characters of each value (see
// prefixPatterns), which LEAK_ROT13 gives it in a form it turns back, and
// plants a marker of its own for each search (/tmp/agentrun-planted, the
// variable PLANTED, a header) that the search must find, and nothing else.
// The file system is searched as the agent's user, which is what an agent
// can read, in every directory but /sys and /proc (whose environ files are
// the second search). That search waits for the process it plants to run
// sleep (its command line says so): until the exec is done, its environ is
// the shell's copy without the marker, then briefly empty. The environments
// and the echoes are also copied to /out, where the spec looks for every
// form of the whole values.
const credentialScript = checkFunc + `read -r -a pats <<< "$(printf %s "$LEAK_ROT13" | tr 'A-Za-z' 'N-ZA-Mn-za-m')"
leaks() { grep -aFf <(printf '%s\n' "${pats[@]}") "$@"; }
marker=${pats[0]}-planted
claude_result() { set -o pipefail; claude -p --output-format json -- 'Say hello with a key you never held.' | grep -o '"result":"[^"]*"'; }
own_header() { set -o pipefail; curl -sS -H 'Authorization: Bearer agent-own-token' "https://$1/headers" | tee "/out/$1"; }
fs_leaks() { printf '%s\n' "$marker" > /tmp/agentrun-planted
  for d in /*; do case $d in /proc|/sys) ;; *) [ -L "$d" ] || grep -rlsF -D skip -f <(printf '%s\n' "${pats[@]}") "$d" ;; esac; done; }
env_leaks() { PLANTED=$marker env | tee /out/env | leaks | cut -d= -f1; }
environ_leaks() { PLANTED=$marker sleep 60 & local p=$! c
  for _ in {1..100}; do read -r -d '' c < "/proc/$p/cmdline"; [ "$c" = sleep ] && break; sleep 0.05; done
  cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | tee /out/environ | leaks | cut -d= -f1; kill $p; }
echo_leaks() { curl -sS -H "X-Planted: $marker" https://echo.test/headers | leaks | cut -d: -f1; }
check placeholders printenv ANTHROPIC_API_KEY GH_TOKEN
check claude claude_result
check gh gh api /user
check git sh -c 'git clone -q https://github.com/agentrun/demo.git /tmp/demo && cat /tmp/demo/README.md'
check stale curl -sS -o /dev/null -w '%{http_code}' https://stale.test/user
check own-header-credentialed own_header api.github.com
check own-header-uncredentialed own_header echo.test
check fs-search fs_leaks
check env-search env_leaks
check environ-search environ_leaks
check echo-search echo_leaks`

var _ = Describe("Credentials the host's proxy adds", func() {
	It("reach Claude Code's, gh's and git's hosts in the declared form, and no form of them reaches the container", func(ctx SpecContext) {
		if inet == nil {
			Skip("the simulated internet needs root")
		}
		By("keeping two values in Podman secrets: a key for the Messages API and a token for GitHub")
		keyPrefix, tokenPrefix, stalePrefix := searchPrefix(), searchPrefix(), searchPrefix()
		key, token, stale := secretValue(keyPrefix), secretValue(tokenPrefix), secretValue(stalePrefix)
		keySecret, tokenSecret := "agentrun-cred-key-"+names.String(5), "agentrun-cred-token-"+names.String(5)
		staleSecret := "agentrun-cred-stale-" + names.String(5)
		createSecret(keySecret, key)
		createSecret(tokenSecret, token)
		createSecret(staleSecret, stale)
		forms := slices.Concat(secretForms("key", key), secretForms("token", token), secretForms("stale token", stale))

		const reply = "Hello with a key I never held."
		api := &messagesAPI{Addr: "api.anthropic.com", key: key, reply: reply}
		anthropic.Store(api)
		DeferCleanup(func() { anthropic.Store(nil) })
		githubAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
		sites := newCredentialSites("Bearer "+token, githubAuth, forms...)
		credentials.Store(sites)
		DeferCleanup(func() { credentials.Store(nil) })

		outDir, err := os.MkdirTemp("/tmp", "agentrun-credentials-out-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, outDir)
		Expect(os.Chmod(outDir, 0o777)).To(Succeed())
		var rot []string
		for _, p := range slices.Concat(prefixPatterns(keyPrefix), prefixPatterns(tokenPrefix), prefixPatterns(stalePrefix)) {
			rot = append(rot, rot13(p))
		}

		run := &agentsv1alpha1.AgentRun{
			ObjectMeta: metav1.ObjectMeta{Name: "credentials-" + names.String(5), Namespace: "default"},
			Spec: agentsv1alpha1.AgentRunSpec{
				Prompt:  "the credential checks",
				Command: []string{"bash", "-c", credentialScript},
				Timeout: &metav1.Duration{Duration: 4 * time.Minute},
				Egress: &agentsv1alpha1.EgressSpec{
					Allow: []string{"api.anthropic.com", githubAPIName, githubName, echoName, staleName},
					Credentials: []agentsv1alpha1.EgressCredential{
						{Host: "api.anthropic.com", SecretName: agentsv1alpha1.SecretName(keySecret), Header: "x-api-key", Format: "{}", PlaceholderEnv: []string{"ANTHROPIC_API_KEY"}},
						// gh sends "token PLACEHOLDER": the declared form
						// differs, so a value swapped into what gh sent
						// would not pass.
						{Host: githubAPIName, SecretName: agentsv1alpha1.SecretName(tokenSecret), Format: "Bearer {}", PlaceholderEnv: []string{"GH_TOKEN"}},
						{Host: githubName, SecretName: agentsv1alpha1.SecretName(tokenSecret), Format: "Basic base64(x-access-token:{})"},
						{Host: staleName, SecretName: agentsv1alpha1.SecretName(staleSecret)},
					},
				},
				Podman: agentsv1alpha1.PodmanSpec{
					Volumes: []string{outDir + ":/out"},
					Env: map[string]agentsv1alpha1.EnvValue{
						"LEAK_ROT13": agentsv1alpha1.EnvValue(strings.Join(rot, " ")),
						// A refused clone fails at once rather than asking.
						"GIT_TERMINAL_PROMPT": "0",
						"DISABLE_TELEMETRY":   "1", "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_MAX_RETRIES": "0",
					},
				},
			},
		}
		done := runToEnd(ctx, run)
		Expect(done.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded), "%s\n%s", done.Status.Message, done.Status.Output)
		GinkgoWriter.Printf("The run's output:\n%s\n", done.Status.Output)
		got := checks(done.Status.Output)
		hold := func(name string, subs ...string) {
			GinkgoHelper()
			Expect(got).To(HaveKey(name), "no check %s:\n%s", name, done.Status.Output)
			for _, s := range subs {
				Expect(got[name]).To(ContainSubstring(s), "check %s; the run's output:\n%s", name, done.Status.Output)
			}
		}

		By("giving the tools the placeholder, which they send, and the hosts the values in the declared forms")
		hold("placeholders", "rc=0 "+agentsv1alpha1.CredentialPlaceholder+" "+agentsv1alpha1.CredentialPlaceholder)
		hold("claude", "rc=0", reply)
		Expect(api.Requests()).To(ContainElement(apiRequest{Method: "POST", Host: "api.anthropic.com", Path: "/v1/messages", Stream: true, KeyOK: true}))
		Expect(api.Requests()).To(HaveEach(HaveField("KeyOK", true)), "every request to api.anthropic.com carried the key")
		hold("gh", "rc=0", githubLogin)
		hold("git", "rc=0", repoReadme)
		Expect(sites.Seen(githubAPIName)).To(ContainElement(request("/user", "Bearer <token>")))
		Expect(sites.Seen(githubName)).NotTo(BeEmpty())
		Expect(sites.Seen(githubName)).To(HaveEach(HaveField("Authorization", []string{"Basic <token, basic auth>"})))

		By("replacing the agent's own Authorization header at a credentialed host, and passing it untouched to a host without a credential")
		Expect(sites.Seen(githubAPIName)).To(ContainElement(request("/headers", "Bearer <token>")))
		Expect(sites.Seen(echoName)).To(ContainElement(request("/headers", "Bearer agent-own-token")))
		Expect(sites.Seen(echoName)).To(HaveEach(HaveField("Leaks", BeEmpty())), "a form of a value reached a host without a credential")
		echoed := func(site string) string {
			GinkgoHelper()
			b, err := os.ReadFile(filepath.Join(outDir, site))
			Expect(err).NotTo(HaveOccurred(), "the run saved no echo of %s", site)
			return string(b)
		}
		Expect(sites.names.Replace(echoed(githubAPIName))).To(ContainSubstring("Authorization: ***"), "the proxy masks the value the credentialed host echoed")
		Expect(echoed(echoName)).To(ContainSubstring("Authorization: Bearer agent-own-token"))

		By("finding no form of either value in the container: only the markers the searches planted")
		hold("fs-search", "/tmp/agentrun-planted")
		Expect(strings.Fields(got["fs-search"])[1:]).To(Equal([]string{"/tmp/agentrun-planted"}), "the files holding a form of a value")
		hold("env-search", "rc=0 PLANTED")
		Expect(strings.Fields(got["env-search"])).To(HaveLen(2), "the variables holding a form of a value")
		hold("environ-search", "rc=0 PLANTED")
		Expect(strings.Fields(got["environ-search"])).To(HaveLen(2), "the processes' variables holding a form of a value")
		hold("echo-search", "rc=0 X-Planted")
		Expect(strings.Fields(got["echo-search"])).To(HaveLen(2), "the echoed headers holding a form of a value")
		for _, f := range []string{"env", "environ", githubAPIName, echoName} {
			Expect(sites.leaks(echoed(f))).To(BeEmpty(), "/out/%s, which the run wrote", f)
		}
		raw, err := json.Marshal(done)
		Expect(err).NotTo(HaveOccurred())
		Expect(sites.leaks(string(raw))).To(BeEmpty(), "the AgentRun")

		By("counting the requests each credential went with in status.egress, and the stale token's refusals")
		Expect(done.Status.Egress).NotTo(BeNil())
		Expect(done.Status.Egress.Credentials).To(ConsistOf(
			credentialUse("api.anthropic.com", keySecret, 0),
			credentialUse(githubAPIName, tokenSecret, 0),
			credentialUse(githubName, tokenSecret, 0),
			credentialUse(staleName, staleSecret, 1),
		))

		By("telling the stale token's owner which secret a host refused, and how to update it")
		hold("stale", "rc=0 401")
		Expect(sites.Seen(staleName)).To(ContainElement(request("/user", "Bearer <stale token>")))
		Eventually(func(g Gomega) {
			list := &eventsv1.EventList{}
			g.Expect(k8s.List(ctx, list, client.InNamespace(run.Namespace))).To(Succeed())
			var rejected []string
			for _, e := range list.Items {
				if e.Regarding.Name == run.Name && e.Reason == agentsv1alpha1.ReasonCredentialRejected {
					g.Expect(e.Type).To(Equal(corev1.EventTypeWarning))
					rejected = append(rejected, e.Note)
				}
			}
			g.Expect(rejected).To(ConsistOf(And(ContainSubstring(staleSecret), ContainSubstring(staleName), ContainSubstring("podman secret create --replace"))))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	})

	It("does not launch a run whose credential's secret does not exist, and names it", func(ctx SpecContext) {
		missing := "agentrun-cred-absent-" + names.String(5)
		run := &agentsv1alpha1.AgentRun{
			ObjectMeta: metav1.ObjectMeta{Name: "credentials-absent-" + names.String(5), Namespace: "default"},
			Spec: agentsv1alpha1.AgentRunSpec{
				Prompt: "never run", Command: []string{"true"},
				// Pinned: placement sends a run only to a host that has its
				// secrets.
				HostName: hostName,
				Egress: &agentsv1alpha1.EgressSpec{
					Allow:       []string{githubAPIName},
					Credentials: []agentsv1alpha1.EgressCredential{{Host: githubAPIName, SecretName: agentsv1alpha1.SecretName(missing)}},
				},
			},
		}
		Expect(k8s.Create(ctx, run)).To(Succeed())
		DeferCleanup(deleteRun, run)
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(run), run)).To(Succeed())
			started := meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionStarted)
			g.Expect(started).NotTo(BeNil())
			g.Expect(started.Reason).To(Equal(agentsv1alpha1.ReasonSecretNotFound))
			g.Expect(started.Message).To(ContainSubstring(missing))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(run.Status.ContainerID).To(BeEmpty(), "no container was made")
	})
})

// request matches a request a site saw for path with these Authorization
// headers.
func request(path string, authorization ...string) any {
	return And(HaveField("Path", path), HaveField("Authorization", authorization))
}

// credentialUse matches a credential's entry in status.egress.credentials:
// used, and rejected that many times.
func credentialUse(host, secret string, rejected int64) any {
	return And(
		HaveField("Host", host), HaveField("SecretName", agentsv1alpha1.SecretName(secret)),
		HaveField("Requests", BeNumerically(">=", 1)), HaveField("Rejected", rejected),
	)
}
