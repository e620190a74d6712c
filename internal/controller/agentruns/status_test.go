package agentruns

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestApplyStateConditions(t *testing.T) {
	T, F := metav1.ConditionTrue, metav1.ConditionFalse
	for _, tc := range []struct {
		desc     string
		status   agentsv1alpha1.AgentRunStatus
		st       State
		want     map[string]metav1.ConditionStatus
		wantWhy  map[string]string
		warnings bool
	}{
		{
			desc:   "waiting for a secret",
			status: agentsv1alpha1.AgentRunStatus{Host: "h"},
			st:     State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonSecretNotFound, "create it"},
			want: map[string]metav1.ConditionStatus{
				agentsv1alpha1.ConditionScheduled: T, agentsv1alpha1.ConditionStarted: F,
				agentsv1alpha1.ConditionSucceeded: F, agentsv1alpha1.ConditionFailed: F, agentsv1alpha1.ConditionFinished: F,
			},
			wantWhy:  map[string]string{agentsv1alpha1.ConditionStarted: agentsv1alpha1.ReasonSecretNotFound},
			warnings: true,
		},
		{
			desc:   "running",
			status: agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1, ContainerName: "c"},
			st:     State{agentsv1alpha1.PhaseRunning, agentsv1alpha1.ReasonLaunched, "running"},
			want: map[string]metav1.ConditionStatus{
				agentsv1alpha1.ConditionStarted: T, agentsv1alpha1.ConditionFinished: F,
			},
			wantWhy: map[string]string{agentsv1alpha1.ConditionStarted: agentsv1alpha1.ReasonLaunched},
		},
		{
			desc:   "succeeded",
			status: agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1},
			st:     State{agentsv1alpha1.PhaseSucceeded, agentsv1alpha1.ReasonCompleted, "exited 0"},
			want: map[string]metav1.ConditionStatus{
				agentsv1alpha1.ConditionStarted: T, agentsv1alpha1.ConditionSucceeded: T,
				agentsv1alpha1.ConditionFailed: F, agentsv1alpha1.ConditionFinished: T,
			},
			wantWhy: map[string]string{agentsv1alpha1.ConditionFinished: agentsv1alpha1.ReasonCompleted},
		},
		{
			desc:   "failed",
			status: agentsv1alpha1.AgentRunStatus{Host: "h", Attempts: 1},
			st:     State{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonExitedNonZero, "exited 3"},
			want: map[string]metav1.ConditionStatus{
				agentsv1alpha1.ConditionSucceeded: F, agentsv1alpha1.ConditionFailed: T, agentsv1alpha1.ConditionFinished: T,
			},
			wantWhy:  map[string]string{agentsv1alpha1.ConditionFailed: agentsv1alpha1.ReasonExitedNonZero, agentsv1alpha1.ConditionSucceeded: agentsv1alpha1.ReasonExitedNonZero},
			warnings: true,
		},
		{
			desc:   "failed before starting",
			status: agentsv1alpha1.AgentRunStatus{Host: "h"},
			st:     State{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonLaunchFailed, "bad volume"},
			want: map[string]metav1.ConditionStatus{
				agentsv1alpha1.ConditionStarted: F, agentsv1alpha1.ConditionFailed: T,
			},
			wantWhy:  map[string]string{agentsv1alpha1.ConditionStarted: agentsv1alpha1.ReasonLaunchFailed},
			warnings: true,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			status := tc.status
			ApplyState(&status, 7, tc.st)
			if status.Phase != tc.st.Phase || status.Message != tc.st.Message || status.ObservedGeneration != 7 {
				t.Fatalf("phase/message/generation = %s %q %d", status.Phase, status.Message, status.ObservedGeneration)
			}
			for ct, want := range tc.want {
				c := meta.FindStatusCondition(status.Conditions, ct)
				if c == nil || c.Status != want || c.ObservedGeneration != 7 {
					t.Errorf("%s = %+v, want %s at generation 7", ct, c, want)
				}
			}
			for ct, reason := range tc.wantWhy {
				if c := meta.FindStatusCondition(status.Conditions, ct); c == nil || c.Reason != reason {
					t.Errorf("%s reason = %+v, want %s", ct, c, reason)
				}
			}
			if got := StateOf(&status); got != tc.st {
				t.Errorf("stateOf = %+v, want it to read back %+v", got, tc.st)
			}
			if tc.st.IsWarning() != tc.warnings {
				t.Errorf("isWarning = %v", tc.st.IsWarning())
			}
		})
	}
}

func TestApplyStateKeepsTransitionTimes(t *testing.T) {
	status := agentsv1alpha1.AgentRunStatus{Host: "h"}
	ApplyState(&status, 1, State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonSecretNotFound, "a"})
	before := meta.FindStatusCondition(status.Conditions, agentsv1alpha1.ConditionScheduled).LastTransitionTime
	before.Time = before.Add(-3600e9)
	meta.FindStatusCondition(status.Conditions, agentsv1alpha1.ConditionScheduled).LastTransitionTime = before
	ApplyState(&status, 1, State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonImageNotFound, "b"})
	if got := meta.FindStatusCondition(status.Conditions, agentsv1alpha1.ConditionScheduled).LastTransitionTime; !got.Equal(&before) {
		t.Errorf("an unchanged condition's transition time moved from %v to %v", before, got)
	}
}
