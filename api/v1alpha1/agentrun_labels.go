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
