package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/egressforward"
	"github.com/agentrun/agentrun/internal/egressgate"
	"github.com/agentrun/agentrun/internal/hostagent"
	"github.com/agentrun/agentrun/internal/policy"
	"github.com/agentrun/agentrun/internal/runoutput"
)

// agentResultWindow is how much of the end of a container's output is read
// to find the agent's JSON result, which can be much longer than the tail
// kept in status.
const agentResultWindow = 256 << 10

// advance observes the run's current container and acts on what it sees,
// filling the status fields that describe it; it returns the resulting state.
func (r *AgentRunReconciler) advance(ctx context.Context, run *agentsv1alpha1.AgentRun) (agentruns.State, ctrl.Result, error) {
	if run.Spec.Cancel {
		return r.cancel(ctx, run)
	}
	if agentruns.Evicted(run) {
		return r.evict(ctx, run)
	}
	if run.Status.ContainerName == "" {
		if run.Status.Attempts == 0 {
			rec, err := r.alreadyRan(ctx, run)
			if err != nil {
				return agentruns.StateOf(&run.Status), ctrl.Result{}, err
			}
			if rec != nil {
				return endAsRecorded(run, rec), ctrl.Result{}, nil
			}
		}
		// The first attempt, or the next after the run's host was lost.
		return r.launch(ctx, run, run.Status.Attempts+1)
	}
	if r.Exits != nil {
		recorded := containers.Container{ID: run.Status.ContainerID, Name: run.Status.ContainerName}
		if exit, ok := r.Exits.Exited(recorded.ID); ok {
			recorded.State, recorded.ExitCode, recorded.FinishedAt = containers.StateExited, exit.Code, exit.At
			return r.follow(ctx, run, recorded)
		}
		// A container this process waits on has not ended, or its end is
		// on its way: the pass after a launch's own status write (every
		// run has one) needs no inspect.
		if r.Exits.Awaiting(recorded.ID) {
			recorded.State = containers.StateRunning
			return r.follow(ctx, run, recorded)
		}
	}
	c, err := r.Runtime.Inspect(ctx, run.Status.ContainerName)
	switch {
	case errors.Is(err, containers.ErrNotFound):
		return r.recordedContainerGone(ctx, run)
	case err != nil:
		return agentruns.StateOf(&run.Status), ctrl.Result{}, fmt.Errorf("inspecting container %s: %w", run.Status.ContainerName, err)
	}
	return r.follow(ctx, run, c)
}

// recordedContainerGone handles a run whose recorded container no longer
// exists. A retry removes the failed attempt's container before it launches
// the next one; when the status naming the next one was never written, that
// container is found by the run's labels and followed. Otherwise the
// container was lost.
func (r *AgentRunReconciler) recordedContainerGone(ctx context.Context, run *agentsv1alpha1.AgentRun) (agentruns.State, ctrl.Result, error) {
	owned, err := r.Runtime.List(ctx, runLabels(run, r.Host))
	if err != nil {
		return agentruns.StateOf(&run.Status), ctrl.Result{}, fmt.Errorf("listing the run's containers: %w", err)
	}
	if c, attempt, ok := latestAttempt(owned); ok && attempt > run.Status.Attempts {
		log.FromContext(ctx).Info("Following a later attempt's container the status did not record yet",
			"agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
		run.Status.ContainerID, run.Status.ContainerName, run.Status.Attempts = c.ID, c.Name, attempt
		return r.follow(ctx, run, c)
	}
	if run.Status.Phase == agentsv1alpha1.PhasePending && run.Status.ExitCode != nil {
		// The attempt had ended and its result was recorded: the run was
		// waiting for its retry, which nothing of the container holds up.
		return r.launch(ctx, run, run.Status.Attempts+1)
	}
	return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonContainerLost, Message: fmt.Sprintf("container %s disappeared from host %s before its result was recorded", run.Status.ContainerName, r.Host)},
		ctrl.Result{}, nil
}

