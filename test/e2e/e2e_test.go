package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// newNamespace creates a namespace for one spec and deletes it afterwards.
func newNamespace() string {
	GinkgoHelper()
	ns := "e2e-" + rand.String(6)
	kubectlOK("create", "namespace", ns)
	DeferCleanup(func() { _, _ = kubectl("delete", "namespace", ns, "--wait=false") })
	return ns
}

// ensureSampleNeeds creates what the reference sample refers to on this host
// (its two Podman secrets and its volume's host directory) when missing, and
// removes what it created afterwards.
func ensureSampleNeeds() {
	GinkgoHelper()
	// On the service under test, through its API: the host's CLI would
	// write to its own store, not the 5.x service's.
	podman, err := testenv.Podman()
	Expect(err).NotTo(HaveOccurred())
	for _, secret := range []string{"github-token", "gitlab-token"} {
		if podman.SecretExists(secret) {
			continue
		}
		remove, err := testenv.CreatePodmanSecret(secret, "e2e-not-a-real-token")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(remove)
	}
	for _, dir := range []string{"/home/user", "/home/user/myrepo"} {
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		Expect(os.Mkdir(dir, 0o755)).To(Succeed())
		// The workdir is writable for the containers' non-root user, as
		// make demo makes it.
		Expect(os.Chown(dir, 1000, 1000)).To(Succeed())
		DeferCleanup(func() { _ = os.RemoveAll(dir) })
	}
}

func scrapeMetrics() string {
	GinkgoHelper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return string(body)
}

// metricValue returns the value of the first sample whose line starts with
// prefix (metric name and labels), and whether there is one.
func metricValue(metrics, prefix string) (float64, bool) {
	GinkgoHelper()
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			Expect(err).NotTo(HaveOccurred())
			return v, true
		}
	}
	return 0, false
}

// mustMetric is metricValue for a sample that must be there.
func mustMetric(metrics, prefix string) float64 {
	GinkgoHelper()
	v, ok := metricValue(metrics, prefix)
	Expect(ok).To(BeTrue(), "no metric %s in:\n%s", prefix, metrics)
	return v
}

// counter is metricValue for a counter or a histogram's count, which is
// absent until its first event: absent reads as 0.
func counter(metrics, prefix string) float64 {
	GinkgoHelper()
	v, _ := metricValue(metrics, prefix)
	return v
}

// pidAlive reports whether the process pid exists and is not a zombie (a
// killed process whose parent has not reaped it yet still answers kill -0).
func pidAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state ...": the state follows the last parenthesis.
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	fields := strings.Fields(rest)
	return len(fields) > 0 && fields[0] != "Z"
}

func readPid(name string) int {
	GinkgoHelper()
	data, err := os.ReadFile(filepath.Join(stateDir, name+".pid"))
	Expect(err).NotTo(HaveOccurred())
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	Expect(err).NotTo(HaveOccurred())
	return pid
}

