package agentruns

// Finalizer keeps an AgentRun whose container was created until its host has
// stopped and removed the run's containers.
const Finalizer = "agents.agentrun.dev/container"

// RecordFinalizer is the fleet's finalizer on a run a host launched: the
// host adds it with its own (Finalizer) before the first container, and only
// the fleet removes it, once it has recorded how the run ended. So a run
// cannot go before its record exists, whoever deletes it, and while the
// fleet is down a deleted run waits rather than going unrecorded. Hosts may
// add it but not remove it (config/host's policy agentrun-host-runs).
const RecordFinalizer = "agents.agentrun.dev/record"
