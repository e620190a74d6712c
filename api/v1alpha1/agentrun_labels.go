package v1alpha1

// Labels put on every container a host creates for a run. They find a run's
// containers again after a restart, prove a container is the run's own before
// it is stopped or removed, and let people find a run's containers on a host
// (podman ps --filter label=agents.agentrun.dev/name=NAME).
const (
	LabelNamespace = "agents.agentrun.dev/namespace"
	LabelName      = "agents.agentrun.dev/name"
	LabelUID       = "agents.agentrun.dev/uid"
	LabelHost      = "agents.agentrun.dev/host"
	LabelAttempt   = "agents.agentrun.dev/attempt"
)

// LabelReleased, set to "true" on an AgentRun, says its host has nothing
// left of it: it finished, its containers are removed, its finalizer and any
// callback are done. Hosts do not watch released runs (their caches select
// runs without it), so a host's memory does not grow with the cluster's
// finished runs; the fleet, which watches every run, deletes them when their
// ttlSecondsAfterFinished expires. Only hosts and the fleet set it.
const LabelReleased = "agents.agentrun.dev/released"
