// Package agentruns is what the host's reconciler (internal/controller/host)
// and the fleet's controllers (internal/controller/fleet) both know of an
// AgentRun: the state a pass concludes and how it is written into the run's
// status, the finalizers, the queue index that tells which host's line a run
// stands in, what the manager cache keeps of runs and records, the session a
// run continues, and the heartbeat defaults. It runs in whichever process
// imports it, and imports neither side.
package agentruns
