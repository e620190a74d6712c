package host

import (
	"encoding/json"
	"time"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// The run controls' arithmetic, computed from status times so the reconciler
// only has to requeue at the moment something is due.

// timeoutOf is the run's own timeout or the host's default.
func timeoutOf(run *agentsv1alpha1.AgentRun, defaultTimeout time.Duration) time.Duration {
	if run.Spec.Timeout != nil {
		return run.Spec.Timeout.Duration
	}
	return defaultTimeout
}

// untilDeadline is how long the current attempt may still run; zero or less
// means its deadline has passed. ok is false while no container has started.
func untilDeadline(run *agentsv1alpha1.AgentRun, defaultTimeout time.Duration, now time.Time) (left time.Duration, ok bool) {
	if run.Status.StartTime == nil {
		return 0, false
	}
	return run.Status.StartTime.Add(timeoutOf(run, defaultTimeout)).Sub(now), true
}

// retryDelay is the backoff before attempt failed+1: base, doubled for each
// further failure, at most maxDelay.
func retryDelay(failed int32, base, maxDelay time.Duration) time.Duration {
	d := base
	for i := int32(1); i < failed && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// cancelledBy names the client that set spec.cancel, from the object's
// managed fields (kubectl-patch, kubectl-client-side-apply, argocd, ...).
func cancelledBy(run *agentsv1alpha1.AgentRun) string {
	var who string
	var when time.Time
	for _, mf := range run.ManagedFields {
		if mf.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields) != nil {
			continue
		}
		if _, ok := fields.Spec["f:cancel"]; !ok {
			continue
		}
		if t := mf.Time; t != nil && !t.Time.Before(when) {
			who, when = mf.Manager, t.Time
		} else if who == "" {
			who = mf.Manager
		}
	}
	return who
}