// follow turns an observed container into the run's state, stopping it when
// the run's deadline has passed.
func (r *AgentRunReconciler) follow(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) (agentruns.State, ctrl.Result, error) {
	switch c.State {
	case containers.StateExited:
		return r.attemptEnded(ctx, run, c)
	case containers.StateCreated:
		// Created by this pass, or by one that ended before starting it.
		// The volumes are checked again right before the start: a host
		// path may have been swapped for a link since they were checked.
		if refused := r.recheckVolumes(run); refused != nil {
			return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: refused.Reason, Message: refused.Message}, ctrl.Result{}, nil
		}
		if st, res, err := r.serveEgress(ctx, run); st != nil {
			return *st, res, err
		}
		started, err := r.start(ctx, c)
		if err != nil {
			return agentruns.StateOf(&run.Status), ctrl.Result{}, err
		}
		if started.State == containers.StateExited {
			return r.attemptEnded(ctx, run, started)
		}
		c = started
		r.holdSecretValues(ctx, run, c)
	}
	if run.Status.StartTime == nil && !c.StartedAt.IsZero() {
		run.Status.StartTime = ptrTime(metav1.NewTime(c.StartedAt))
	}
	left, _ := untilDeadline(run, r.DefaultTimeout, r.Clock.Now())
	if left <= 0 {
		return r.stopAndRecord(ctx, run, c, agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonDeadlineExceeded, Message: fmt.Sprintf("the run exceeded its timeout of %s; container %s was stopped", timeoutOf(run, r.DefaultTimeout), c.Name)})
	}
	if r.Exits != nil {
		r.Exits.Await(c.ID, client.ObjectKeyFromObject(run))
	}
	if proxied(run) {
		// Served again by a process that did not serve it (the manager
		// restarted): until then its connections were refused.
		if err := r.egress.serve(ctx, run, r.Runtime, r.egressDeadline(run)); err != nil {
			return agentruns.StateOf(&run.Status), ctrl.Result{}, fmt.Errorf("serving the run's egress socket: %w", err)
		}
	}
	running := agentruns.State{Phase: agentsv1alpha1.PhaseRunning, Reason: agentsv1alpha1.ReasonLaunched, Message: fmt.Sprintf("container %s is running on host %s", c.Name, r.Host)}

	return running, ctrl.Result{RequeueAfter: min(r.ResyncPeriod, left)}, nil
}

// start starts a created container. A start call that failed may have
// started it all the same: on a saturated host Podman answers after the
// call's deadline (measured: 200 runs at once on 2 cores, start calls timing
// out after 2 minutes while Podman went on starting their containers), and a
// start sent again meanwhile meets runc's "container with given ID already
// exists". So a failed start looks at the container: running or exited, the
// start went through, and the run goes on from there.
func (r *AgentRunReconciler) start(ctx context.Context, c containers.Container) (containers.Container, error) {
	err := r.Runtime.Start(ctx, c.ID)
	if err == nil {
		c.State, c.StartedAt = containers.StateRunning, r.Clock.Now()
		return c, nil
	}
	now, inspectErr := r.Runtime.Inspect(ctx, c.ID)
	if inspectErr != nil || now.State != containers.StateRunning && now.State != containers.StateExited {
		return c, fmt.Errorf("starting container %s: %w", c.Name, err)
	}
	log.FromContext(ctx).Info("Podman started the container though the start call failed", "container", c.Name, "state", now.State, "error", err.Error())
	return now, nil
}

