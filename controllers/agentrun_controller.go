// Package controllers holds the AgentRun reconciler that runs on each Podman
// host.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// Finalizer keeps an AgentRun whose container was created until its host has
// stopped and removed the run's containers.
const Finalizer = "agents.agentrun.dev/container"

// AgentRunReconciler runs the AgentRuns meant for one Podman host as
// containers on that host and writes what happened back to their status.
type AgentRunReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Runtime  containers.Runtime
	// Host is this host's name: runs pinned to it or claimed by it are its.
	Host     string
	Defaults Defaults
	// OutputTailBytes bounds status.output.
	OutputTailBytes int
	// KeepContainers leaves finished containers for inspection; they are
	// removed when their AgentRun is deleted.
	KeepContainers bool
	// StopGracePeriod is how long a container has after SIGTERM.
	StopGracePeriod time.Duration
	// ResyncPeriod is how often a running run is checked when no Podman
	// event arrives; events normally make this unnecessary.
	ResyncPeriod time.Duration
	// SecretRecheckPeriod is how often a run waiting for a secret or an
	// image looks again.
	SecretRecheckPeriod time.Duration
}

// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=agentruns/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one run forward: claim it, launch its container, follow it,
// record its result, and clean up. It writes status at most once per pass.
func (r *AgentRunReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	run := &agentsv1alpha1.AgentRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !r.isOurs(run) {
		return ctrl.Result{}, nil
	}
	if run.Status.Host == "" {
		if !run.DeletionTimestamp.IsZero() {
			return ctrl.Result{}, nil // never claimed: nothing was launched
		}
		return r.claim(ctx, run)
	}
	if !run.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, run)
	}
	if run.Status.Phase.IsFinished() {
		return ctrl.Result{}, r.cleanUpFinished(ctx, run)
	}

	base := run.DeepCopy()
	st, result, err := r.advance(ctx, run)
	podmanChanged := setPodmanAvailable(&run.Status, run.Generation, r.Host, unavailable(err))
	applyState(&run.Status, run.Generation, st)
	if writeErr := r.writeStatus(ctx, base, run); writeErr != nil {
		return ctrl.Result{}, errors.Join(err, writeErr)
	}
	before := stateOf(&base.Status)
	transitioned := r.recordTransition(run, before, st)
	observeTransition(run, before, st)
	if podmanChanged && unavailable(err) != nil && !transitioned {
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonPodmanUnavailable, "Reconcile",
			"the Podman API on host %s does not answer; retrying", r.Host)
	}
	return result, err
}

// isOurs tells whether this host may act on a run: it is pinned here, or
// unpinned and claimed by no other host.
func (r *AgentRunReconciler) isOurs(run *agentsv1alpha1.AgentRun) bool {
	if run.Spec.HostName != "" && run.Spec.HostName != r.Host {
		return false
	}
	return run.Status.Host == "" || run.Status.Host == r.Host
}

// claim takes an unclaimed run for this host. The status write carries the
// resourceVersion read, so when several hosts race exactly one write lands
// and the others get a conflict and leave the run alone.
func (r *AgentRunReconciler) claim(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	base := run.DeepCopy()
	run.Status.Host = r.Host
	st := runState{phase: agentsv1alpha1.PhasePending, reason: agentsv1alpha1.ReasonClaimed, message: "claimed by host " + r.Host}
	applyState(&run.Status, run.Generation, st)
	err := r.Status().Patch(ctx, run, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		// Someone wrote first; the watch brings the new version.
		log.FromContext(ctx).V(1).Info("Lost the claim race or read a stale AgentRun", "agentrun", client.ObjectKeyFromObject(run))
		return ctrl.Result{Requeue: true}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("claiming: %w", err)
	}
	r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, agentsv1alpha1.ReasonClaimed, "Claim", "claimed by host %s", r.Host)
	return ctrl.Result{}, nil
}

// advance observes the run's container and acts on what it sees, filling the
// status fields that describe the container; it returns the resulting state.
func (r *AgentRunReconciler) advance(ctx context.Context, run *agentsv1alpha1.AgentRun) (runState, ctrl.Result, error) {
	if run.Status.ContainerName == "" {
		return r.launch(ctx, run)
	}
	c, err := r.Runtime.Inspect(ctx, run.Status.ContainerName)
	switch {
	case errors.Is(err, containers.ErrNotFound):
		return runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonContainerLost,
			fmt.Sprintf("container %s disappeared from host %s before its result was recorded", run.Status.ContainerName, r.Host)}, ctrl.Result{}, nil
	case err != nil:
		return stateOf(&run.Status), ctrl.Result{}, fmt.Errorf("inspecting container %s: %w", run.Status.ContainerName, err)
	}
	return r.follow(ctx, run, c)
}

