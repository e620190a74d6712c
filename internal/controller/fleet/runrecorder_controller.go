package fleet

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
)

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
	controllerutil.RemoveFinalizer(run, agentruns.RecordFinalizer)
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
	return controllerutil.ContainsFinalizer(run, agentruns.RecordFinalizer) &&
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

// recordRun writes how a finished run ended, read from the API server (the
// fleet's RunRecorderReconciler, before it lets the run go). A run that
// ended as recorded is not recorded again: its record already says what ran.
func recordRun(ctx context.Context, c client.Client, reader client.Reader, run *agentsv1alpha1.AgentRun) error {
	st := agentruns.StateOf(&run.Status)
	if !st.Phase.IsFinished() || st.Reason == agentsv1alpha1.ReasonAlreadyRan {
		return nil
	}
	spec := agentsv1alpha1.AgentRunRecordSpec{
		RunKey: agentsv1alpha1.RunKey(run), RunUID: run.UID, Host: run.Status.Host,
		Phase: st.Phase, Reason: st.Reason, Message: st.Message,
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