// holdSecretValues reads the values of the run's secrets as its container
// starts, to mask its output with until it ends: Podman 5 shows a secret's
// value as it is now, so a secret replaced during the run would otherwise be
// masked with its new value, not the one the container has. A read that
// fails is left to the first progress refresh or the run's end.
func (r *AgentRunReconciler) holdSecretValues(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) {
	if r.DiscardOutput || len(run.Spec.Podman.SecretsEnv) == 0 {
		return
	}
	redactor, err := runoutput.Redactor(ctx, r.Runtime, run, c)
	if err != nil {
		log.FromContext(ctx).Error(err, "Reading a started container's secret values, to mask its output; reading them later",
			"agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
		return
	}
	r.progress.hold(client.ObjectKeyFromObject(run), c.ID, redactor)
}

// recheckVolumes checks the volumes of the run's current attempt against
// the host's file system as it is now.
func (r *AgentRunReconciler) recheckVolumes(run *agentsv1alpha1.AgentRun) *policy.Refusal {
	spec, err := containerSpec(run, r.Defaults, r.Host, run.Status.Attempts)
	if err != nil {
		return &policy.Refusal{Reason: agentsv1alpha1.ReasonLaunchFailed, Message: err.Error()}
	}
	return r.Policy.CheckMounts(spec)
}

// stopAndRecord stops a running container and records its result under the
// given terminal state (a cancel or a deadline).
func (r *AgentRunReconciler) stopAndRecord(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container, st agentruns.State) (agentruns.State, ctrl.Result, error) {
	if c.State != containers.StateExited {
		if err := r.Runtime.Stop(ctx, c.ID, r.StopGracePeriod); err != nil && !errors.Is(err, containers.ErrNotFound) {
			return agentruns.StateOf(&run.Status), ctrl.Result{}, fmt.Errorf("stopping container %s: %w", c.Name, err)
		}
		stopped, err := r.Runtime.Inspect(ctx, c.ID)
		if err != nil {
			return agentruns.StateOf(&run.Status), ctrl.Result{}, fmt.Errorf("inspecting stopped container %s: %w", c.Name, err)
		}
		c = stopped
	}
	if err := r.recordResult(ctx, run, c); err != nil {
		return agentruns.StateOf(&run.Status), ctrl.Result{}, err
	}
	return st, ctrl.Result{}, nil
}

// recordResult copies an exited container's result into status: exit code,
// end time, and, unless output capture is off, the output tail and the
// agent's JSON result, both with the run's secret values masked.
func (r *AgentRunReconciler) recordResult(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) error {
	code := c.ExitCode
	run.Status.ExitCode = &code
	if !c.FinishedAt.IsZero() {
		run.Status.CompletionTime = ptrTime(metav1.NewTime(c.FinishedAt))
	}
	if run.Status.StartTime == nil && !c.StartedAt.IsZero() {
		run.Status.StartTime = ptrTime(metav1.NewTime(c.StartedAt))
	}
	if r.DiscardOutput {
		return nil
	}
	// Progress holds the container's secret values from its start, unless
	// this process started later: reading them again costs a Podman call per
	// secret (and an inspect on 4.3), and on Podman 5 reads a secret's
	// value as it is now, not as the container got it.
	redactor := r.progress.of(client.ObjectKeyFromObject(run), c.ID).redactor
	if redactor == nil {
		var err error
		if redactor, err = runoutput.Redactor(ctx, r.Runtime, run, c); err != nil {
			return err
		}
	}
	began := time.Now()
	output, err := runoutput.Tail(ctx, r.Runtime, c.ID, redactor, max(r.OutputTailBytes, agentResultWindow))
	runEnd.WithLabelValues(runEndOutput).Observe(time.Since(began).Seconds())
	if err != nil {
		return fmt.Errorf("reading the output of container %s: %w", c.Name, err)
	}
	run.Status.Output = runoutput.TruncateStart(output, r.OutputTailBytes)
	run.Status.AgentResult = parseAgentResult(output)
	return nil
}

// attemptEnded decides what an exited container means for the run: success,
// an agent error, a retry after a backoff, or the run's failure.
func (r *AgentRunReconciler) attemptEnded(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) (agentruns.State, ctrl.Result, error) {
	if err := r.recordResult(ctx, run, c); err != nil {
		return agentruns.StateOf(&run.Status), ctrl.Result{}, err
	}
	code, result := c.ExitCode, run.Status.AgentResult
	switch {
	case code == egressforward.ExitNoForwarder && proxied(run):
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonEgressUnavailable, Message: fmt.Sprintf(
				"the run's egress forwarder found no proxy on host %s, or could not start (container %s exited %d without running the command; see status.output): "+
					"the host's egress proxy did not serve the run's socket", r.Host, c.Name, code)},
			ctrl.Result{}, nil
	case code == 0 && result != nil && result.IsError:
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonAgentError, Message: fmt.Sprintf("container %s exited 0 but the agent reported an error: %s", c.Name, agentruns.TruncateUTF8(result.Result, 512))},
			ctrl.Result{}, nil
	case code == 0:
		return agentruns.State{Phase: agentsv1alpha1.PhaseSucceeded, Reason: agentsv1alpha1.ReasonCompleted, Message: fmt.Sprintf("container %s exited 0", c.Name)},
			ctrl.Result{}, nil
	}

	limit := int32(0)
	if run.Spec.BackoffLimit != nil {
		limit = *run.Spec.BackoffLimit
	}
	// Attempts lost with their host do not count, as a Job's pods
	// disrupted by a node's loss do not count against its backoffLimit.
	if run.Status.Attempts-run.Status.DisruptedAttempts > limit {
		reason := agentsv1alpha1.ReasonExitedNonZero
		if limit > 0 {
			reason = agentsv1alpha1.ReasonBackoffLimitExceeded
		}
		// The result of the last attempt stands, not a completion time set
		// while waiting for a retry.
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: reason, Message: fmt.Sprintf("container %s exited with code %d after %d attempt(s); see status.output", c.Name, code, run.Status.Attempts)},
			ctrl.Result{}, nil
	}

	now := r.Clock.Now()
	deadlineLeft, _ := untilDeadline(run, r.DefaultTimeout, now)
	if deadlineLeft <= 0 {
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonDeadlineExceeded, Message: fmt.Sprintf("the run exceeded its timeout of %s before attempt %d could start", timeoutOf(run, r.DefaultTimeout), run.Status.Attempts+1)},
			ctrl.Result{}, nil
	}
	// Waiting for a retry is not the end of the run.
	run.Status.CompletionTime = nil
	retryAt := c.FinishedAt.Add(retryDelay(run.Status.Attempts, r.RetryBackoff, r.MaxRetryBackoff))
	if wait := retryAt.Sub(now); wait > 0 {
		return agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonBackOff, Message: fmt.Sprintf("attempt %d (container %s) exited with code %d; attempt %d of %d starts at %s",
				run.Status.Attempts, c.Name, code, run.Status.Attempts+1, limit+1, retryAt.UTC().Format(time.RFC3339))},

			ctrl.Result{RequeueAfter: min(wait, deadlineLeft)}, nil
	}
	st, res, err := r.launch(ctx, run, run.Status.Attempts+1)
	if run.Status.ContainerID != c.ID && !r.KeepContainers {
		// The failed attempt's container goes only once the next one
		// exists: until then the status names it, and every pass finds it
		// and retries the launch (a secret removed since, Podman down). A
		// failed removal holds nothing up: the run's containers are listed
		// when it finishes.
		if rmErr := r.Runtime.Remove(ctx, c.ID); rmErr != nil {
			log.FromContext(ctx).Error(rmErr, "Removing a failed attempt's container; it goes when the run finishes",
				"agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
		}
	}
	return st, res, err
}

