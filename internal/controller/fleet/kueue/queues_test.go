package kueue_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/controller/fleet/kueue"
	"github.com/agentrun/agentrun/internal/kueueapi"
	"github.com/agentrun/agentrun/internal/testing/kueuetest"
)

// apply creates the Kueue objects of a YAML stream (what an administrator
// applies, docs/kueue.md), deleted after the spec.
func apply(ctx context.Context, manifests string) {
	GinkgoHelper()
	for _, doc := range strings.Split(manifests, "\n---\n") {
		obj := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed())
		Expect(controllertest.K8s.Create(ctx, obj)).To(Succeed(), "creating %s %s", obj.GetKind(), obj.GetName())
		DeferCleanup(func(ctx SpecContext) { _ = controllertest.K8s.Delete(ctx, obj) })
	}
}

// update replaces a Kueue object applied before with manifest's version.
func update(ctx context.Context, manifest string) {
	GinkgoHelper()
	obj := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte(manifest), &obj.Object)).To(Succeed())
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(obj.GroupVersionKind())
	Expect(controllertest.K8s.Get(ctx, client.ObjectKeyFromObject(obj), current)).To(Succeed())
	obj.SetResourceVersion(current.GetResourceVersion())
	Expect(controllertest.K8s.Update(ctx, obj)).To(Succeed())
}

// namespace makes a namespace for a team, deleted after the spec.
func namespace(ctx context.Context, prefix string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(5)}}
	Expect(controllertest.K8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// flavor is a ResourceFlavor.
func flavor(name string) string {
	return fmt.Sprintf(`apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: %s`, name)
}

// clusterQueue is a ClusterQueue whose nominal quota of flavor is runs runs
// (and CPU and memory to spare); cohort and preemption, when set, are its.
func clusterQueue(name, flavor string, runs int, cohort, preemption string) string {
	spec := ""
	if cohort != "" {
		spec += "\n  cohortName: " + cohort
	}
	if preemption != "" {
		spec += "\n  preemption:\n" + preemption
	}
	return fmt.Sprintf(`apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata:
  name: %[1]s
spec:
  namespaceSelector: {}%[4]s
  resourceGroups:
  - coveredResources: [cpu, memory, %[5]s]
    flavors:
    - name: %[2]s
      resources:
      - name: cpu
        nominalQuota: 64
      - name: memory
        nominalQuota: 64Gi
      - name: %[5]s
        nominalQuota: %[3]d`, name, flavor, runs, spec, agentsv1alpha1.ResourceRun)
}

// localQueue is a LocalQueue of namespace ns feeding clusterQueue.
func localQueue(ns, name, clusterQueue string) string {
	return fmt.Sprintf(`apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata:
  namespace: %s
  name: %s
spec:
  clusterQueue: %s`, ns, name, clusterQueue)
}

// priorityClass is a WorkloadPriorityClass.
func priorityClass(name string, value int) string {
	return fmt.Sprintf(`apiVersion: kueue.x-k8s.io/v1beta2
kind: WorkloadPriorityClass
metadata:
  name: %s
value: %d`, name, value)
}

// queuedRun is an unpinned run in namespace ns's LocalQueue queue that
// runs command.
func queuedRun(prefix, ns, queue string, command string, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	return controllertest.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
		r.Namespace, r.Spec.HostName = ns, ""
		r.Labels = map[string]string{agentsv1alpha1.LabelQueueName: queue}
		r.Spec.Command = []string{"sh", "-c", command, "sh"}
		if mutate != nil {
			mutate(r)
		}
	})
}

// workloadOf reads the run's Workload.
func workloadOf(ctx context.Context, run *agentsv1alpha1.AgentRun) (*kueueapi.Workload, error) {
	wl := &kueueapi.Workload{}
	return wl, controllertest.K8s.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: kueue.WorkloadName(run.Name)}, wl)
}

// eventsWithReason are the notes of the run's events with that reason.
func eventsWithReason(ctx context.Context, run *agentsv1alpha1.AgentRun, reason string) []string {
	var out []string
	for _, e := range controllertest.RunEvents(ctx, run) {
		if e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

// kubectl runs envtest's kubectl as the suite's admin and returns its output.
func kubectl(args ...string) string {
	GinkgoHelper()
	kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(kueuetest.WriteKubeconfig(controllertest.Config, kubeconfig)).To(Succeed())
	out, err := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "kubectl %v: %s", args, out)
	return string(out)
}
