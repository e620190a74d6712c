package controllers

import (
	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// TrimForCache drops from cached AgentRuns what the reconciler never reads
// back: managed fields, the output tail and the agent's result text. With
// thousands of finished runs, these are most of the manager's memory. The
// reconciler writes them with merge patches, which leave fields it did not
// change alone, so the trimmed copies do not erase them. Use it as the
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
	return run, nil
}