// cancel ends a run whose spec.cancel is set, stopping its container if one
// runs, and names the client that asked.
func (r *AgentRunReconciler) cancel(ctx context.Context, run *agentsv1alpha1.AgentRun) (agentruns.State, ctrl.Result, error) {
	msg := "cancelled: spec.cancel was set"
	if who := r.cancelledBy(ctx, run); who != "" {
		msg = "cancelled: spec.cancel was set by " + who
	}
	st := agentruns.State{Phase: agentsv1alpha1.PhaseCancelled, Reason: agentsv1alpha1.ReasonCancelled, Message: msg}
	if run.Status.ContainerName == "" {
		return st, ctrl.Result{}, nil
	}
	c, err := r.Runtime.Inspect(ctx, run.Status.ContainerName)
	switch {
	case errors.Is(err, containers.ErrNotFound):
		return st, ctrl.Result{}, nil
	case err != nil:
		return agentruns.StateOf(&run.Status), ctrl.Result{}, fmt.Errorf("inspecting container %s: %w", run.Status.ContainerName, err)
	}
	return r.stopAndRecord(ctx, run, c, st)
}

// cancelledBy names the client that set spec.cancel. The cache keeps no
// managed fields (TrimForCache), so they are read from the API server.
func (r *AgentRunReconciler) cancelledBy(ctx context.Context, run *agentsv1alpha1.AgentRun) string {
	if len(run.ManagedFields) == 0 && r.APIReader != nil {
		fresh := &agentsv1alpha1.AgentRun{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(run), fresh); err == nil {
			return cancelledBy(fresh)
		}
	}
	return cancelledBy(run)
}