// follow turns an observed container into the run's state.
func (r *AgentRunReconciler) follow(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) (runState, ctrl.Result, error) {
	running := runState{agentsv1alpha1.PhaseRunning, agentsv1alpha1.ReasonLaunched,
		fmt.Sprintf("container %s is running on host %s", c.Name, r.Host)}
	switch c.State {
	case containers.StateExited:
		return r.recordExit(ctx, run, c)
	case containers.StateCreated:
		// Created by a pass that ended before starting it.
		if err := r.Runtime.Start(ctx, c.ID); err != nil {
			return stateOf(&run.Status), ctrl.Result{}, fmt.Errorf("starting container %s: %w", c.Name, err)
		}
		run.Status.StartTime = ptrTime(metav1.Now())
	}
	if !c.StartedAt.IsZero() {
		run.Status.StartTime = ptrTime(metav1.NewTime(c.StartedAt))
	}
	return running, ctrl.Result{RequeueAfter: r.ResyncPeriod}, nil
}

// recordExit records a finished container's result. The container itself is
// removed by a later pass, once this result is stored.
func (r *AgentRunReconciler) recordExit(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) (runState, ctrl.Result, error) {
	output, err := r.Runtime.Logs(ctx, c.ID, r.OutputTailBytes)
	if err != nil {
		return stateOf(&run.Status), ctrl.Result{}, fmt.Errorf("reading the output of container %s: %w", c.Name, err)
	}
	code := c.ExitCode
	run.Status.ExitCode = &code
	run.Status.Output = output
	finished := c.FinishedAt
	if finished.IsZero() {
		finished = time.Now()
	}
	run.Status.CompletionTime = ptrTime(metav1.NewTime(finished))
	if !c.StartedAt.IsZero() {
		run.Status.StartTime = ptrTime(metav1.NewTime(c.StartedAt))
	}
	if code == 0 {
		return runState{agentsv1alpha1.PhaseSucceeded, agentsv1alpha1.ReasonCompleted,
			fmt.Sprintf("container %s exited 0", c.Name)}, ctrl.Result{}, nil
	}
	return runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonExitedNonZero,
		fmt.Sprintf("container %s exited with code %d; see status.output", c.Name, code)}, ctrl.Result{}, nil
}

// launch checks what the run needs on this host, then creates and starts its
// container. What is missing keeps the run Pending with a reason that says how
// to fix it.
func (r *AgentRunReconciler) launch(ctx context.Context, run *agentsv1alpha1.AgentRun) (runState, ctrl.Result, error) {
	const attempt = 1
	pending := func(reason, msg string) (runState, ctrl.Result, error) {
		return runState{agentsv1alpha1.PhasePending, reason, msg}, ctrl.Result{RequeueAfter: r.SecretRecheckPeriod}, nil
	}
	spec, err := containerSpec(run, r.Defaults, r.Host, attempt)
	if err != nil {
		return runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonLaunchFailed, err.Error()}, ctrl.Result{}, nil
	}

	missing, err := r.missingSecrets(ctx, run)
	if err != nil {
		return r.notLaunched(run, err)
	}
	if len(missing) > 0 {
		return pending(agentsv1alpha1.ReasonSecretNotFound, secretNotFoundMessage(r.Host, missing))
	}
	if ok, err := r.Runtime.ImageExists(ctx, spec.Image); err != nil {
		return r.notLaunched(run, fmt.Errorf("looking up image %s: %w", spec.Image, err))
	} else if !ok {
		return pending(agentsv1alpha1.ReasonImageNotFound, imageNotFoundMessage(r.Host, spec.Image))
	}

	if err := r.ensureFinalizer(ctx, run); err != nil {
		return stateOf(&run.Status), ctrl.Result{}, err
	}
	c, err := r.createOrAdopt(ctx, run, spec)
	switch {
	case errors.Is(err, containers.ErrNotFound):
		return pending(agentsv1alpha1.ReasonImageNotFound, imageNotFoundMessage(r.Host, spec.Image))
	case errors.Is(err, containers.ErrUnavailable):
		return r.notLaunched(run, err)
	case err != nil:
		// Podman refused the container (a bad network name, say): keep
		// retrying with backoff and say why.
		return runState{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonLaunchFailed, err.Error()}, ctrl.Result{}, err
	}
	run.Status.ContainerID, run.Status.ContainerName, run.Status.Attempts = c.ID, c.Name, attempt
	return r.follow(ctx, run, c)
}

// notLaunched is the state of a run whose launch stopped on err: Pending with
// reason PodmanUnavailable when Podman did not answer, else unchanged. The
// error makes the pass retry with backoff.
func (r *AgentRunReconciler) notLaunched(run *agentsv1alpha1.AgentRun, err error) (runState, ctrl.Result, error) {
	if unavailable(err) == nil {
		return stateOf(&run.Status), ctrl.Result{}, err
	}
	return runState{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonPodmanUnavailable,
		fmt.Sprintf("the Podman API on host %s does not answer; retrying: %v", r.Host, err)}, ctrl.Result{}, err
}

