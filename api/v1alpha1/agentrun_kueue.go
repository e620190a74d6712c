package v1alpha1

// Kueue (kueue.x-k8s.io) admits queued runs: a run labelled with a LocalQueue
// waits in it until Kueue admits the Workload the fleet makes for it
// (docs/kueue.md). The labels are Kueue's own, the ones its Jobs carry.
const (
	// LabelQueueName names the LocalQueue, in the run's namespace, the run
	// waits in. A run without it is not queued.
	LabelQueueName = "kueue.x-k8s.io/queue-name"
	// LabelPriorityClass names the WorkloadPriorityClass that orders the
	// run in its queue and decides what it may preempt.
	LabelPriorityClass = "kueue.x-k8s.io/priority-class"
)

// ResourceRun is the extended resource each queued run requests once, beside
// its cpu and memory: a ClusterQueue's nominal quota of it caps the runs its
// queues run at once.
const ResourceRun = "agents.agentrun.dev/run"

// ConditionAdmitted is set on queued runs only (those with LabelQueueName).
// True: Kueue admitted the run's Workload, and the fleet may place it. False:
// the run waits in its queue (reason Queued) or was evicted (reason Evicted),
// and no host takes it.
const ConditionAdmitted = "Admitted"

const (
	// ReasonQueued: the run waits in its LocalQueue for Kueue to admit its
	// Workload; the message names the queue and what Kueue says of it.
	ReasonQueued = "Queued"
	// ReasonAdmitted: Kueue admitted the run's Workload into a ClusterQueue.
	ReasonAdmitted = "Admitted"
	// ReasonEvicted: Kueue evicted the run's Workload (preempted by a run of
	// higher priority, its quota reclaimed, its queue stopped); the run's
	// container is stopped and removed, and the run waits in its queue
	// again, in an attempt that does not count against spec.backoffLimit.
	ReasonEvicted = "Evicted"
)
