package controllers

import (
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// maxMessageBytes is the CRD's bound on status.message (and below the
// conditions' bound): a longer message would make the whole status write
// fail validation.
const maxMessageBytes = 4096

// runState is what one reconcile pass concluded about a run: its phase, the
// reason for it (a Reason* constant) and a message for people.
type runState struct {
	phase   agentsv1alpha1.AgentRunPhase
	reason  string
	message string
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

func (s runState) isWarning() bool { return slices.Contains(warningReasons, s.reason) }

// stateOf reads back the state a status records: the reason lives on the
// condition that explains the phase (Finished once terminal, Started before).
func stateOf(status *agentsv1alpha1.AgentRunStatus) runState {
	st := runState{phase: status.Phase, message: status.Message}
	principal := agentsv1alpha1.ConditionStarted
	if status.Phase.IsFinished() {
		principal = agentsv1alpha1.ConditionFinished
	}
	if c := meta.FindStatusCondition(status.Conditions, principal); c != nil {
		st.reason = c.Reason
	}
	return st
}

// applyState writes a state into a status: phase, message and every
// condition, each stamped with the generation it describes. Conditions keep
// their transition time while their status stays the same.
func applyState(status *agentsv1alpha1.AgentRunStatus, generation int64, st runState) {
	st.message = truncateUTF8(st.message, maxMessageBytes)
	status.Phase, status.Message, status.ObservedGeneration = st.phase, st.message, generation
	for _, c := range conditionsFor(status, st) {
		c.ObservedGeneration = generation
		meta.SetStatusCondition(&status.Conditions, c)
	}
}

// conditionsFor derives the conditions from the state and the status fields
// already set (host, attempts).
func conditionsFor(status *agentsv1alpha1.AgentRunStatus, st runState) []metav1.Condition {
	cond := func(t string, ok bool, reason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
	}
	finished := st.phase.IsFinished()
	var out []metav1.Condition

	if status.Host != "" {
		out = append(out, cond(agentsv1alpha1.ConditionScheduled, true, agentsv1alpha1.ReasonClaimed, "claimed by host "+status.Host))
	} else {
		out = append(out, cond(agentsv1alpha1.ConditionScheduled, false, agentsv1alpha1.ReasonWaitingForHost, "no Podman host has claimed the run yet"))
	}

	switch {
	case st.phase == agentsv1alpha1.PhasePending:
		out = append(out, cond(agentsv1alpha1.ConditionStarted, false, st.reason, st.message))
	case status.Attempts > 0:
		out = append(out, cond(agentsv1alpha1.ConditionStarted, true, agentsv1alpha1.ReasonLaunched, "container "+status.ContainerName+" started on host "+status.Host))
	default: // finished before any container started
		out = append(out, cond(agentsv1alpha1.ConditionStarted, false, st.reason, st.message))
	}

	if finished {
		succeeded := st.phase == agentsv1alpha1.PhaseSucceeded
		out = append(out,
			cond(agentsv1alpha1.ConditionSucceeded, succeeded, st.reason, st.message),
			cond(agentsv1alpha1.ConditionFailed, !succeeded, st.reason, st.message),
			cond(agentsv1alpha1.ConditionFinished, true, st.reason, st.message),
			cond(agentsv1alpha1.ConditionReady, succeeded, st.reason, st.message),
			cond(agentsv1alpha1.ConditionReconciling, false, st.reason, "the run finished"),
			cond(agentsv1alpha1.ConditionStalled, !succeeded, st.reason, st.message),
		)
	} else {
		notYet := "the run has not finished"
		// The reason says what the run does (Launched) or waits for
		// (Claimed, SecretNotFound, BackOff, ...).
		out = append(out,
			cond(agentsv1alpha1.ConditionSucceeded, false, agentsv1alpha1.ReasonNotFinished, notYet),
			cond(agentsv1alpha1.ConditionFailed, false, agentsv1alpha1.ReasonNotFinished, notYet),
			cond(agentsv1alpha1.ConditionFinished, false, agentsv1alpha1.ReasonNotFinished, notYet),
			cond(agentsv1alpha1.ConditionReady, false, st.reason, st.message),
			cond(agentsv1alpha1.ConditionReconciling, true, st.reason, st.message),
			cond(agentsv1alpha1.ConditionStalled, false, agentsv1alpha1.ReasonNotFinished, notYet),
		)
	}
	return out
}

// setPodmanAvailable records whether the host's Podman API answered in this
// pass, from the pass's error; it reports whether the condition changed.
func setPodmanAvailable(status *agentsv1alpha1.AgentRunStatus, generation int64, host string, err error) bool {
	c := metav1.Condition{
		Type:               agentsv1alpha1.ConditionPodmanAvailable,
		Status:             metav1.ConditionTrue,
		Reason:             agentsv1alpha1.ReasonPodmanAvailable,
		Message:            "the Podman API on host " + host + " answers",
		ObservedGeneration: generation,
	}
	if isUnavailable(err) {
		c.Status, c.Reason = metav1.ConditionFalse, agentsv1alpha1.ReasonPodmanUnavailable
		c.Message = "the Podman API on host " + host + " does not answer; retrying: " + err.Error()
	}
	return meta.SetStatusCondition(&status.Conditions, c)
}
