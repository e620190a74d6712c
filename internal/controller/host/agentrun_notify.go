package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/netguard"
	"github.com/agentrun/agentrun/internal/notify"
)

// callback is the body of a completion callback: the run's identity and its
// final status, whose output is masked as in the API.
type callback struct {
	APIVersion string                        `json:"apiVersion"`
	Kind       string                        `json:"kind"`
	Namespace  string                        `json:"namespace"`
	Name       string                        `json:"name"`
	UID        types.UID                     `json:"uid"`
	Status     agentsv1alpha1.AgentRunStatus `json:"status"`
}

// awaitsCallback tells whether a finished run's callback has yet to be
// recorded, and if so queues it for the delivery workers: a receiver that is
// slow or never answers holds a delivery worker, never a reconcile worker.
// The Notified write brings the run's next pass.
func (r *AgentRunReconciler) awaitsCallback(ctx context.Context, run *agentsv1alpha1.AgentRun) bool {
	if !agentruns.CallbackUnrecorded(run) {
		return false
	}
	if r.callbacks.queue.Add(client.ObjectKeyFromObject(run)) {
		log.FromContext(ctx).V(1).Info("Queued the completion callback", "agentrun", client.ObjectKeyFromObject(run))
	}
	return true
}

// callbacks are the completion callbacks this host delivers: a queue fair
// between namespaces, served by NotifyWorkers workers while the host leads.
// A run is delivered NotifyAttempts tries at most, with a doubling pause
// between them, and its outcome recorded in the Notified condition and an
// event. The tries are counted in memory: after a restart, a run whose
// outcome was not recorded is queued again by its pass and gets its tries
// again.
type callbacks struct {
	queue *notify.Queue
	// client reaches only the allowed destinations.
	client *http.Client
	// states are the tries and outcomes of the runs being delivered.
	states sync.Map // types.NamespacedName -> *callbackState
}

// callbackState is where a run's delivery is: the tries made, and the
// condition it ended with, kept until it is written.
type callbackState struct {
	uid     types.UID
	tries   int
	outcome *metav1.Condition
}

// setupCallbacks adds the delivery workers to mgr, started while the host
// leads, as its reconciler is.
func (r *AgentRunReconciler) setupCallbacks(mgr ctrl.Manager) error {
	r.callbacks.queue = notify.NewQueue(r.Clock)
	r.callbacks.client = notify.NewClient(netguard.Destinations{Allowed: r.NotifyAllowedCIDRs}, r.NotifyTimeout)
	return mgr.Add(manager.RunnableFunc(r.deliverCallbacks))
}

// deliverCallbacks is the delivery workers' Runnable.
func (r *AgentRunReconciler) deliverCallbacks(ctx context.Context) error {
	var wg sync.WaitGroup
	for range max(r.NotifyWorkers, 1) {
		wg.Go(func() {
			for {
				key, ok := r.callbacks.queue.Next(ctx)
				if !ok {
					return
				}
				r.callBack(ctx, key)
			}
		})
	}
	wg.Wait()
	return nil
}

// callBack takes one turn of a run's delivery: a try, unless its outcome is
// known, then, if the delivery ended, the outcome's write. What is left goes
// back to the queue.
func (r *AgentRunReconciler) callBack(ctx context.Context, key types.NamespacedName) {
	logger := log.FromContext(ctx).WithValues("agentrun", key)
	// The cache's copy of a finished run lacks its output and most of its
	// conditions: the callback carries, and the Notified write keeps, the
	// run as the API server has it.
	run := &agentsv1alpha1.AgentRun{}
	if err := r.APIReader.Get(ctx, key, run); err != nil {
		if !apierrors.IsNotFound(err) {
			logger.Error(err, "Reading the AgentRun for its completion callback")
			r.callbacks.queue.Retry(ctx, key, r.NotifyRetryBackoff)
			return
		}
		run = nil
	}
	if run == nil || !agentruns.CallbackUnrecorded(run) || run.Status.Host != r.Host || !run.Status.Phase.IsFinished() {
		r.callbacks.states.Delete(key)
		r.callbacks.queue.Done(key)
		return
	}
	st := r.callbackState(key, run.UID)
	if st.outcome == nil {
		st.tries++
		code, err := r.deliver(ctx, run)
		if ctx.Err() != nil {
			return // the host stops: its next process queues the run again
		}
		if err != nil && st.tries < r.NotifyAttempts {
			wait := r.NotifyRetryBackoff << (st.tries - 1)
			logger.Info("Completion callback failed; trying again", "try", st.tries, "after", wait, "failure", err.Error(), "detail", detail(err))
			r.callbacks.queue.Retry(ctx, key, wait)
			return
		}
		st.outcome = notifiedCondition(run, code, err, st.tries)
	}
	if err := r.recordCallback(ctx, run, st.outcome); err != nil {
		logger.Info("Recording the completion callback's outcome failed; trying again", "error", err.Error())
		r.callbacks.queue.Retry(ctx, key, r.NotifyRetryBackoff)
		return
	}
	r.callbacks.states.Delete(key)
	r.callbacks.queue.Done(key)
}