// launch checks what the attempt needs on this host, then creates and starts
// its container. What is missing keeps the run Pending with a reason that
// says how to fix it; what the host refuses fails the run.
func (r *AgentRunReconciler) launch(ctx context.Context, run *agentsv1alpha1.AgentRun, attempt int32) (agentruns.State, ctrl.Result, error) {
	pending := func(reason, msg string) (agentruns.State, ctrl.Result, error) {
		return agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: reason, Message: msg}, ctrl.Result{RequeueAfter: r.RecheckPeriod}, nil
	}
	spec, err := containerSpec(run, r.Defaults, r.Host, attempt)
	if err != nil {
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonLaunchFailed, Message: err.Error()}, ctrl.Result{}, nil
	}
	if refused := r.Policy.Apply(&spec); refused != nil {
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: refused.Reason, Message: refused.Message}, ctrl.Result{}, nil
	}
	plan, refused := r.planEgress(run)
	if refused == nil {
		refused = r.withEgress(&spec, run, plan.Mode)
	}
	if refused != nil {
		return agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: refused.Reason, Message: refused.Message}, ctrl.Result{}, nil
	}
	if r.admission != nil {
		if err := r.admission(); hostagent.IsNotFenced(err) {
			return pending(agentsv1alpha1.ReasonFencing, fmt.Sprintf("host %s launches this run once it has removed the containers of runs "+
				"given to other hosts while it was away (at start, or after being cut off): %v", r.Host, err))
		} else if err != nil {
			return r.notLaunched(run, err)
		}
	}
	// The one slot check of a launch comes before any Podman lookup, so a
	// run with no slot in sight costs Podman nothing. A run that cannot
	// start after all gives its slot back.
	if free, err := r.reserveSlot(ctx, run); err != nil || !free {
		return r.noSlot(run, err)
	}
	started := false
	defer func() {
		if !started {
			r.slots.release(client.ObjectKeyFromObject(run))
		}
	}()
	uses := secretUses(run)
	missing, err := r.missingSecrets(ctx, uses)
	if err != nil {
		return r.notLaunched(run, err)
	}
	if len(missing) > 0 {
		return pending(agentsv1alpha1.ReasonSecretNotFound, secretNotFoundMessage(r.Host, missing, uses))
	}
	if err := r.ensureFinalizer(ctx, run); err != nil {
		return agentruns.StateOf(&run.Status), ctrl.Result{}, err
	}
	// Session handling comes last: what a container left in a session
	// directory is touched only for a run that starts now.
	sessionDir, st, res, err := r.prepareSession(ctx, run, &spec)
	if st != nil {
		return *st, res, err
	}
	// The image is not looked up first: Create's own answer says when it is
	// missing, and the lookup was one more call per run for Podman, which is
	// CPU-bound here. A secret removed since missingSecrets looked is a
	// plain ErrNotFound: the retry's check names it.
	// The run's socket is served before its container exists: Podman
	// wants the mount's directory there, and the forwarder finds the proxy
	// as soon as the container starts.
	run.Status.Egress = plan
	if st, res, err := r.serveEgress(ctx, run); st != nil {
		return *st, res, err
	}
	c, err := r.createOrAdopt(ctx, run, spec, attempt)
	switch {
	case errors.Is(err, containers.ErrImageNotFound):
		return pending(agentsv1alpha1.ReasonImageNotFound, imageNotFoundMessage(r.Host, spec.Image))
	case errors.Is(err, containers.ErrUnavailable):
		return r.notLaunched(run, err)
	case err != nil:
		// Podman refused the container (a bad network name, say): keep
		// retrying with backoff and say why.
		return agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonLaunchFailed, Message: err.Error()}, ctrl.Result{}, err
	}
	started = true
	r.launches.made(run, attempt)
	run.Status.ContainerID, run.Status.ContainerName, run.Status.Attempts = c.ID, c.Name, attempt
	run.Status.SessionDir = sessionDir
	return r.follow(ctx, run, c)
}

