package agentruns

import (
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// MaxMessageBytes is the CRD's bound on status.message (and below the
// conditions' bound): a longer message would make the whole status write
// fail validation.
const MaxMessageBytes = 4096

// State is what one reconcile pass concluded about a run: its phase, the
// reason for it (a Reason* constant) and a message for people.
type State struct {
	Phase   agentsv1alpha1.AgentRunPhase
	Reason  string
	Message string
}

// warningReasons are the states a user should look at; their events are
// Warnings.
var warningReasons = []string{
	agentsv1alpha1.ReasonSecretNotFound,
	agentsv1alpha1.ReasonImageNotFound,
	agentsv1alpha1.ReasonPodmanUnavailable,
	agentsv1alpha1.ReasonLaunchFailed,
	agentsv1alpha1.ReasonExitedNonZero,
	agentsv1alpha1.ReasonContainerLost,
	agentsv1alpha1.ReasonBackOff,
	agentsv1alpha1.ReasonBackoffLimitExceeded,
	agentsv1alpha1.ReasonDeadlineExceeded,
	agentsv1alpha1.ReasonAgentError,
	agentsv1alpha1.ReasonImageNotAllowed,
	agentsv1alpha1.ReasonVolumeNotAllowed,
	agentsv1alpha1.ReasonResourcesNotAllowed,
}

func (s State) IsWarning() bool { return slices.Contains(warningReasons, s.Reason) }

// StateOf reads back the state a status records: the reason lives on the
// condition that explains the phase (Finished once terminal, Started before).
func StateOf(status *agentsv1alpha1.AgentRunStatus) State {
	st := State{Phase: status.Phase, Message: status.Message}
	principal := agentsv1alpha1.ConditionStarted
	if status.Phase.IsFinished() {
		principal = agentsv1alpha1.ConditionFinished
	}
	if c := meta.FindStatusCondition(status.Conditions, principal); c != nil {
		st.Reason = c.Reason
	}
	return st
}

// ApplyState writes a state into a status: phase, message and every
// condition, each stamped with the generation it describes. Conditions keep
// their transition time while their status stays the same.
func ApplyState(status *agentsv1alpha1.AgentRunStatus, generation int64, st State) {
	st.Message = TruncateUTF8(st.Message, MaxMessageBytes)
	status.Phase, status.Message, status.ObservedGeneration = st.Phase, st.Message, generation
	for _, c := range conditionsFor(status, st) {
		c.ObservedGeneration = generation
		meta.SetStatusCondition(&status.Conditions, c)
	}
}

// conditionsFor derives the conditions from the state and the status fields
// already set (host, attempts).
func conditionsFor(status *agentsv1alpha1.AgentRunStatus, st State) []metav1.Condition {
	cond := func(t string, ok bool, reason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
	}
	finished := st.Phase.IsFinished()
	var out []metav1.Condition

	if status.Host != "" {
		out = append(out, cond(agentsv1alpha1.ConditionScheduled, true, agentsv1alpha1.ReasonClaimed, "claimed by host "+status.Host))
	} else {
		out = append(out, cond(agentsv1alpha1.ConditionScheduled, false, agentsv1alpha1.ReasonWaitingForHost, "no Podman host has claimed the run yet"))
	}

	switch {
	case st.Phase == agentsv1alpha1.PhasePending:
		out = append(out, cond(agentsv1alpha1.ConditionStarted, false, st.Reason, st.Message))
	case status.Attempts > 0:
		out = append(out, cond(agentsv1alpha1.ConditionStarted, true, agentsv1alpha1.ReasonLaunched, "container "+status.ContainerName+" started on host "+status.Host))
	default: // finished before any container started
		out = append(out, cond(agentsv1alpha1.ConditionStarted, false, st.Reason, st.Message))
	}

	if finished {
		succeeded := st.Phase == agentsv1alpha1.PhaseSucceeded
		out = append(out,
			cond(agentsv1alpha1.ConditionSucceeded, succeeded, st.Reason, st.Message),
			cond(agentsv1alpha1.ConditionFailed, !succeeded, st.Reason, st.Message),
			cond(agentsv1alpha1.ConditionFinished, true, st.Reason, st.Message),
			cond(agentsv1alpha1.ConditionReady, succeeded, st.Reason, st.Message),
			cond(agentsv1alpha1.ConditionReconciling, false, st.Reason, "the run finished"),
			cond(agentsv1alpha1.ConditionStalled, !succeeded, st.Reason, st.Message),
		)
	} else {
		notYet := "the run has not finished"
		// The reason says what the run does (Launched) or waits for
		// (Claimed, SecretNotFound, BackOff, ...).
		out = append(out,
			cond(agentsv1alpha1.ConditionSucceeded, false, agentsv1alpha1.ReasonNotFinished, notYet),
			cond(agentsv1alpha1.ConditionFailed, false, agentsv1alpha1.ReasonNotFinished, notYet),
			cond(agentsv1alpha1.ConditionFinished, false, agentsv1alpha1.ReasonNotFinished, notYet),
			cond(agentsv1alpha1.ConditionReady, false, st.Reason, st.Message),
			cond(agentsv1alpha1.ConditionReconciling, true, st.Reason, st.Message),
			cond(agentsv1alpha1.ConditionStalled, false, agentsv1alpha1.ReasonNotFinished, notYet),
		)
	}
	return out
}
