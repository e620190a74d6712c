package agentruns

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// kstatusOf is what Flux's health checks and `kstatus` make of a run.
func kstatusOf(t *testing.T, run *agentsv1alpha1.AgentRun) *status.Result {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(run)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion(agentsv1alpha1.GroupVersion.String())
	u.SetKind("AgentRun")
	res, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestKstatusFollowsTheRunToItsEnd(t *testing.T) {
	for _, tc := range []struct {
		st     State
		status agentsv1alpha1.AgentRunStatus
		want   status.Status
	}{
		{State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonUnschedulable, "no host"}, agentsv1alpha1.AgentRunStatus{}, status.InProgressStatus},
		{State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonSecretNotFound, "create it"}, agentsv1alpha1.AgentRunStatus{Host: "h"}, status.InProgressStatus},
		{State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonBackOff, "retrying"}, agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1}, status.InProgressStatus},
		{State{agentsv1alpha1.PhaseRunning, agentsv1alpha1.ReasonLaunched, "running"}, agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1}, status.InProgressStatus},
		{State{agentsv1alpha1.PhaseSucceeded, agentsv1alpha1.ReasonCompleted, "exited 0"}, agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1}, status.CurrentStatus},
		{State{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonExitedNonZero, "exited 3"}, agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1}, status.FailedStatus},
		{State{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonImageNotAllowed, "not allowed"}, agentsv1alpha1.AgentRunStatus{Host: "h"}, status.FailedStatus},
		{State{agentsv1alpha1.PhaseCancelled, agentsv1alpha1.ReasonCancelled, "by kubectl"}, agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1}, status.FailedStatus},
	} {
		t.Run(string(tc.st.Phase)+"/"+tc.st.Reason, func(t *testing.T) {
			run := agentrunstest.PlainRun("r", nil)
			run.Generation = 2
			run.Status = tc.status
			ApplyState(&run.Status, run.Generation, tc.st)
			res := kstatusOf(t, run)
			if res.Status != tc.want {
				t.Fatalf("kstatus = %s (%s), want %s", res.Status, res.Message, tc.want)
			}
			if tc.want != status.CurrentStatus && res.Message != tc.st.Message {
				t.Errorf("kstatus message = %q, want the run's %q", res.Message, tc.st.Message)
			}

			// A change the controller has not seen yet (a cancel, say) is
			// in progress until it has.
			run.Generation = 3
			if res := kstatusOf(t, run); res.Status != status.InProgressStatus {
				t.Errorf("with an unobserved generation kstatus = %s, want InProgress", res.Status)
			}
		})
	}
}
