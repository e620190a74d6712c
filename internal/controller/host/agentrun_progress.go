package host

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/redact"
	"github.com/agentrun/agentrun/internal/runoutput"
)

// progressWorkers is how many runs' output the progress controller reads at
// once. A read is one Podman logs call; two keep a period's reads of a
// host's runs flowing when one of them is slow, without adding much to the
// calls launches make.
const progressWorkers = 2

// ProgressReconciler publishes the end of a running run's output so far in
// status.output, masked as the final output is, once ProgressPeriod has passed
// since it was last read (or since the container started), and only when it
// changed; with it, a proxied run's egress counts. It is a controller of its own, with workers of its own: a
// refresh does not wait behind launches, which hold the AgentRun
// controller's workers for as long as Podman takes to create and start a
// container (minutes, on a saturated host).
//
// The output is read whole, as the final output is (Logs says why): a
// running run costs a Podman logs call per period, and the call's cost grows
// with what the run has printed. A read that fails is logged and tried again
// a period later.
type ProgressReconciler struct {
	client.Client
	HostConfig
	// reads is shared with the AgentRunReconciler, which masks the final
	// output with the secret values read here and forgets a run it lets go.
	reads *progressReads
	// egress are the proxied runs the AgentRunReconciler serves, whose
	// counts are refreshed with the output.
	egress *egressRuns
}

// progressReconciler is the reconciler that publishes r's running runs'
// output, or nil when the host publishes none while runs run
// (host.output.progressPeriod 0, or host.output.capture false).
func (r *AgentRunReconciler) progressReconciler() *ProgressReconciler {
	if r.ProgressPeriod <= 0 || r.DiscardOutput {
		return nil
	}
	return &ProgressReconciler{Client: r.Client, HostConfig: r.HostConfig, reads: &r.progress, egress: &r.egress}
}

// Reconcile reads a running run's output when a period has passed, and
// writes it when it changed; it comes back when the next read is due.
func (r *ProgressReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	run := &agentsv1alpha1.AgentRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		if apierrors.IsNotFound(err) {
			r.reads.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !r.runsHere(run) {
		// Finished (its final output is written), between attempts, or
		// taken from this host: what was read of it goes, secret values
		// included.
		r.reads.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	base := run.DeepCopy()
	next := r.refresh(ctx, run)
	r.egress.count(run)
	if run.Status.Output == base.Status.Output && equality.Semantic.DeepEqual(run.Status.Egress, base.Status.Egress) {
		return ctrl.Result{RequeueAfter: next}, nil
	}
	// Against the version read: a run that ended meanwhile keeps its final
	// output, and this one is dropped.
	if err := r.Status().Patch(ctx, run, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		r.reads.unpublished(req.NamespacedName)
		if agentruns.Stale(err) {
			return ctrl.Result{RequeueAfter: next}, nil
		}
		return ctrl.Result{}, fmt.Errorf("writing the output so far: %w", err)
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// runsHere tells whether run is running a container on this host.
func (r *ProgressReconciler) runsHere(run *agentsv1alpha1.AgentRun) bool {
	return run.Status.Host == r.Host && run.Status.Phase == agentsv1alpha1.PhaseRunning &&
		run.Status.ContainerID != "" && run.DeletionTimestamp.IsZero()
}

// refresh sets run.Status.Output to the container's masked output when a
// read is due and the output changed since it was last published; it
// returns how long until the next read is due.
func (r *ProgressReconciler) refresh(ctx context.Context, run *agentsv1alpha1.AgentRun) time.Duration {
	key := client.ObjectKeyFromObject(run)
	c := containers.Container{ID: run.Status.ContainerID, Name: run.Status.ContainerName}
	read := r.reads.of(key, c.ID)
	now := r.Clock.Now()
	since := read.at
	if since.IsZero() && run.Status.StartTime != nil {
		since = run.Status.StartTime.Time
	}
	if since.IsZero() {
		since = now
	}
	if wait := since.Add(r.ProgressPeriod).Sub(now); wait > 0 {
		if read.at.IsZero() {
			read.at = since
			r.reads.put(key, read)
		}
		return wait
	}
	read.at = now
	r.reads.put(key, read)
	var err error
	if read.redactor == nil {
		// Held from the container's start (holdSecretValues) unless reading
		// them then failed, or this process started later.
		read.redactor, err = runoutput.Redactor(ctx, r.Runtime, run, c)
	}
	var masked string
	if err == nil {
		masked, err = runoutput.Tail(ctx, r.Runtime, c.ID, read.redactor, r.OutputTailBytes)
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "Reading a running container's output for status; trying again next period",
			"agentrun", key, "container", c.Name)
		r.reads.put(key, read)
		return r.ProgressPeriod
	}
	if sum := sha256.Sum256([]byte(masked)); sum != read.published {
		read.published = sum
		run.Status.Output = masked
	}
	r.reads.put(key, read)
	return r.ProgressPeriod
}

// SetupWithManager registers the controller, watching the runs that run on
// this host and the update that ends that (so it lets go of what it read).
func (r *ProgressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(runsBeforeOrAfter(r.runsHere))).
		WithOptions(controller.Options{MaxConcurrentReconciles: progressWorkers}).
		Named("agentrun-progress").
		Complete(r)
}

// progressReads holds, per running run, what the ProgressReconciler last
// read and published. The cache keeps no output (TrimForCache), so whether the output
// changed is told from the digest of what this process last wrote.
type progressReads struct {
	mu    sync.Mutex
	byRun map[types.NamespacedName]progressRead
}

type progressRead struct {
	containerID string
	at          time.Time
	published   [sha256.Size]byte
	// redactor holds the container's secret values, to mask its output.
	redactor *redact.Redactor
}

// of returns what was last read of the run's container id; a later attempt's
// container starts afresh.
func (p *progressReads) of(key types.NamespacedName, id string) progressRead {
	p.mu.Lock()
	defer p.mu.Unlock()
	if read, ok := p.byRun[key]; ok && read.containerID == id {
		return read
	}
	return progressRead{containerID: id}
}

// hold keeps the redactor of the run's container id, made as it started.
func (p *progressReads) hold(key types.NamespacedName, id string, r *redact.Redactor) {
	read := p.of(key, id)
	read.redactor = r
	p.put(key, read)
}

// held returns the redactor held for the run's container id since it
// started, or nil.
func (p *progressReads) held(key types.NamespacedName, id string) *redact.Redactor {
	return p.of(key, id).redactor
}

func (p *progressReads) put(key types.NamespacedName, read progressRead) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byRun == nil {
		p.byRun = map[types.NamespacedName]progressRead{}
	}
	p.byRun[key] = read
}

// unpublished forgets what was published for the run: its status write was
// lost, so the next read writes the output even if it has not changed.
func (p *progressReads) unpublished(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if read, ok := p.byRun[key]; ok {
		read.published = [sha256.Size]byte{}
		p.byRun[key] = read
	}
}

func (p *progressReads) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byRun, key)
}
