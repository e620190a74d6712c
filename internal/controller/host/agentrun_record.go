package host

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
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
func endAsRecorded(run *agentsv1alpha1.AgentRun, rec *agentsv1alpha1.AgentRunRecord) agentruns.State {
	run.Status.ExitCode = rec.Spec.ExitCode
	when := "at an unrecorded time"
	if rec.Spec.CompletionTime != nil {
		when = "at " + rec.Spec.CompletionTime.UTC().Format("2006-01-02T15:04:05Z")
	}
	return agentruns.State{Phase: rec.Spec.Phase, Reason: agentsv1alpha1.ReasonAlreadyRan, Message: fmt.Sprintf(
		"not run again: this manifest ran as AgentRun %s/%s (uid %s) on host %s, which ended %s %s (%s: %s); "+
			"to run it again, give it a new name or a new value of the annotation %s",
		run.Namespace, run.Name, rec.Spec.RunUID, rec.Spec.Host, rec.Spec.Phase, when, rec.Spec.Reason, rec.Spec.Message,
		agentsv1alpha1.AnnotationRerun)}

}