// callbackState is the delivery state of run key, whose UID is uid: a run
// made anew under the same name starts afresh.
func (r *AgentRunReconciler) callbackState(key types.NamespacedName, uid types.UID) *callbackState {
	v, _ := r.callbacks.states.LoadOrStore(key, &callbackState{uid: uid})
	st := v.(*callbackState)
	if st.uid != uid {
		*st = callbackState{uid: uid}
	}
	return st
}

// notifiedCondition is the Notified condition of a delivery that ended
// after tries with the answer code or the failure err. It names the
// receiver by its origin, and a failure by its class.
func notifiedCondition(run *agentsv1alpha1.AgentRun, code int, err error, tries int) *metav1.Condition {
	origin := notify.Origin(run.Spec.Notify.URL)
	cond := &metav1.Condition{
		Type: agentsv1alpha1.ConditionNotified, Status: metav1.ConditionTrue, Reason: agentsv1alpha1.ReasonDelivered,
		Message: fmt.Sprintf("%s answered HTTP %d (try %d)", origin, code, tries), ObservedGeneration: run.Generation,
	}
	if err != nil {
		cond.Status, cond.Reason = metav1.ConditionFalse, agentsv1alpha1.ReasonNotifyFailed
		cond.Message = agentruns.TruncateUTF8(fmt.Sprintf("gave up after %d tries to call %s: %v", tries, origin, err), agentruns.MaxMessageBytes)
	}
	return cond
}

// recordCallback writes cond to run, as read from the API server, and
// tells in an event. A conflict (the fleet's recorder drops its finalizer
// as runs finish) is met by reading the run again and writing to the newer
// version at once: another turn of the queue would wait behind other
// namespaces' deliveries. An error left goes back to the queue, and the
// outcome is written on a later turn, without another delivery.
func (r *AgentRunReconciler) recordCallback(ctx context.Context, run *agentsv1alpha1.AgentRun, cond *metav1.Condition) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		base := run.DeepCopy()
		meta.SetStatusCondition(&run.Status.Conditions, *cond)
		err := agentruns.WriteStatus(ctx, r.Client, base, run)
		if apierrors.IsConflict(err) {
			if getErr := r.APIReader.Get(ctx, client.ObjectKeyFromObject(run), run); getErr != nil {
				return getErr
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	eventType := corev1.EventTypeNormal
	if cond.Status != metav1.ConditionTrue {
		eventType = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(run, nil, eventType, cond.Reason, "Notify", "%s", agentruns.TruncateUTF8(cond.Message, agentruns.MaxEventNoteBytes))
	return nil
}

// deliver makes one try with the run as read from the API server. The
// signing key is read from the host's Podman for this try only. A failure
// says what went wrong in words fit for the run's status.
func (r *AgentRunReconciler) deliver(ctx context.Context, run *agentsv1alpha1.AgentRun) (int, error) {
	n := run.Spec.Notify
	key, err := r.Runtime.SecretValue(ctx, string(n.SecretName))
	if errors.Is(err, containers.ErrNotFound) {
		return 0, fmt.Errorf("the signing key's Podman secret %s does not exist on host %s", n.SecretName, r.Host)
	}
	if err != nil {
		return 0, fmt.Errorf("reading the signing key's Podman secret %s: %w", n.SecretName, err)
	}
	body, err := json.Marshal(callback{
		APIVersion: agentsv1alpha1.GroupVersion.String(), Kind: "AgentRun",
		Namespace: run.Namespace, Name: run.Name, UID: run.UID, Status: run.Status,
	})
	if err != nil {
		return 0, err
	}
	return notify.Deliver(ctx, r.callbacks.client, n.URL, []byte(key), body, r.Clock.Now())
}

// detail is what the host's log says of a failed try beyond its class.
func detail(err error) string {
	if f, ok := errors.AsType[*notify.Failure](err); ok {
		return f.Detail()
	}
	return err.Error()
}
