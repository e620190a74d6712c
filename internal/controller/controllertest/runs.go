package controllertest

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

func NewRun(prefix string, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(5), Namespace: "default"},
		Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "say hello", HostName: HostA},
	}
	if mutate != nil {
		mutate(run)
	}
	return run
}

func Get(ctx context.Context, run *agentsv1alpha1.AgentRun) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	out := &agentsv1alpha1.AgentRun{}
	Expect(K8s.Get(ctx, client.ObjectKeyFromObject(run), out)).To(Succeed())
	return out
}

// WaitForPhase waits for the run to reach phase and returns it.
func WaitForPhase(ctx context.Context, run *agentsv1alpha1.AgentRun, phase agentsv1alpha1.AgentRunPhase, within time.Duration) *agentsv1alpha1.AgentRun {
	GinkgoHelper()
	var got *agentsv1alpha1.AgentRun
	Eventually(func(g Gomega) {
		got = &agentsv1alpha1.AgentRun{}
		g.Expect(K8s.Get(ctx, client.ObjectKeyFromObject(run), got)).To(Succeed())
		if got.Status.Phase != phase && got.Status.Phase.IsFinished() {
			// A finished run never changes phase again: waiting on would
			// only hide why it ended.
			StopTrying(fmt.Sprintf("the run ended %s, not %s: %s", got.Status.Phase, phase, DescribeStatus(got))).Now()
		}
		g.Expect(got.Status.Phase).To(Equal(phase), DescribeStatus(got))
	}).WithContext(ctx).WithTimeout(within).WithPolling(100 * time.Millisecond).Should(Succeed())
	return got
}

// RunVersion is a version of a run a watch delivered, and when.
type RunVersion struct {
	Run *agentsv1alpha1.AgentRun
	// Seen is when the watch delivered it: after it was written.
	Seen time.Time
	// Deleted marks the last version, the one the run was deleted in.
	Deleted bool
}

// WatchRun starts watching run, which need not exist yet, so that every
// version written from then on is seen, however briefly it stood: a run can
// finish and be deleted between two Gets. The function it returns waits
// until the run is deleted and returns the versions, its deletion last.
func WatchRun(ctx context.Context, run *agentsv1alpha1.AgentRun) func(within time.Duration) []RunVersion {
	GinkgoHelper()
	w, err := K8s.Watch(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace(run.Namespace),
		client.MatchingFields{"metadata.name": run.Name})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	return func(within time.Duration) []RunVersion {
		GinkgoHelper()
		var seen []RunVersion
		last := func() string {
			if len(seen) == 0 {
				return "no version of it seen"
			}
			return "last seen " + DescribeStatus(seen[len(seen)-1].Run)
		}
		timeout := time.After(within)
		for {
			select {
			case e, ok := <-w.ResultChan():
				Expect(ok).To(BeTrue(), "the watch ended before the run was deleted; %s", last())
				Expect(e.Type).NotTo(Equal(watch.Error), "the watch failed: %v", apierrors.FromObject(e.Object))
				v, isRun := e.Object.(*agentsv1alpha1.AgentRun)
				Expect(isRun).To(BeTrue(), "the watch delivered a %T", e.Object)
				seen = append(seen, RunVersion{Run: v, Seen: time.Now(), Deleted: e.Type == watch.Deleted})
				if e.Type == watch.Deleted {
					return seen
				}
			case <-timeout:
				Fail(fmt.Sprintf("the run was not deleted within %v; %s", within, last()))
			case <-ctx.Done():
				Fail(fmt.Sprintf("the spec ended before the run was deleted; %s", last()))
			}
		}
	}
}

// DescribeStatus is what a failed wait prints of a run: its host, its
// conditions' reasons and messages, and its output.
func DescribeStatus(run *agentsv1alpha1.AgentRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %q on host %q, message %q", run.Status.Phase, run.Status.Host, run.Status.Message)
	for _, c := range run.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	fmt.Fprintf(&b, "\n  output: %q", run.Status.Output)
	return b.String()
}

func ConditionOf(run *agentsv1alpha1.AgentRun, t string) metav1.Condition {
	if c := meta.FindStatusCondition(run.Status.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// RunContainers lists the containers of a run on any host.
func RunContainers(ctx context.Context, run *agentsv1alpha1.AgentRun) []containers.Container {
	GinkgoHelper()
	cs, err := Podman.List(ctx, map[string]string{agentsv1alpha1.LabelUID: string(Get(ctx, run).UID)})
	Expect(err).NotTo(HaveOccurred())
	return cs
}

// CreateSecret makes a Podman secret, removed after the spec.
func CreateSecret(name, value string) {
	GinkgoHelper()
	remove, err := testenv.CreatePodmanSecret(name, value)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(remove)
}

// RunEvents lists the Kubernetes events about a run.
func RunEvents(ctx context.Context, run *agentsv1alpha1.AgentRun) []eventsv1.Event {
	GinkgoHelper()
	list := &eventsv1.EventList{}
	Expect(K8s.List(ctx, list, client.InNamespace(run.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == run.Name {
			out = append(out, e)
		}
	}
	return out
}

// CleanUp deletes the run after the spec and waits until its containers are
// gone, which needs a host manager still running then: cleanups run in the
// reverse order of their registration, so register it after the manager's
// start (again, if the spec starts a manager after it).
func CleanUp(run *agentsv1alpha1.AgentRun) {
	DeferCleanup(func(ctx SpecContext) {
		_ = K8s.Delete(ctx, run)
		Eventually(func() []containers.Container {
			cs, _ := Podman.List(ctx, map[string]string{agentsv1alpha1.LabelName: run.Name})
			return cs
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeEmpty())
	})
}
