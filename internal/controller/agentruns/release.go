package agentruns

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// Released tells whether run carries LabelReleased: its host has let go of
// it and no longer watches it.
func Released(run *agentsv1alpha1.AgentRun) bool {
	return run.Labels[agentsv1alpha1.LabelReleased] == "true"
}

// Releasable tells whether a host has nothing left of run: it finished, is
// not being deleted, its containers are removed (the host's Finalizer is
// gone, which a host keeping containers never drops before deletion), and
// its callback, if any, went. A releasable run never needs its host again:
// a finished run is never launched, moved or failed over, and a run that
// continues its session reads it from the API server.
func Releasable(run *agentsv1alpha1.AgentRun) bool {
	return run.Status.Phase.IsFinished() && run.DeletionTimestamp.IsZero() && !HasHostFinalizer(run) && !CallbackUnrecorded(run)
}

// HasHostFinalizer tells whether run carries its host's Finalizer: the host
// has containers of it to remove.
func HasHostFinalizer(run *agentsv1alpha1.AgentRun) bool {
	return controllerutil.ContainsFinalizer(run, Finalizer)
}

// MarkReleased sets LabelReleased on run, for a metadata patch.
func MarkReleased(run *agentsv1alpha1.AgentRun) {
	if run.Labels == nil {
		run.Labels = map[string]string{}
	}
	run.Labels[agentsv1alpha1.LabelReleased] = "true"
}

// CallbackUnrecorded tells whether run has a callback (spec.notify) whose
// outcome is not in its status yet.
func CallbackUnrecorded(run *agentsv1alpha1.AgentRun) bool {
	return run.Spec.Notify != nil && meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionNotified) == nil
}

// notReleased selects the runs without LabelReleased.
func notReleased() labels.Selector {
	req, err := labels.NewRequirement(agentsv1alpha1.LabelReleased, selection.DoesNotExist, nil)
	if err != nil {
		panic(err) // a constant key: cannot fail
	}
	return labels.NewSelector().Add(*req)
}

// UntilTTLExpiry is how long a finished run has left before it is deleted.
// ok is false when the run has no TTL or has not finished, and for a run
// that ended AlreadyRan: it stands for a manifest kept in Git, and deleting
// it would only make the next sync create it again.
func UntilTTLExpiry(run *agentsv1alpha1.AgentRun, now time.Time) (left time.Duration, ok bool) {
	if run.Spec.TTLSecondsAfterFinished == nil || run.Status.CompletionTime == nil || !run.Status.Phase.IsFinished() ||
		StateOf(&run.Status).Reason == agentsv1alpha1.ReasonAlreadyRan {
		return 0, false
	}
	ttl := time.Duration(*run.Spec.TTLSecondsAfterFinished) * time.Second
	return run.Status.CompletionTime.Add(ttl).Sub(now), true
}

// DeleteExpired deletes a finished run whose TTL has expired: the host for
// a run it still keeps containers of (they go with its finalizer), the fleet
// for a released one. The UID precondition keeps a run created again under
// the same name from being taken for the expired one.
func DeleteExpired(ctx context.Context, c client.Writer, run *agentsv1alpha1.AgentRun) error {
	log.FromContext(ctx).Info("Deleting finished AgentRun whose TTL expired", "agentrun", client.ObjectKeyFromObject(run))
	if err := c.Delete(ctx, run, client.Preconditions{UID: &run.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting after TTL: %w", err)
	}
	return nil
}
