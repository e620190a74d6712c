package agentruns

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// TrimForCache drops from cached AgentRuns what the reconciler never reads
// back: managed fields, the output tail and the agent's result text; and of a
// finished run also its prompt, container settings, message and result, and
// its conditions but Finished (an AlreadyRan run outlives its TTL) and
// Notified (the callback goes once). A finished run's passes read its host,
// phase, container, times, finalizers and TTL, and later runs its session's
// directory and ID, and the fleet the cost it reported (its AgentRunBudget
// reservation settles at it), all kept. With thousands of finished runs, these are
// most of the manager's memory (measured: 2.7 KB of heap per cached finished
// run trimmed of its output alone, 1.4 KB trimmed as here). The reconciler
// writes with merge patches, which leave fields it did not change alone, so
// the trimmed copies do not erase them; the one write to a finished run's
// status (its Notified condition) starts from the run as the API server has
// it, since a merge patch replaces a list whole. What needs the rest (a run's
// record, its callback) reads the run from the API server. Use it as the
// manager cache's transform for AgentRuns.
func TrimForCache(obj any) (any, error) {
	run, ok := obj.(*agentsv1alpha1.AgentRun)
	if !ok {
		return obj, nil
	}
	run.ManagedFields = nil
	run.Status.Output = ""
	if run.Status.AgentResult != nil {
		run.Status.AgentResult.Result = ""
	}
	if run.Status.Phase.IsFinished() {
		run.Spec.Prompt, run.Spec.Command, run.Spec.Podman = "", nil, agentsv1alpha1.PodmanSpec{}
		run.Status.Conditions = slices.DeleteFunc(run.Status.Conditions, func(c metav1.Condition) bool {
			return c.Type != agentsv1alpha1.ConditionFinished && c.Type != agentsv1alpha1.ConditionNotified
		})
		run.Status.Message = ""
		if r := run.Status.AgentResult; r != nil {
			// The session continues; the cost settles the run's
			// AgentRunBudget reservations (internal/controller/fleet).
			run.Status.AgentResult = &agentsv1alpha1.AgentResult{SessionID: r.SessionID, CostUSD: r.CostUSD}
		}
	}
	return run, nil
}

// CacheOptions are the manager cache settings a host's reconciler and the
// fleet expect: AgentRuns trimmed by TrimForCache, and run records without
// their messages. A manager that runs a host and not the fleet caches fewer
// runs (UseHostCache); one that also runs the fleet (--mode=all) keeps these: a
// manager has one cache, and the fleet needs every run (placement, records,
// budgets, TTLs of released runs).
func CacheOptions() cache.Options {
	return cacheOptions(nil, nil)
}

// cacheOptions caches the AgentRuns that runs and fields select (nil: all).
func cacheOptions(runs labels.Selector, fields fields.Selector) cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&agentsv1alpha1.AgentRun{}:       runsBy(runs, fields),
		&agentsv1alpha1.AgentRunRecord{}: {Transform: trimRecordForCache},
	}}
}

// runsBy caches the AgentRuns that runs and fields select, trimmed.
func runsBy(runs labels.Selector, fields fields.Selector) cache.ByObject {
	return cache.ByObject{Transform: TrimForCache, Label: runs, Field: fields}
}

// trimRecordForCache keeps of a cached AgentRunRecord what the collector
// reads (its run key and completion time), not its message of up to 4 KiB:
// the fleet caches every record of the retention period. Nothing writes a
// record from the cache (hosts read the record they replace from the API
// server).
func trimRecordForCache(obj any) (any, error) {
	if rec, ok := obj.(*agentsv1alpha1.AgentRunRecord); ok {
		rec.ManagedFields = nil
		rec.Spec.Message = ""
	}
	return obj, nil
}
