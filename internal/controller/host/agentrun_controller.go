// Package host holds the AgentRun reconciler of one Podman host and what it
// runs with (the Podman event source, the heartbeat agent, callbacks, live
// progress, the session store, the log endpoint). It runs in each host's
// manager (--mode=host, or all), one per Podman host; the fleet's controllers
// are in internal/controller/fleet, and what both need in
// internal/controller/agentruns.
package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containerevents"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/logserver"
)

// AgentRunReconciler runs the AgentRuns meant for one Podman host as
// containers on that host and writes what happened back to their status.
// SetupHost builds it as the manager binary runs it.
type AgentRunReconciler struct {
	client.Client
	// APIReader reads from the API server directly, for what the cache
	// leaves out (managed fields).
	APIReader client.Reader
	Recorder  events.EventRecorder
	HostConfig
	// logReaders counts the host's log streams by container; nil without a
	// log endpoint.
	logReaders *logserver.Readers
	// Exits, when set, awaits the end of each running container, so its
	// run's pass comes as soon as it exits, whether or not Podman's event log
	// keeps up, and tells what the wait or Podman's died event said of the
	// exit, so it is recorded without inspecting the container.
	Exits interface {
		Exited(containerID string) (containerevents.Exit, bool)
		Await(containerID string, run types.NamespacedName)
		Awaiting(containerID string) bool
	}

	slots slotTracker
	// launches are the attempts this process created containers for: a hint
	// to look for the container by its name before creating it, never a
	// reason to skip a pass.
	launches launchHints
	// removed are the containers of finished runs this process removed.
	removed removedContainers
	// callbacks are the completion callbacks being delivered.
	callbacks callbacks
	// progress is what the ProgressReconciler last read and published of
	// running runs' output; the final output is masked with the secret
	// values it holds.
	progress progressReads
	// superseded are the versions of runs this process has written over,
	// which a pass reading the cache before it catches up skips.
	superseded supersededReads
	// wake brings runs waiting for a slot to the queue when one frees.
	wake chan event.TypedGenericEvent[*agentsv1alpha1.AgentRun]
	// egress are the proxied runs this process serves.
	egress egressRuns
	// admission says why the host may not launch runs now (it has not
	// fenced, or Podman does not answer); nil, or a nil func, means it may.
	admission func() error
}

// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one run forward: claim it, launch its container, follow it,
// record its result, and clean up. It writes status at most once per pass.
func (r *AgentRunReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	began := time.Now() // beside the exit's Seen, on the same clock: see observeRunEnd
	run := &agentsv1alpha1.AgentRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(ctx, req.NamespacedName)
			r.removed.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.superseded.stale(run) {
		return ctrl.Result{}, nil
	}
	readVersion, patchedVersion := run.ResourceVersion, ""
	defer func() { r.superseded.passed(req.NamespacedName, run, readVersion, patchedVersion) }()
	r.slots.releaseReplaced(run)
	if !r.isOurs(run) {
		// Taken from this host (its host was declared lost): whatever this
		// process held for it goes; its container goes when the host fences.
		r.forget(ctx, req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if run.Status.Host == "" {
		if !run.DeletionTimestamp.IsZero() {
			return ctrl.Result{}, nil // never claimed: nothing was launched
		}
		return r.claim(ctx, run)
	}
	if !run.DeletionTimestamp.IsZero() {
		r.letGo(ctx, run)
		return ctrl.Result{}, r.finalize(ctx, run)
	}
	if run.Status.Phase.IsFinished() {
		r.letGo(ctx, run)
		return r.finished(ctx, run)
	}

	base := run.DeepCopy()
	st, result, err := r.advance(ctx, run)
	r.egress.count(run)
	podmanChanged := setPodmanAvailable(&run.Status, run.Generation, r.Host, err)
	if st.Phase.IsFinished() {
		agentruns.MarkFinished(&run.Status, r.Clock.Now())
	}
	agentruns.ApplyState(&run.Status, run.Generation, st)
	// This pass's own finalizer patch moved the resourceVersion on; the
	// status write is checked against that version, not the one first read.
	base.ResourceVersion = run.ResourceVersion
	patchedVersion = run.ResourceVersion
	if writeErr := agentruns.WriteStatus(ctx, r.Client, base, run); writeErr != nil {
		if apierrors.IsConflict(writeErr) {
			// The watch brings the newer version, and with it another pass.
			log.FromContext(ctx).V(1).Info("AgentRun changed since it was read; not writing a stale status", "agentrun", req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, errors.Join(err, writeErr)
	}
	if st.Phase.IsFinished() {
		r.observeRunEnd(run, began)
		r.releaseSlot(ctx, req.NamespacedName)
	}
	before := agentruns.StateOf(&base.Status)
	transitioned := r.recordTransition(run, before, st)
	observeTransition(run, before, st)
	if podmanChanged && isUnavailable(err) && !transitioned {
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonPodmanUnavailable, "Reconcile",
			"the Podman API on host %s does not answer; retrying", r.Host)
	}
	return result, err
}

// isOurs tells whether this host may act on a run: the run is this host's
// (claimed by it or placed on it by the fleet), or pinned here and not
// claimed yet, and not released. Unpinned runs are the fleet's to place.
func (r *AgentRunReconciler) isOurs(run *agentsv1alpha1.AgentRun) bool {
	if agentruns.Released(run) {
		// A host's cache holds no released runs (UseHostCache); one
		// that also runs the fleet holds them, and treats them alike.
		return false
	}
	if run.Status.Host != "" {
		return run.Status.Host == r.Host
	}
	return run.Spec.HostName == r.Host
}

// claim takes an unclaimed run pinned to this host. The status write carries
// the resourceVersion read, so a stale copy never overwrites a newer status.
func (r *AgentRunReconciler) claim(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	// A queued run waits for Kueue to admit it; the fleet's status write
	// saying so brings it back.
	if agentruns.HeldByQueue(run) {
		return ctrl.Result{}, nil
	}
	// A host without a free slot leaves the run to hosts that have one; a
	// cancelled run is taken anyway, to be ended at once.
	if !run.Spec.Cancel {
		waits, err := r.waitsForBudget(ctx, run)
		if err != nil || waits {
			// The fleet reserves, or says BudgetExceeded; its status
			// write brings the run back.
			return ctrl.Result{RequeueAfter: r.RecheckPeriod}, err
		}
		free, err := r.hasSlot(ctx, run)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !free {
			return r.waitUnclaimed(ctx, run)
		}
	}
	base := run.DeepCopy()
	run.Status.Host = r.Host
	st := agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonClaimed, Message: "claimed by host " + r.Host}
	agentruns.ApplyState(&run.Status, run.Generation, st)
	err := r.Status().Patch(ctx, run, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		// Someone wrote first; the watch brings the new version.
		log.FromContext(ctx).V(1).Info("Lost the claim race or read a stale AgentRun", "agentrun", client.ObjectKeyFromObject(run))
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("claiming: %w", err)
	}
	// No event: the Scheduled condition says it, and every event is held in
	// the recorder's cache for minutes, which thousands of runs feel.
	return ctrl.Result{}, nil
}

// finished handles a run that reached a terminal phase: its containers go
// once the result is stored, then its callback; then the host lets it go
// (LabelReleased), or deletes it if its TTL has expired by then. The fleet
// deletes a released run when its TTL expires; the host, a run whose
// containers it keeps.
func (r *AgentRunReconciler) finished(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	if wait := r.logStreamGrace(run); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.cleanUpFinished(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	// The callback goes before the TTL can take the run.
	if r.awaitsCallback(ctx, run) {
		return ctrl.Result{}, nil
	}
	left, ok := agentruns.UntilTTLExpiry(run, r.Clock.Now())
	switch {
	case ok && left <= 0:
		return ctrl.Result{}, agentruns.DeleteExpired(ctx, r.Client, run)
	case agentruns.Releasable(run):
		return ctrl.Result{}, r.release(ctx, run)
	case ok:
		return ctrl.Result{RequeueAfter: left}, nil
	}
	return ctrl.Result{}, nil
}

// release lets go of a run this host has nothing left of: it leaves the
// host's cache, so a host's memory does not grow with finished runs.
func (r *AgentRunReconciler) release(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if agentruns.Released(run) {
		return nil
	}
	patch := client.MergeFrom(run.DeepCopy())
	agentruns.MarkReleased(run)
	return client.IgnoreNotFound(r.Patch(ctx, run, patch))
}

// waitUnclaimed records that no slot is free for a run pinned here, without
// taking it, and looks again later.
func (r *AgentRunReconciler) waitUnclaimed(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	base := run.DeepCopy()
	st := agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonWaitingForCapacity, Message: fmt.Sprintf(
		"host %s runs as many runs as it may (%d); this run starts, in creation order, when a slot frees", r.Host, r.MaxConcurrentRuns)}

	agentruns.ApplyState(&run.Status, run.Generation, st)
	if err := agentruns.WriteStatus(ctx, r.Client, base, run); err != nil && !apierrors.IsConflict(err) {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.RecheckPeriod}, nil
}

// maxLogStreamGrace bounds how long a finished run's container is kept for
// the log streams still reading it: they need a moment to read its last
// lines, and a reader that stalls must not keep it.
const maxLogStreamGrace = 30 * time.Second

// logStreamGrace is how long to wait before removing a finished run's
// container, which a log stream still reads (zero: remove it now).
func (r *AgentRunReconciler) logStreamGrace(run *agentsv1alpha1.AgentRun) time.Duration {
	if !r.logReaders.Reading(run.Status.ContainerID) || run.Status.CompletionTime == nil ||
		r.Clock.Since(run.Status.CompletionTime.Time) > maxLogStreamGrace {
		return 0
	}
	return time.Second
}

// cleanUpFinished removes a finished run's containers once its result is
// recorded, unless they are kept, and then drops the finalizer, so that a
// finished run costs no further Podman calls.
func (r *AgentRunReconciler) cleanUpFinished(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if r.KeepContainers || !controllerutil.ContainsFinalizer(run, agentruns.Finalizer) {
		return nil
	}
	if run.Status.ContainerID == "" || run.Status.Attempts > 1 {
		// An earlier attempt's container may have outlived its retry (its
		// removal failed), so a run that retried lists its containers.
		return r.removeContainersAndFinalizer(ctx, run)
	}
	// A run of one attempt has one container, whose ID is known: no
	// listing is needed.
	key := client.ObjectKeyFromObject(run)
	if !r.removed.was(key, run.Status.ContainerID) {
		if err := r.Runtime.Remove(ctx, run.Status.ContainerID); err != nil {
			return fmt.Errorf("removing container %s: %w", run.Status.ContainerName, err)
		}
		r.removed.add(key, run.Status.ContainerID)
	}
	return r.dropFinalizer(ctx, run)
}

// removedContainers remembers the container this process removed for each
// finished run, until the run's finalizer is dropped. The drop is checked
// against the version read and meets, often, another writer's change (the
// fleet's run recorder takes its finalizer off as the run finishes): the
// pass the newer version brings then only drops the finalizer, rather than
// call Podman again for a container that is gone (make bench: 1.8 removals
// a run, on a Podman busy with the next runs' launches and exits).
type removedContainers struct {
	mu  sync.Mutex
	ids map[types.NamespacedName]string
}

func (r *removedContainers) was(key types.NamespacedName, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return id != "" && r.ids[key] == id
}

func (r *removedContainers) add(key types.NamespacedName, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[types.NamespacedName]string{}
	}
	r.ids[key] = id
}

func (r *removedContainers) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ids, key)
}

