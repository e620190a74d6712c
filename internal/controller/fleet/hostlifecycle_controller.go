package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
)

// HostLifecycleReconciler declares hosts lost, as the node lifecycle
// controller does for Nodes: a host whose heartbeat Lease was not renewed
// within its grace period gets Ready False (reason HeartbeatLost), and each of
// its unfinished runs the condition HostLost. An unpinned run is taken from
// it, to be placed again as an attempt that does not count against its
// backoffLimit; a pinned run fails with reason HostLost, or waits for its host
// when PinnedRunsWait is set. A host that comes back fences itself before it
// takes any run (internal/hostagent).
type HostLifecycleReconciler struct {
	client.Client
	// Reader reads the Leases from the API server: only the fleet reads
	// them, once per host and grace period, which a cache would not save.
	Reader         client.Reader
	Recorder       events.EventRecorder
	LeaseNamespace string
	// GracePeriod is the grace of a host whose Lease gives none (a host
	// that never renewed one). Every other host's is its Lease's
	// spec.leaseDurationSeconds, which the host writes from its own
	// setting and past which it fences itself: the fleet is not told a
	// second time, so the two cannot disagree.
	GracePeriod    time.Duration
	PinnedRunsWait bool
	Clock          clock.Clock

	// watching holds, by host, when this process began to see the host's
	// Lease: at its first read of it, and again after a read failed.
	watching sync.Map
}

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update

// Reconcile checks one host's heartbeat and, once it is overdue, fails the
// host's runs over.
func (h *HostLifecycleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	host := &agentsv1alpha1.PodmanHost{}
	if err := h.Get(ctx, req.NamespacedName, host); err != nil {
		if apierrors.IsNotFound(err) {
			h.watching.Delete(req.Name)
			return ctrl.Result{}, h.releaseRunsOfRemovedHost(ctx, req.Name)
		}
		return ctrl.Result{}, err
	}
	renewed, grace, err := h.lastRenewal(ctx, host)
	if err != nil {
		h.watching.Delete(host.Name)
		return ctrl.Result{}, err
	}
	// A heartbeat is overdue a grace period after the later of its last
	// renewal and the moment this process began to see it. A fleet that was
	// blind (the API server down, this manager restarting after losing its
	// leader lease) thus never takes the renewals it could not see, nor those
	// the hosts could not make meanwhile, for lost hosts, as the node
	// lifecycle controller counts from when it observed a Node's Lease.
	since, _ := h.watching.LoadOrStore(host.Name, h.Clock.Now())
	overdue := latest(renewed, since.(time.Time)).Add(grace)
	if left := overdue.Sub(h.Clock.Now()); left > 0 {
		return ctrl.Result{RequeueAfter: left + 100*time.Millisecond}, nil
	}
	lost := fmt.Sprintf("host %s has not renewed its heartbeat since %s (grace period %s)",
		host.Name, renewed.UTC().Format(time.RFC3339), grace)
	if err := h.markLost(ctx, host, lost); err != nil {
		return ctrl.Result{}, err
	}
	// Look again while it stays lost: a run pinned to it may turn up.
	return ctrl.Result{RequeueAfter: grace}, h.failOver(ctx, host.Name, lost)
}

