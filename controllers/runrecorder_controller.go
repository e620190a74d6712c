package controllers

import (
	"context"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// RecordFinalizer is the fleet's finalizer on a run a host launched: the
// host adds it with its own (Finalizer) before the first container, and only
// the fleet removes it, once it has recorded how the run ended. So a run
// cannot go before its record exists, whoever deletes it, and while the
// fleet is down a deleted run waits rather than going unrecorded. Hosts may
// add it but not remove it (config/host's policy agentrun-host-runs).
const RecordFinalizer = "agents.agentrun.dev/record"

// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns,verbs=get;list;watch;patch

// RunRecorderReconciler writes the AgentRunRecord of each finished run that
// carries RecordFinalizer, from the final status its host wrote, and then
// removes the finalizer; a run deleted before it finished goes unrecorded
// (a cancel). Hosts do not write records: a host could then hold back any
// manifest of any namespace. It runs with the fleet, once per cluster, and
// also when records are off (Retention 0), to remove the finalizers hosts
// that keep records added.
type RunRecorderReconciler struct {
	client.Client
	// Reader reads each run to record from the API server: the cache's
	// copy lacks its spec's settings, which its key hashes, and its message.
	Reader client.Reader
	// Retention is the fleet's --run-record-retention; 0 writes no records.
	Retention time.Duration
}

// Reconcile records one run, once it finished or is being deleted, and lets
// it go.
func (w *RunRecorderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	run := &agentsv1alpha1.AgentRun{}
	if err := w.Reader.Get(ctx, req.NamespacedName, run); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !awaitsRecord(run) {
		return ctrl.Result{}, nil
	}
	if w.Retention > 0 {
		if err := recordRun(ctx, w.Client, w.Reader, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	// The optimistic lock keeps the host's finalizer: a merge patch
	// replaces the whole list, and the host may have changed it meanwhile.
	patch := client.MergeFromWithOptions(run.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(run, RecordFinalizer)
	if err := w.Patch(ctx, run, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("removing the record finalizer: %w", client.IgnoreNotFound(err))
	}
	// A run deleted unfinished, or ended AlreadyRan, has no record of its
	// own; the phase says which.
	log.FromContext(ctx).V(1).Info("Removed the record finalizer", "agentrun", req.NamespacedName,
		"phase", run.Status.Phase, "recordsKept", w.Retention > 0)
	return ctrl.Result{}, nil
}

// awaitsRecord tells whether the fleet has a run to record and let go: it
// carries RecordFinalizer and finished, or is being deleted.
func awaitsRecord(run *agentsv1alpha1.AgentRun) bool {
	return controllerutil.ContainsFinalizer(run, RecordFinalizer) &&
		(run.Status.Phase.IsFinished() || !run.DeletionTimestamp.IsZero())
}

// SetupWithManager reconciles the runs the cache shows awaiting their
// record; only those are read again from the API server.
func (w *RunRecorderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			run, ok := o.(*agentsv1alpha1.AgentRun)
			return ok && awaitsRecord(run)
		}))).
		Named("runrecorder").
		Complete(w)
}
