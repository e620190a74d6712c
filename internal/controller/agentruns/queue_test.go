package agentruns

import (
	"fmt"
	"testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestQueueKeys(t *testing.T) {
	for name, tc := range map[string]struct {
		spec   agentsv1alpha1.AgentRunSpec
		status agentsv1alpha1.AgentRunStatus
		want   []string
	}{
		"unclaimed":         {want: []string{AnyHost}},
		"pinned":            {spec: agentsv1alpha1.AgentRunSpec{HostName: "h2"}, want: []string{"h2"}},
		"claimed":           {status: agentsv1alpha1.AgentRunStatus{Host: "h3", Phase: agentsv1alpha1.PhaseRunning}, want: []string{"h3"}},
		"finished":          {status: agentsv1alpha1.AgentRunStatus{Host: "h3", Phase: agentsv1alpha1.PhaseFailed}},
		"cancelled pending": {status: agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseCancelled}},
	} {
		run := &agentsv1alpha1.AgentRun{Spec: tc.spec, Status: tc.status}
		if got := QueueKeys(run); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: QueueKeys = %v, want %v", name, got, tc.want)
		}
	}
}