// serveEgress serves a proxied run's socket with its credentials, or says
// why the run cannot start (a nil state: it can): without the socket the
// run would have no network. A credential's secret removed since
// missingSecrets looked keeps the run waiting for it, as a missing one does.
func (r *AgentRunReconciler) serveEgress(ctx context.Context, run *agentsv1alpha1.AgentRun) (*agentruns.State, ctrl.Result, error) {
	if !proxied(run) {
		return nil, ctrl.Result{}, nil
	}
	err := r.egress.serve(ctx, run, r.Runtime, r.egressDeadline(run))
	switch {
	case err == nil:
		return nil, ctrl.Result{}, nil
	case errors.Is(err, containers.ErrNotFound):
		return &agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonSecretNotFound, Message: fmt.Sprintf(
			"host %s: %v; create it there and the run starts", r.Host, err)}, ctrl.Result{RequeueAfter: r.RecheckPeriod}, nil
	case isUnavailable(err):
		st, res, err := r.notLaunched(run, err)
		return &st, res, err
	case errors.Is(err, egressgate.ErrClosed):
		// The manager is stopping: the next one launches the run.
		st := agentruns.StateOf(&run.Status)
		return &st, ctrl.Result{}, err
	}
	return &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonEgressUnavailable, Message: fmt.Sprintf(
		"host %s could not serve the run's egress proxy socket: %v", r.Host, err)}, ctrl.Result{}, nil
}

// egressDeadline bounds the validity of the run's CA (for credentialed
// hosts): its timeout from now, which is no earlier than the deadline of
// an attempt that starts now or started before (a restart serves it again).
func (r *AgentRunReconciler) egressDeadline(run *agentsv1alpha1.AgentRun) time.Time {
	return r.Clock.Now().Add(timeoutOf(run, r.DefaultTimeout))
}

// proxied tells whether the run's container reaches the network through
// the host's egress proxy, as it was launched.
func proxied(run *agentsv1alpha1.AgentRun) bool {
	return run.Status.Egress != nil && run.Status.Egress.Mode == agentsv1alpha1.EgressProxy
}

// noSlot is the state of a run that cannot start for want of a slot.
func (r *AgentRunReconciler) noSlot(run *agentsv1alpha1.AgentRun, err error) (agentruns.State, ctrl.Result, error) {
	if err != nil {
		return agentruns.StateOf(&run.Status), ctrl.Result{}, err
	}
	return agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonWaitingForCapacity, Message: fmt.Sprintf(
			"host %s runs as many runs as it may (%d); this run starts, in creation order, when a slot frees", r.Host, r.MaxConcurrentRuns)},

		ctrl.Result{RequeueAfter: r.RecheckPeriod}, nil
}

