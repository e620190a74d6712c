package host

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestRetryDelay(t *testing.T) {
	for failed, want := range map[int32]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 6: 5 * time.Minute, 20: 5 * time.Minute} {
		if got := retryDelay(failed, 10*time.Second, 5*time.Minute); got != want {
			t.Errorf("retryDelay(%d) = %s, want %s", failed, got, want)
		}
	}
}

func TestUntilDeadline(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	run := &agentsv1alpha1.AgentRun{}
	if _, ok := untilDeadline(run, time.Hour, now); ok {
		t.Fatal("no deadline before the run starts")
	}
	run.Status.StartTime = ptr.To(metav1.NewTime(now.Add(-20 * time.Minute)))
	if left, _ := untilDeadline(run, 30*time.Minute, now); left != 10*time.Minute {
		t.Errorf("default timeout: %s left, want 10m", left)
	}
	run.Spec.Timeout = &metav1.Duration{Duration: 15 * time.Minute}
	if left, _ := untilDeadline(run, 30*time.Minute, now); left != -5*time.Minute {
		t.Errorf("own timeout: %s left, want -5m", left)
	}
}

func TestCancelledByNamesTheLatestClient(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	run := &agentsv1alpha1.AgentRun{}
	run.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "kubectl-client-side-apply", Time: &t0, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:prompt":{}}}`)},
		{Manager: "argocd-controller", Time: &t1, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:cancel":{}}}`)},
		{Manager: "agentrun-host-a", Time: &t1, FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:phase":{}}}`)},
	}
	if got := cancelledBy(run); got != "argocd-controller" {
		t.Errorf("cancelledBy = %q", got)
	}
}