// lastRenewal is when the host last renewed its Lease, or when its
// PodmanHost was made if it never did, and the grace period the host's
// Lease gives (GracePeriod when it gives none).
func (h *HostLifecycleReconciler) lastRenewal(ctx context.Context, host *agentsv1alpha1.PodmanHost) (time.Time, time.Duration, error) {
	lease := &coordinationv1.Lease{}
	err := h.Reader.Get(ctx, types.NamespacedName{Namespace: h.LeaseNamespace, Name: host.Name}, lease)
	switch {
	case apierrors.IsNotFound(err):
		return host.CreationTimestamp.Time, h.GracePeriod, nil
	case err != nil:
		return time.Time{}, 0, fmt.Errorf("reading host %s's Lease: %w", host.Name, err)
	}
	grace := h.GracePeriod
	if d := lease.Spec.LeaseDurationSeconds; d != nil && *d > 0 {
		grace = time.Duration(*d) * time.Second
	}
	if lease.Spec.RenewTime == nil {
		return lease.CreationTimestamp.Time, grace, nil
	}
	return lease.Spec.RenewTime.Time, grace, nil
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// markLost sets the host's Ready condition to False, reason HeartbeatLost.
func (h *HostLifecycleReconciler) markLost(ctx context.Context, host *agentsv1alpha1.PodmanHost, msg string) error {
	if c := meta.FindStatusCondition(host.Status.Conditions, agentsv1alpha1.HostConditionReady); c != nil && c.Reason == agentsv1alpha1.ReasonHeartbeatLost {
		return nil
	}
	base := host.DeepCopy()
	meta.SetStatusCondition(&host.Status.Conditions, metav1.Condition{Type: agentsv1alpha1.HostConditionReady,
		Status: metav1.ConditionFalse, Reason: agentsv1alpha1.ReasonHeartbeatLost, Message: msg})
	if err := h.Status().Patch(ctx, host, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return ignoreStale(err)
	}
	log.FromContext(ctx).Info("Declared a Podman host lost", "host", host.Name, "why", msg)
	h.Recorder.Eventf(host, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonHeartbeatLost, "DeclareLost", "%s", msg)
	return nil
}

// failOver handles each unfinished run of a lost host.
func (h *HostLifecycleReconciler) failOver(ctx context.Context, hostName, lost string) error {
	line, err := agentruns.InLine(ctx, h.Client, hostName)
	if err != nil {
		return err
	}
	var errs []error
	for i := range line {
		run := &line[i]
		if run.Status.Host != hostName || run.Status.Phase.IsFinished() {
			continue // pinned there and never claimed: it waits for the host
		}
		if err := h.failOverRun(ctx, run, lost); err != nil {
			errs = append(errs, fmt.Errorf("AgentRun %s: %w", client.ObjectKeyFromObject(run), err))
		}
	}
	return errors.Join(errs...)
}

func (h *HostLifecycleReconciler) failOverRun(ctx context.Context, run *agentsv1alpha1.AgentRun, lost string) error {
	base := run.DeepCopy()
	before := agentruns.StateOf(&run.Status)
	var st agentruns.State
	switch {
	case run.Spec.HostName == "":
		// An attempt in flight is the disrupted one. Otherwise the host may
		// have launched the next attempt without recording it (it created
		// the container, then died before its status write): that number is
		// the lost host's, counted as disrupted, so that no two hosts ever
		// run containers of one attempt.
		if before.Phase == agentsv1alpha1.PhaseRunning || run.Status.ContainerName != "" && before.Reason != agentsv1alpha1.ReasonBackOff {
			run.Status.DisruptedAttempts++
		} else {
			run.Status.Attempts++
			run.Status.DisruptedAttempts++
		}
		st = agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonHostLost, Message: fmt.Sprintf(
			"%s; the run goes to another host as attempt %d, which does not count against spec.backoffLimit", lost, run.Status.Attempts+1)}

		run.Status.Host, run.Status.ContainerID, run.Status.ContainerName = "", "", ""
	case h.PinnedRunsWait:
		st = before
	default:
		st = agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonHostLost, Message: lost + "; the run is pinned to it (spec.hostName), so it fails; its container goes when the host comes back"}

		agentruns.MarkFinished(&run.Status, h.Clock.Now())
	}
	meta.SetStatusCondition(&run.Status.Conditions, metav1.Condition{Type: agentsv1alpha1.ConditionHostLost,
		Status: metav1.ConditionTrue, Reason: agentsv1alpha1.ReasonHostLost, Message: lost, ObservedGeneration: run.Generation})
	agentruns.ApplyState(&run.Status, run.Generation, st)
	if err := agentruns.WriteStatus(ctx, h.Client, base, run); err != nil {
		// A conflict: the host wrote first (it is back), or the run changed;
		// the next pass looks again.
		return ignoreStale(err)
	}
	if before != st {
		h.Recorder.Eventf(run, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonHostLost, "FailOver", "%s", agentruns.TruncateUTF8(st.Message, agentruns.MaxEventNoteBytes))
	}
	return nil
}

// releaseRunsOfRemovedHost lets go of the finished or deleted runs of a host
// whose PodmanHost was deleted (an operator removing a dead machine, as one
// deletes a dead Node): no host will remove their containers, which went with
// the machine, so their finalizers go.
func (h *HostLifecycleReconciler) releaseRunsOfRemovedHost(ctx context.Context, hostName string) error {
	list := &agentsv1alpha1.AgentRunList{}
	if err := h.List(ctx, list); err != nil {
		return err
	}
	var errs []error
	for i := range list.Items {
		run := &list.Items[i]
		if run.Status.Host != hostName || !controllerutil.ContainsFinalizer(run, agentruns.Finalizer) ||
			!run.Status.Phase.IsFinished() && run.DeletionTimestamp.IsZero() {
			continue
		}
		// The fleet's RecordFinalizer, which the run keeps, holds it until
		// it is recorded.
		patch := client.MergeFrom(run.DeepCopy())
		controllerutil.RemoveFinalizer(run, agentruns.Finalizer)
		if err := h.Patch(ctx, run, patch); client.IgnoreNotFound(err) != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetupWithManager reconciles each PodmanHost; the passes requeue themselves
// at the moment a heartbeat would become overdue.
func (h *HostLifecycleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.PodmanHost{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named("hostlifecycle").
		Complete(h)
}