// The specs share one stack but nothing else: each makes what it looks at, so
// they pass in any order (go test ./test/e2e -ginkgo.randomize-all).
var _ = Describe("agentrun on the local stack", func() {
	It("runs the samples applied with kubectl, and kubectl shows them", func() {
		ns := newNamespace()
		ensureSampleNeeds()
		kubectlOK("apply", "-n", ns, "-k", filepath.Join(root, "config", "samples"))
		kubectlOK("wait", "-n", ns, "--for=condition=Succeeded", "agentrun/hello", "agentrun/review-prs", "agentrun/fetch-pages", "agentrun/whoami", "--timeout=90s")

		table := kubectlOK("get", "agentruns", "-n", ns)
		Expect(strings.Fields(strings.SplitN(table, "\n", 2)[0])).To(Equal([]string{"NAME", "PHASE", "HOST", "ATTEMPTS", "EXIT", "DURATION", "AGE"}))
		Expect(table).To(MatchRegexp(`(?m)^hello\s+Succeeded\s+e2e\s+1\s+0\s+\d+s\s+\S+$`))
		Expect(table).To(MatchRegexp(`(?m)^review-prs\s+Succeeded\s+e2e\s+1\s+0\s+\d+s\s+\S+$`))

		wide := kubectlOK("get", "ar", "-n", ns, "-o", "wide")
		Expect(strings.Fields(strings.SplitN(wide, "\n", 2)[0])).To(Equal(
			[]string{"NAME", "PHASE", "HOST", "ATTEMPTS", "EXIT", "DURATION", "EGRESS", "CONTAINER", "STARTED", "COMPLETED", "TURNS", "COST", "MESSAGE", "AGE"}))
		Expect(wide).To(MatchRegexp(`(?m)^review-prs\s.*\s1\s+0\.0012\s+container `), "the fake agent's turns and cost")
		Expect(wide).To(MatchRegexp(`(?m)^review-prs\s+Succeeded\s+e2e\s+1\s+0\s+\d+s\s+proxy\s`), "a run that asks nothing is proxied on this host")

		// The stack's stand-in internet answers both names; the run may
		// reach example.com only.
		fetched := kubectlOK("get", "agentrun", "fetch-pages", "-n", ns, "-o", "jsonpath={.status.output}")
		Expect(fetched).To(ContainSubstring("hello from example.com"))
		Expect(fetched).To(ContainSubstring("example.com: fetched"))
		Expect(fetched).To(ContainSubstring("403"), "the proxy refuses example.org")
		Expect(fetched).To(ContainSubstring("example.org: refused"))
		Expect(fetched).NotTo(ContainSubstring("hello from example.org"))
		Expect(kubectlOK("get", "agentrun", "fetch-pages", "-n", ns, "-o", "jsonpath={.status.egress.mode} {.status.egress.allowed} {.status.egress.refused}")).
			To(Equal("proxy 1 1"))

		// whoami holds a placeholder; the host's proxy adds the secret to its
		// request to the stack's stand-in for api.github.com, which echoes
		// the Authorization it received, masked by the proxy on the way back.
		whoami := kubectlOK("get", "agentrun", "whoami", "-n", ns, "-o", "jsonpath={.status.output}")
		Expect(whoami).To(ContainSubstring("GH_TOKEN in the container: agentrun-injected"))
		Expect(whoami).To(ContainSubstring("hello from api.github.com over HTTPS; the request's Authorization: ***"), "the token arrived: the proxy masked what the stand-in echoed")
		Expect(kubectlOK("get", "agentrun", "whoami", "-n", ns, "-o", "jsonpath={.status.egress.credentials[0].host} {.status.egress.credentials[0].secretName} {.status.egress.credentials[0].requests}")).
			To(Equal("api.github.com github-token 1"))

		Expect(kubectlOK("get", "agentrun", "review-prs", "-n", ns, "-o", "jsonpath={.status.agentResult.result}")).
			To(Equal("Done: Review the open PRs using gh CLI"), "the fake agent's JSON result is parsed into status")

		output := kubectlOK("get", "agentrun", "review-prs", "-n", ns, "-o", "jsonpath={.status.output}")
		Expect(output).To(ContainSubstring("fake-agent: working on: Review the open PRs using gh CLI"))

		Expect(kubectlOK("get", "agents", "-n", ns)).To(ContainSubstring("review-prs"), "the agents category lists AgentRuns")
	})

	It("reports a failing run, so kubectl wait --for=condition=Failed returns", func() {
		ns := newNamespace()
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: fails
spec:
  prompt: fail on purpose
  podman:
    env:
      FAKE_AGENT_EXIT: "3"
`)
		kubectlOK("wait", "-n", ns, "--for=condition=Failed", "agentrun/fails", "--timeout=60s")
		Expect(kubectlOK("get", "agentrun", "fails", "-n", ns, "-o", "jsonpath={.status.exitCode} {.status.phase}")).To(Equal("3 Failed"))
		events := kubectlOK("get", "events", "-n", ns, "--field-selector", "involvedObject.name=fails")
		Expect(events).To(MatchRegexp(`Warning\s+ExitedNonZero`))
	})

	It("refuses an invalid manifest, and kubectl prints the field and the rule", func() {
		ns := newNamespace()
		out, err := kubectl("apply", "-n", ns, "-f", filepath.Join(root, "hack", "demo", "invalid-agentrun.yaml"))
		Expect(err).To(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(`The AgentRun "invalid-run" is invalid`))
		Expect(out).To(ContainSubstring("spec.podman.secretsEnv"))
		Expect(out).To(ContainSubstring("(rule: blocked vars)"))
		Expect(out).To(ContainSubstring("(rule: env var format)"))
	})

	It("stops and removes the container of a running run that is deleted", func() {
		ns := newNamespace()
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: long
spec:
  prompt: take your time
  podman:
    env:
      FAKE_AGENT_SLEEP: "300"
`)
		kubectlOK("wait", "-n", ns, "--for=condition=Started", "agentrun/long", "--timeout=60s")
		container := kubectlOK("get", "agentrun", "long", "-n", ns, "-o", "jsonpath={.status.containerName}")
		podman, err := testenv.Podman()
		Expect(err).NotTo(HaveOccurred())
		Expect(podman.ContainerExists(container)).To(BeTrue())

		start := time.Now()
		kubectlOK("delete", "agentrun", "long", "-n", ns, "--timeout=60s")
		GinkgoWriter.Printf("kubectl delete of a running run took %s\n", time.Since(start))
		Expect(podman.ContainerExists(container)).To(BeFalse(), "container %s must be gone", container)
	})

	It("counts the runs and the Podman calls in /metrics", func() {
		// Counters from before this spec's runs, so that it measures what it
		// made: other specs may have run before it, or none.
		before := scrapeMetrics()
		ns := newNamespace()
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: counted-ok
spec:
  prompt: be counted
---
apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: counted-fails
spec:
  prompt: be counted as a failure
  podman:
    env:
      FAKE_AGENT_EXIT: "3"
`)
		kubectlOK("wait", "-n", ns, "--for=condition=Succeeded", "agentrun/counted-ok", "--timeout=60s")
		kubectlOK("wait", "-n", ns, "--for=condition=Failed", "agentrun/counted-fails", "--timeout=60s")

		// The phase gauge counts the runs the host holds: a finished run
		// until its host has removed its containers and released it, which
		// it does a moment after its result (the ends are counted by
		// agentrun_run_duration_seconds below).
		Eventually(func() string {
			return kubectlOK("get", "agentruns", "-n", ns, "-o", `jsonpath={range .items[*]}{.metadata.labels.agents\.agentrun\.dev/released} {end}`)
		}).WithTimeout(30*time.Second).Should(Equal("true true "), "both runs released by their host")
		after := scrapeMetrics()
		for _, phase := range []string{"Pending", "Running", "Succeeded", "Failed", "Cancelled"} {
			mustMetric(after, `agentrun_runs{host="e2e",phase="`+phase+`"}`)
		}
		grew := func(prefix string) float64 {
			GinkgoHelper()
			mustMetric(after, prefix)
			return counter(after, prefix) - counter(before, prefix)
		}
		Expect(grew(`agentrun_launch_latency_seconds_count`)).To(BeNumerically(">=", 2))
		Expect(grew(`agentrun_run_duration_seconds_count{phase="Succeeded"}`)).To(BeNumerically(">=", 1))
		Expect(grew(`agentrun_run_duration_seconds_count{phase="Failed"}`)).To(BeNumerically(">=", 1))
		Expect(grew(`agentrun_podman_api_calls_total{operation="create"}`)).To(BeNumerically(">=", 2))
		Expect(after).To(MatchRegexp(`(?m)^controller_runtime_reconcile_total\{controller="agentrun"`))
	})

	It("restarts a crashed manager by itself, and a dead one on up, keeping the control plane and its AgentRuns", func() {
		ns := newNamespace()
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: before-crash
spec:
  prompt: outlive the manager
`)
		kubectlOK("wait", "-n", ns, "--for=condition=Succeeded", "agentrun/before-crash", "--timeout=60s")
		uid := kubectlOK("get", "agentrun", "before-crash", "-n", ns, "-o", "jsonpath={.metadata.uid}")

		controlPlane, manager := readPid("localstack"), readPid("manager")
		// A crash: the supervisor (hack/supervise.sh, as systemd on a host)
		// starts the manager again.
		Expect(syscall.Kill(manager, syscall.SIGKILL)).To(Succeed())
		Eventually(func() bool { return pidAlive(manager) }).WithTimeout(10 * time.Second).Should(BeFalse())
		Eventually(func() bool { return readPid("manager") != manager && pidAlive(readPid("manager")) }).
			WithTimeout(20*time.Second).Should(BeTrue(), "the supervisor starts a crashed manager again")

		// A manager that nothing restarts (its supervisor killed too): up
		// starts it.
		crashed := readPid("manager")
		Expect(syscall.Kill(readPid("manager.supervisor"), syscall.SIGKILL)).To(Succeed())
		Expect(syscall.Kill(crashed, syscall.SIGKILL)).To(Succeed())
		Eventually(func() bool { return pidAlive(crashed) }).WithTimeout(10 * time.Second).Should(BeFalse())
		out, err := stack("up")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("restarting it; the control plane and its AgentRuns are kept"))
		Expect(out).NotTo(ContainSubstring("starting the control plane"))

		Expect(readPid("localstack")).To(Equal(controlPlane), "the control plane is the same process")
		Expect(pidAlive(controlPlane)).To(BeTrue())
		restarted := readPid("manager")
		Expect(restarted).NotTo(BeElementOf(manager, crashed))
		Expect(pidAlive(restarted)).To(BeTrue())

		Expect(kubectlOK("get", "agentrun", "before-crash", "-n", ns, "-o", "jsonpath={.metadata.uid} {.status.phase}")).
			To(Equal(uid+" Succeeded"), "the AgentRun outlived the manager")

		// The new manager serves the webhook and runs AgentRuns.
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: after-crash
spec:
  prompt: run on the restarted manager
`)
		kubectlOK("wait", "-n", ns, "--for=condition=Succeeded", "agentrun/after-crash", "--timeout=60s")

		out, err = stack("up")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("already up"))
		Expect(readPid("manager")).To(Equal(restarted))
	})
})

var _ = Describe("The kustomize overlays under config/", func() {
	dirs, err := filepath.Glob(filepath.Join(root, "config", "*", "kustomization.yaml"))
	// Without this spec a glob that found nothing (a moved config/, a wrong
	// root) would leave no spec below, and the suite would pass.
	It("are found", func() {
		Expect(err).NotTo(HaveOccurred())
		Expect(dirs).NotTo(BeEmpty(), "no config/*/kustomization.yaml under %s", root)
	})
	for _, k := range dirs {
		dir := filepath.Dir(k)
		It("build: "+filepath.Base(dir), func() {
			out := kubectlOK("kustomize", dir)
			Expect(regexp.MustCompile(`(?m)^kind: `).FindAllString(out, -1)).NotTo(BeEmpty())
		})
	}

	// The version is written once, in the Makefile (AGENTRUN_MANAGER_IMAGE);
	// the manifests repeat it as text, so they are checked against it.
	It("name the image make image builds", func() {
		image := testenv.ManagerImage()
		out := kubectlOK("kustomize", filepath.Join(root, "config", "default"))
		Expect(regexp.MustCompile(`(?m)^\s+image: (\S+)$`).FindAllStringSubmatch(out, -1)).To(
			Equal([][]string{{"        image: " + image, image}}), "config/default's only image, from config/manager")
		unit, err := os.ReadFile(filepath.Join(root, "config", "host", "agentrun-host.container"))
		Expect(err).NotTo(HaveOccurred())
		Expect(regexp.MustCompile(`(?m)^Image=(.*)$`).FindAllStringSubmatch(string(unit), -1)).To(
			Equal([][]string{{"Image=" + image, image}}), "agentrun-host.container's Image=")
	})
})
