package agentruns

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestUntilTTLExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	run := &agentsv1alpha1.AgentRun{}
	run.Spec.TTLSecondsAfterFinished = ptr.To[int32](60)
	if _, ok := UntilTTLExpiry(run, now); ok {
		t.Fatal("an unfinished run does not expire")
	}
	run.Status.Phase = agentsv1alpha1.PhaseFailed
	run.Status.CompletionTime = ptr.To(metav1.NewTime(now.Add(-15 * time.Second)))
	if left, ok := UntilTTLExpiry(run, now); !ok || left != 45*time.Second {
		t.Errorf("left = %s, %v; want 45s", left, ok)
	}
	run.Spec.TTLSecondsAfterFinished = nil
	if _, ok := UntilTTLExpiry(run, now); ok {
		t.Error("no TTL, no expiry")
	}
}