// ensureFinalizer adds the finalizer before the run's first container is
// created: from then on the run cannot go before its containers do, while a
// run that never got a container is deleted at once.
func (r *AgentRunReconciler) ensureFinalizer(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if controllerutil.ContainsFinalizer(run, Finalizer) {
		return nil
	}
	patch := client.MergeFrom(run.DeepCopy())
	controllerutil.AddFinalizer(run, Finalizer)
	if err := r.Patch(ctx, run, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// createOrAdopt creates the attempt's container, or adopts it when an earlier
// pass created it already (the name is per run and attempt).
func (r *AgentRunReconciler) createOrAdopt(ctx context.Context, run *agentsv1alpha1.AgentRun, spec containers.Spec) (containers.Container, error) {
	id, err := r.Runtime.Create(ctx, spec)
	if err == nil {
		return containers.Container{ID: id, Name: spec.Name, Labels: spec.Labels, State: containers.StateCreated}, nil
	}
	if !errors.Is(err, containers.ErrAlreadyExists) {
		return containers.Container{}, fmt.Errorf("creating container %s: %w", spec.Name, err)
	}
	c, err := r.Runtime.Inspect(ctx, spec.Name)
	if err != nil {
		return containers.Container{}, fmt.Errorf("inspecting existing container %s: %w", spec.Name, err)
	}
	if c.Labels[LabelUID] != string(run.UID) {
		return containers.Container{}, fmt.Errorf("a container named %s exists on host %s but does not belong to this run; remove it or rename it", spec.Name, r.Host)
	}
	log.FromContext(ctx).Info("Adopted existing container", "agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
	return c, nil
}

func (r *AgentRunReconciler) missingSecrets(ctx context.Context, run *agentsv1alpha1.AgentRun) ([]string, error) {
	var missing []string
	for _, name := range secretNames(run) {
		ok, err := r.Runtime.SecretExists(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("looking up secret %s: %w", name, err)
		}
		if !ok {
			missing = append(missing, name)
		}
	}
	return missing, nil
}

func secretNotFoundMessage(host string, missing []string) string {
	var fix []string
	for _, name := range missing {
		fix = append(fix, fmt.Sprintf(`echo "$VALUE" | podman secret create %s -`, name))
	}
	return fmt.Sprintf("Podman secret(s) %s not found on host %s; create them there and the run starts: %s",
		strings.Join(missing, ", "), host, strings.Join(fix, "; "))
}

func imageNotFoundMessage(host, image string) string {
	return fmt.Sprintf("image %s is not present on host %s; the controller does not pull images: "+
		"pull, load or build it there (podman pull/load/build) and the run starts", image, host)
}

// cleanUpFinished removes a finished run's containers once its result is
// recorded, unless they are kept, and then drops the finalizer, so that a
// finished run costs no further Podman calls.
func (r *AgentRunReconciler) cleanUpFinished(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if r.KeepContainers || !controllerutil.ContainsFinalizer(run, Finalizer) {
		return nil
	}
	return r.removeContainersAndFinalizer(ctx, run)
}

// finalize stops and removes a deleted run's containers, then lets it go.
func (r *AgentRunReconciler) finalize(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if !controllerutil.ContainsFinalizer(run, Finalizer) {
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
		if c.State == containers.StateRunning {
			if err := r.Runtime.Stop(ctx, c.ID, r.StopGracePeriod); err != nil {
				return fmt.Errorf("stopping container %s: %w", c.Name, err)
			}
		}
		if err := r.Runtime.Remove(ctx, c.ID); err != nil {
			return fmt.Errorf("removing container %s: %w", c.Name, err)
		}
		log.FromContext(ctx).Info("Removed container", "agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
	}
	patch := client.MergeFrom(run.DeepCopy())
	controllerutil.RemoveFinalizer(run, Finalizer)
	if err := r.Patch(ctx, run, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// writeStatus patches the status when this pass changed it.
func (r *AgentRunReconciler) writeStatus(ctx context.Context, base, run *agentsv1alpha1.AgentRun) error {
	if equality.Semantic.DeepEqual(base.Status, run.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, run, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// recordTransition emits one event when the run's state changed, and reports
// whether it did.
func (r *AgentRunReconciler) recordTransition(run *agentsv1alpha1.AgentRun, before, after runState) bool {
	if before.phase == after.phase && before.reason == after.reason {
		return false
	}
	eventType := corev1.EventTypeNormal
	if after.isWarning() {
		eventType = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(run, nil, eventType, after.reason, string(after.phase), "%s", after.message)
	return true
}

// unavailable returns err when it says the container engine did not answer.
func unavailable(err error) error {
	if errors.Is(err, containers.ErrUnavailable) {
		return err
	}
	return nil
}

func ptrTime(t metav1.Time) *metav1.Time { return &t }

// SetupWithManager registers the reconciler, watching AgentRuns this host may
// act on and the Podman events of this host's containers.
func (r *AgentRunReconciler) SetupWithManager(mgr ctrl.Manager, podmanEvents *PodmanEventSource) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			run, ok := o.(*agentsv1alpha1.AgentRun)
			return ok && r.isOurs(run)
		}))).
		WatchesRawSource(podmanEvents.Source()).
		Named("agentrun").
		Complete(r)
}
