package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
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

// notifyTimeout bounds one delivery.
const notifyTimeout = 10 * time.Second

// notifyFinished delivers a finished run's callback (spec.notify) once,
// retrying with a doubling pause up to NotifyAttempts tries, and records how
// it went in the Notified condition and an event. The tries are counted in
// memory: after a restart a run whose delivery had not ended gets its tries
// again.
func (r *AgentRunReconciler) notifyFinished(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	if run.Spec.Notify == nil || meta.FindStatusCondition(run.Status.Conditions, agentsv1alpha1.ConditionNotified) != nil {
		return ctrl.Result{}, nil
	}
	// The cache's copy of a finished run lacks its output and most of its
	// conditions: the callback carries, and the Notified write keeps, the
	// run as the API server has it.
	full := &agentsv1alpha1.AgentRun{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(run), full); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	run = full
	tries := 1
	if n, ok := r.notifyTries.Load(run.UID); ok {
		tries += n.(int)
	}
	code, err := r.deliver(ctx, run)
	if err != nil && tries < r.NotifyAttempts {
		r.notifyTries.Store(run.UID, tries)
		wait := r.NotifyRetryBackoff << (tries - 1)
		log.FromContext(ctx).Info("Completion callback failed; trying again", "agentrun", client.ObjectKeyFromObject(run),
			"try", tries, "after", wait, "error", err.Error())
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.notifyTries.Delete(run.UID)

	base := run.DeepCopy()
	cond := metav1.Condition{
		Type: agentsv1alpha1.ConditionNotified, Status: metav1.ConditionTrue, Reason: agentsv1alpha1.ReasonDelivered,
		Message: fmt.Sprintf("%s answered HTTP %d (try %d)", run.Spec.Notify.URL, code, tries), ObservedGeneration: run.Generation,
	}
	eventType := corev1.EventTypeNormal
	if err != nil {
		cond.Status, cond.Reason = metav1.ConditionFalse, agentsv1alpha1.ReasonNotifyFailed
		cond.Message = truncateUTF8(fmt.Sprintf("gave up after %d tries to call %s: %v", tries, run.Spec.Notify.URL, err), maxMessageBytes)
		eventType = corev1.EventTypeWarning
	}
	meta.SetStatusCondition(&run.Status.Conditions, cond)
	if err := writeStatus(ctx, r.Client, base, run); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{}, nil // the newer version comes with its own pass
		}
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(run, nil, eventType, cond.Reason, "Notify", "%s", truncateUTF8(cond.Message, maxEventNoteBytes))
	return ctrl.Result{}, nil
}

// deliver makes one try with the run as read from the API server. The
// signing key is read from the host's Podman for this try only.
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
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	return notify.Deliver(ctx, notify.Client, n.URL, []byte(key), body, r.Clock.Now())
}