// notLaunched is the state of a run whose launch stopped on err: Pending with
// reason PodmanUnavailable when Podman did not answer, else unchanged. The
// error makes the pass retry with backoff.
func (r *AgentRunReconciler) notLaunched(run *agentsv1alpha1.AgentRun, err error) (agentruns.State, ctrl.Result, error) {
	if !isUnavailable(err) {
		return agentruns.StateOf(&run.Status), ctrl.Result{}, err
	}
	return agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonPodmanUnavailable, Message: fmt.Sprintf("the Podman API on host %s does not answer; retrying: %v", r.Host, err)},
		ctrl.Result{}, err
}

// ensureFinalizer adds the finalizer before the run's first container is
// created: from then on the run cannot go before its containers do, while a
// run that never got a container is deleted at once. A host that keeps
// records adds the fleet's RecordFinalizer with it: the run then cannot go
// before the fleet recorded it.
func (r *AgentRunReconciler) ensureFinalizer(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if controllerutil.ContainsFinalizer(run, agentruns.Finalizer) {
		return nil
	}
	patch := client.MergeFrom(run.DeepCopy())
	controllerutil.AddFinalizer(run, agentruns.Finalizer)
	if r.RecordRuns {
		controllerutil.AddFinalizer(run, agentruns.RecordFinalizer)
	}
	if err := r.Patch(ctx, run, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// createOrAdopt creates the attempt's container, or adopts it when an earlier
// pass created it already (the name is per run and attempt). An earlier pass
// of this process may have created it and then failed to record it (its
// status write met a conflict): the status does not say so, the container
// does, so the container is looked up by name first.
func (r *AgentRunReconciler) createOrAdopt(ctx context.Context, run *agentsv1alpha1.AgentRun, spec containers.Spec, attempt int32) (containers.Container, error) {
	if r.launches.launched(run, attempt) {
		if c, err := r.Runtime.Inspect(ctx, spec.Name); err == nil && c.Labels[agentsv1alpha1.LabelUID] == string(run.UID) {
			return c, nil
		}
	}
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
	if c.Labels[agentsv1alpha1.LabelUID] != string(run.UID) {
		return containers.Container{}, fmt.Errorf("a container named %s exists on host %s but does not belong to this run; remove it or rename it", spec.Name, r.Host)
	}
	log.FromContext(ctx).Info("Adopted existing container", "agentrun", client.ObjectKeyFromObject(run), "container", c.Name)
	return c, nil
}

// missingSecrets are the secrets of uses that do not exist on the host,
// sorted.
func (r *AgentRunReconciler) missingSecrets(ctx context.Context, uses map[string][]string) ([]string, error) {
	var missing []string
	for _, name := range slices.Sorted(maps.Keys(uses)) {
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

// secretNotFoundMessage names the missing secrets, the fields that name
// them (uses), and the commands that create them.
func secretNotFoundMessage(host string, missing []string, uses map[string][]string) string {
	var fix []string
	for _, name := range missing {
		fix = append(fix, fmt.Sprintf(`printf %%s "$VALUE" | podman secret create %s -`, shellQuote(name)))
	}
	quoted := make([]string, len(missing))
	for i, name := range missing {
		quoted[i] = fmt.Sprintf("%s (%s)", shellQuote(name), strings.Join(uses[name], ", "))
	}
	return fmt.Sprintf("Podman secret(s) %s not found on host %s; create them there and the run starts: %s",
		strings.Join(quoted, ", "), host, strings.Join(fix, "; "))
}

// shellQuote quotes s for a POSIX shell, so a command an operator copies from
// a message runs with s as one word whatever it holds.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func imageNotFoundMessage(host, image string) string {
	return fmt.Sprintf("image %s is not present on host %s; the controller does not pull images: "+
		"pull, load or build it there (podman pull/load/build) and the run starts", image, host)
}
