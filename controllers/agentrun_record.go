package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// Hosts read records (alreadyRan); only the fleet writes them, with the
// ClusterRole of config/rbac/fleet_role.yaml, which hosts are not bound to.
// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentrunrecords,verbs=get;list;watch

// alreadyRan looks, before a run's first launch, for the record of a run of
// the same namespace, name and manifest that finished and was deleted. It is
// read from the API server, not a cache: the record was written just before
// the earlier run could go, and a cache that has not caught up would let the
// run launch a second time.
func (r *AgentRunReconciler) alreadyRan(ctx context.Context, run *agentsv1alpha1.AgentRun) (*agentsv1alpha1.AgentRunRecord, error) {
	if r.RunRecordRetention <= 0 {
		return nil, nil
	}
	rec := &agentsv1alpha1.AgentRunRecord{}
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(run), rec)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading the run's record: %w", err)
	case rec.Spec.RunUID == run.UID || rec.Spec.RunKey != agentsv1alpha1.RunKey(run):
		return nil, nil
	}
	return rec, nil
}

// endAsRecorded ends a run whose manifest already ran as that run ended.
func endAsRecorded(run *agentsv1alpha1.AgentRun, rec *agentsv1alpha1.AgentRunRecord) runState {
	run.Status.ExitCode = rec.Spec.ExitCode
	when := "at an unrecorded time"
	if rec.Spec.CompletionTime != nil {
		when = "at " + rec.Spec.CompletionTime.UTC().Format("2006-01-02T15:04:05Z")
	}
	return runState{rec.Spec.Phase, agentsv1alpha1.ReasonAlreadyRan, fmt.Sprintf(
		"not run again: this manifest ran as AgentRun %s/%s (uid %s) on host %s, which ended %s %s (%s: %s); "+
			"to run it again, give it a new name or a new value of the annotation %s",
		run.Namespace, run.Name, rec.Spec.RunUID, rec.Spec.Host, rec.Spec.Phase, when, rec.Spec.Reason, rec.Spec.Message,
		agentsv1alpha1.AnnotationRerun)}
}

// recordRun writes how a finished run ended, read from the API server (the
// fleet's RunRecorderReconciler, before it lets the run go). A run that
// ended as recorded is not recorded again: its record already says what ran.
func recordRun(ctx context.Context, c client.Client, reader client.Reader, run *agentsv1alpha1.AgentRun) error {
	st := stateOf(&run.Status)
	if !st.phase.IsFinished() || st.reason == agentsv1alpha1.ReasonAlreadyRan {
		return nil
	}
	spec := agentsv1alpha1.AgentRunRecordSpec{
		RunKey: agentsv1alpha1.RunKey(run), RunUID: run.UID, Host: run.Status.Host,
		Phase: st.phase, Reason: st.reason, Message: st.message,
		ExitCode: run.Status.ExitCode, Attempts: run.Status.Attempts, CompletionTime: run.Status.CompletionTime,
	}
	rec := &agentsv1alpha1.AgentRunRecord{
		ObjectMeta: metav1.ObjectMeta{Namespace: run.Namespace, Name: run.Name},
		Spec:       spec,
	}
	err := c.Create(ctx, rec)
	if !apierrors.IsAlreadyExists(err) {
		return recordError(err)
	}
	// An earlier run of this name left its record: this run's replaces it.
	if err := reader.Get(ctx, client.ObjectKeyFromObject(rec), rec); err != nil {
		return recordError(err)
	}
	if rec.Spec.RunUID == run.UID {
		return nil
	}
	rec.Spec = spec
	return recordError(c.Update(ctx, rec))
}

func recordError(err error) error {
	if err != nil {
		return fmt.Errorf("recording the finished run: %w", err)
	}
	return nil
}
