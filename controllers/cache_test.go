package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestTrimForCacheKeepsWhatTheReconcilerReads(t *testing.T) {
	run := testRun("big")
	run.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	run.Status = agentsv1alpha1.AgentRunStatus{
		Host: "h", Phase: agentsv1alpha1.PhaseSucceeded, ContainerID: "c1", Attempts: 1, Output: "4 KiB of output",
		AgentResult: &agentsv1alpha1.AgentResult{Result: "long text", SessionID: "s", IsError: true},
	}
	out, err := TrimForCache(run)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*agentsv1alpha1.AgentRun)
	if got.ManagedFields != nil || got.Status.Output != "" || got.Status.AgentResult.Result != "" {
		t.Errorf("managed fields, output or result text kept: %+v", got)
	}
	if got.Status.Phase != agentsv1alpha1.PhaseSucceeded || got.Status.ContainerID != "c1" || !got.Status.AgentResult.IsError || got.Spec.Prompt == "" {
		t.Errorf("trimmed what the reconciler reads: %+v", got)
	}
}
