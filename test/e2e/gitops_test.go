package e2e

import (
	"context"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/podman"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// A run kept in Git, as a GitOps sync applies it: it deletes itself once it
// succeeded (its TTL), and the next sync applies it again.
const keptInGit = `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: kept-in-git
spec:
  prompt: open one pull request
  ttlSecondsAfterFinished: 0
`

var _ = Describe("A run kept in Git", func() {
	It("is waited for with kubectl wait --for=condition=Ready, and does not run again when applied after its TTL deleted it", func(ctx SpecContext) {
		ns := newNamespace()
		waitable := kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: waited-for
spec:
  prompt: say hello
`)
		Expect(waitable).To(ContainSubstring("created"))
		kubectlOK("wait", "-n", ns, "--for=condition=Ready", "agentrun/waited-for", "--timeout=90s")
		Expect(kubectlOK("get", "agentrun", "waited-for", "-n", ns, "-o", "jsonpath={.status.phase}")).To(Equal("Succeeded"))

		// Podman's own events count the containers made for the manifest.
		var creates atomic.Int32
		watch, stop := context.WithCancel(ctx)
		DeferCleanup(stop)
		events, _ := podman.New(testenv.PodmanSocket()).Events(watch, map[string]string{
			agentsv1alpha1.LabelNamespace: ns, agentsv1alpha1.LabelName: "kept-in-git",
		})
		go func() {
			for e := range events {
				if e.Action == "create" {
					creates.Add(1)
				}
			}
		}()

		kubectlApply(ns, keptInGit)
		kubectlOK("wait", "-n", ns, "--for=delete", "agentrun/kept-in-git", "--timeout=90s")
		Eventually(creates.Load).WithTimeout(10 * time.Second).Should(BeEquivalentTo(1))
		Expect(kubectlOK("get", "agentrunrecord", "kept-in-git", "-n", ns, "-o", "jsonpath={.spec.phase} {.spec.reason}")).
			To(Equal("Succeeded Completed"), "the TTL deleted the run, its record stays")

		By("the next sync applies the same manifest")
		kubectlApply(ns, keptInGit)
		kubectlOK("wait", "-n", ns, "--for=condition=Ready", "agentrun/kept-in-git", "--timeout=60s")
		Expect(kubectlOK("get", "agentrun", "kept-in-git", "-n", ns, "-o",
			`jsonpath={.status.phase} {.status.conditions[?(@.type=="Finished")].reason}`)).To(Equal("Succeeded AlreadyRan"))
		Expect(kubectlOK("get", "agentrun", "kept-in-git", "-n", ns, "-o", "jsonpath={.status.message}")).
			To(ContainSubstring("agents.agentrun.dev/rerun"), "the message says how to run it again")
		Consistently(creates.Load).WithTimeout(3*time.Second).Should(BeEquivalentTo(1), "no container for the second apply")
		Expect(kubectlOK("get", "agentrun", "kept-in-git", "-n", ns)).To(ContainSubstring("Succeeded"),
			"an AlreadyRan run stays: its TTL would only make the next sync create it again")

		By("running it again on purpose, with the rerun annotation")
		kubectlOK("delete", "agentrun", "kept-in-git", "-n", ns)
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: kept-in-git
  annotations:
    agents.agentrun.dev/rerun: "2"
spec:
  prompt: open one pull request
  ttlSecondsAfterFinished: 0
`)
		kubectlOK("wait", "-n", ns, "--for=delete", "agentrun/kept-in-git", "--timeout=90s")
		Eventually(creates.Load).WithTimeout(10 * time.Second).Should(BeEquivalentTo(2))
	})
})
