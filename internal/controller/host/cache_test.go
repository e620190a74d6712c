package host

import (
	"context"
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

func TestTrimForCacheKeepsWhatTheReconcilerReads(t *testing.T) {
	// A run waiting for its retry carries its last attempt's result, which
	// its next pass reads.
	run := agentrunstest.Run("big")
	run.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	run.Status = agentsv1alpha1.AgentRunStatus{
		Host: "h", Phase: agentsv1alpha1.PhasePending, ContainerID: "c1", Attempts: 1, Output: "4 KiB of output", Message: "retrying",
		AgentResult: &agentsv1alpha1.AgentResult{Result: "long text", SessionID: "s", IsError: true},
		Conditions:  []metav1.Condition{{Type: agentsv1alpha1.ConditionStarted, Reason: agentsv1alpha1.ReasonBackOff}},
	}
	out, err := agentruns.TrimForCache(run)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*agentsv1alpha1.AgentRun)
	if got.ManagedFields != nil || got.Status.Output != "" || got.Status.AgentResult.Result != "" {
		t.Errorf("managed fields, output or result text kept: %+v", got)
	}
	if got.Status.Phase != agentsv1alpha1.PhasePending || got.Status.ContainerID != "c1" || !got.Status.AgentResult.IsError ||
		got.Spec.Prompt == "" || len(got.Spec.Podman.SecretsEnv) == 0 || len(got.Status.Conditions) != 1 || got.Status.Message == "" {
		t.Errorf("trimmed what the reconciler reads of an unfinished run: %+v", got)
	}
}

func TestTrimForCacheKeepsOfAFinishedRunWhatItsPassesRead(t *testing.T) {
	run := agentrunstest.Run("done")
	run.Finalizers = []string{agentruns.Finalizer}
	run.Spec.TTLSecondsAfterFinished = ptr.To[int32](60)
	done := metav1.Now()
	run.Status = agentsv1alpha1.AgentRunStatus{
		Host: "h", Phase: agentsv1alpha1.PhaseFailed, ContainerID: "c1", ContainerName: "agentrun-team-done-1", Attempts: 2,
		CompletionTime: &done, Output: "4 KiB of output", Message: "exited 1",
		AgentResult: &agentsv1alpha1.AgentResult{Result: "long text", SessionID: "s", IsError: true},
		Conditions: []metav1.Condition{
			{Type: agentsv1alpha1.ConditionFailed, Reason: agentsv1alpha1.ReasonExitedNonZero},
			{Type: agentsv1alpha1.ConditionFinished, Reason: agentsv1alpha1.ReasonExitedNonZero},
			{Type: agentsv1alpha1.ConditionNotified, Reason: agentsv1alpha1.ReasonDelivered},
		},
		SessionDir: "d1",
	}
	out, err := agentruns.TrimForCache(run.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*agentsv1alpha1.AgentRun)
	if got.Spec.Prompt != "" || len(got.Spec.Podman.SecretsEnv) != 0 || len(got.Spec.Podman.Volumes) != 0 ||
		len(got.Status.Conditions) != 2 || got.Status.Message != "" || got.Status.AgentResult.Result != "" {
		t.Errorf("a finished run's prompt, settings, conditions but Finished and Notified, message or result kept: %+v", got)
	}
	if agentruns.StateOf(&got.Status).Reason != agentsv1alpha1.ReasonExitedNonZero ||
		meta.FindStatusCondition(got.Status.Conditions, agentsv1alpha1.ConditionNotified) == nil ||
		got.Status.AgentResult.SessionID != "s" || got.Status.SessionDir != "d1" {
		t.Errorf("trimmed the final reason, the callback's record, or the session of a finished run: %+v", got.Status)
	}
	if got.Spec.HostName != run.Spec.HostName || *got.Spec.TTLSecondsAfterFinished != 60 || got.UID != run.UID ||
		len(got.Finalizers) != 1 || got.Status.Host != "h" || got.Status.Phase != agentsv1alpha1.PhaseFailed ||
		got.Status.ContainerID != "c1" || got.Status.ContainerName == "" || got.Status.Attempts != 2 || got.Status.CompletionTime == nil {
		t.Errorf("trimmed what a finished run's passes read: %+v", got)
	}
}

// behindCache answers Gets for the runs it holds with those copies, as an
// informer cache that has not yet seen this process's latest writes does.
type behindCache struct {
	client.Client
	runs map[client.ObjectKey]*agentsv1alpha1.AgentRun
}

func (c behindCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if old, ok := c.runs[key]; ok {
		old.DeepCopyInto(obj.(*agentsv1alpha1.AgentRun))
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func TestAPassOnACacheBehindItsOwnWritesRepeatsNoPodmanCall(t *testing.T) {
	run := agentrunstest.Run("behind")
	run.Spec.Podman.SecretsEnv = nil
	h := newHarness(t, run)
	key := client.ObjectKeyFromObject(run)
	podmanCalls := func() (n int) {
		for _, m := range []string{"ImageExists", "Create", "Start", "Inspect", "List", "Logs", "Remove"} {
			n += h.podman.Calls(m)
		}
		return n
	}
	passBehind := func(cached *agentsv1alpha1.AgentRun) {
		t.Helper()
		live := h.r.Client
		h.r.Client = behindCache{live, map[client.ObjectKey]*agentsv1alpha1.AgentRun{key: cached}}
		defer func() { h.r.Client = live }()
		before := podmanCalls()
		if _, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
			t.Errorf("a pass on a cache behind its writes: %v", err)
		}
		if n := podmanCalls() - before; n != 0 {
			t.Errorf("a pass on the %s run this process had written over made %d Podman calls, want 0", cached.Status.Phase, n)
		}
	}

	pending, _, _ := h.reconcile("behind") // claimed
	running := h.reconcileUntil("behind", agentsv1alpha1.PhaseRunning)
	passBehind(pending)
	// The launch pass wrote twice: its finalizer, then the status naming
	// the container. A cache may hold the version between the two, which
	// names no container yet (the fake API server numbers versions one by
	// one).
	between := pending.DeepCopy()
	between.Finalizers = running.Finalizers
	version, err := strconv.Atoi(running.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	between.ResourceVersion = strconv.Itoa(version - 1)
	passBehind(between)
	if err := h.podman.Exit(running.Status.ContainerName, 0, "done\n"); err != nil {
		t.Fatal(err)
	}
	finished, _, _ := h.reconcile("behind")
	if finished.Status.Phase != agentsv1alpha1.PhaseSucceeded {
		t.Fatalf("phase after the exit = %s, want Succeeded", finished.Status.Phase)
	}
	passBehind(running)
	done, _, _ := h.reconcile("behind")
	if len(done.Finalizers) != 0 || len(h.podman.All()) != 0 || h.podman.Calls("Remove") != 1 {
		t.Fatalf("the finished run kept its finalizer %v or containers %v, or took %d removes", done.Finalizers, h.podman.All(), h.podman.Calls("Remove"))
	}
	passBehind(finished)
	if h.podman.Calls("Remove") != 1 || h.podman.Calls("Logs") != 1 {
		t.Errorf("%d removes and %d log reads for one run, want 1 of each", h.podman.Calls("Remove"), h.podman.Calls("Logs"))
	}
}
