package agentruns

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestTheCacheKeepsWhatTheCollectorReadsOfARecord(t *testing.T) {
	rec := &agentsv1alpha1.AgentRunRecord{
		ObjectMeta: metav1.ObjectMeta{Name: "r", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "host"}}},
		Spec: agentsv1alpha1.AgentRunRecordSpec{RunKey: "sha256:1", Message: "a long message",
			CompletionTime: &metav1.Time{Time: time.Now()}},
	}
	out, err := trimRecordForCache(rec.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*agentsv1alpha1.AgentRunRecord)
	if got.Spec.Message != "" || got.ManagedFields != nil {
		t.Errorf("the cached record keeps its message or managed fields")
	}
	if got.Spec.RunKey != rec.Spec.RunKey || !got.Spec.CompletionTime.Equal(rec.Spec.CompletionTime) {
		t.Errorf("the cached record lost what the collector reads: %+v", got.Spec)
	}
}