// finalize stops and removes a deleted run's containers, then lets it go.
func (r *AgentRunReconciler) finalize(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if !controllerutil.ContainsFinalizer(run, agentruns.Finalizer) {
		return nil
	}
	return r.removeContainersAndFinalizer(ctx, run)
}

func (r *AgentRunReconciler) removeContainersAndFinalizer(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	owned, err := r.Runtime.List(ctx, runLabels(run, r.Host))
	if err != nil {
		return fmt.Errorf("listing the run's containers: %w", err)
	}
	for _, c := range owned {
		if err := containers.StopAndRemove(ctx, r.Runtime, c, r.StopGracePeriod); err != nil {
			return err
		}
		log.FromContext(ctx).Info("Removed container", "agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
	}
	return r.dropFinalizer(ctx, run)
}

// dropFinalizer removes the host's finalizer; a finished run with nothing
// else left here is released in the same write. A merge
// patch replaces the whole list, so it is checked against the version read:
// from a stale copy it would put back a finalizer another writer took off
// meanwhile (the fleet's record finalizer). On a conflict the watch brings
// the new version, and with it another pass.
func (r *AgentRunReconciler) dropFinalizer(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	patch := client.MergeFromWithOptions(run.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(run, agentruns.Finalizer)
	if agentruns.Releasable(run) {
		agentruns.MarkReleased(run)
	}
	err := r.Patch(ctx, run, patch)
	if apierrors.IsConflict(err) {
		log.FromContext(ctx).V(1).Info("AgentRun changed since it was read; dropping the finalizer at the next pass", "agentrun", client.ObjectKeyFromObject(run))
		return nil
	}
	if err = client.IgnoreNotFound(err); err == nil {
		r.removed.forget(client.ObjectKeyFromObject(run))
	}
	return err
}

// recordTransition emits one event when the run's state changed, and reports
// whether it did.
func (r *AgentRunReconciler) recordTransition(run *agentsv1alpha1.AgentRun, before, after agentruns.State) bool {
	if before.Phase == after.Phase && before.Reason == after.Reason {
		return false
	}
	eventType := corev1.EventTypeNormal
	if after.IsWarning() {
		eventType = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(run, nil, eventType, after.Reason, string(after.Phase), "%s", agentruns.TruncateUTF8(after.Message, agentruns.MaxEventNoteBytes))
	return true
}

// forget drops what this process keeps of a run that has finished or gone:
// its slot (waking the runs in line for it), its launch hint, its egress
// proxy's serving.
func (r *AgentRunReconciler) forget(ctx context.Context, key types.NamespacedName) {
	r.releaseSlot(ctx, key)
	r.launches.forget(key)
	r.superseded.forget(key)
	r.progress.forget(key)
	r.egress.stop(key)
}

// letGo forgets a run that has finished or is being deleted, and removes
// its egress socket directory, which an earlier process may have left.
func (r *AgentRunReconciler) letGo(ctx context.Context, run *agentsv1alpha1.AgentRun) {
	r.forget(ctx, client.ObjectKeyFromObject(run))
	if err := r.egress.remove(run); err != nil {
		log.FromContext(ctx).Error(err, "Removing a finished run's egress socket directory", "agentrun", client.ObjectKeyFromObject(run))
	}
}

// isUnavailable tells whether err says the container engine did not answer.
func isUnavailable(err error) bool {
	return errors.Is(err, containers.ErrUnavailable)
}

func ptrTime(t metav1.Time) *metav1.Time { return &t }

// SetupWithManager registers the reconciler, watching AgentRuns this host may
// act on and the requests podmanEvents makes of this host's containers'
// events. SetupHost calls it with everything else a host needs.
func (r *AgentRunReconciler) SetupWithManager(mgr ctrl.Manager, podmanEvents source.Source) error {
	r.wake = make(chan event.TypedGenericEvent[*agentsv1alpha1.AgentRun], 1024)
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(r.oursBeforeOrAfter())).
		WatchesRawSource(podmanEvents).
		WatchesRawSource(source.Channel(r.wake, &handler.TypedEnqueueRequestForObject[*agentsv1alpha1.AgentRun]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("agentrun").
		Complete(r)
}

// oursBeforeOrAfter passes the events of runs this host may act on, and the
// update that takes a run away from it (so it lets go of what it held).
func (r *AgentRunReconciler) oursBeforeOrAfter() predicate.Predicate {
	return runsBeforeOrAfter(r.isOurs)
}

// runsBeforeOrAfter passes the events of AgentRuns that match, and the
// update that makes one stop matching.
func runsBeforeOrAfter(match func(*agentsv1alpha1.AgentRun) bool) predicate.Predicate {
	matches := func(o client.Object) bool {
		run, ok := o.(*agentsv1alpha1.AgentRun)
		return ok && match(run)
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return matches(e.Object) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return matches(e.Object) },
		GenericFunc: func(e event.GenericEvent) bool { return matches(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return matches(e.ObjectOld) || matches(e.ObjectNew) },
	}
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
