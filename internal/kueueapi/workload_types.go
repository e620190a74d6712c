package kueueapi

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Workload condition types, as Kueue sets them.
const (
	// WorkloadQuotaReserved: Kueue reserved quota for the Workload in a
	// ClusterQueue; while False its message says why it waits.
	WorkloadQuotaReserved = "QuotaReserved"
	// WorkloadAdmitted: quota is reserved and every admission check passed;
	// the job may run.
	WorkloadAdmitted = "Admitted"
	// WorkloadEvicted: Kueue took the admission back (Preempted,
	// ClusterQueueStopped, ...); the job must stop, and then the job's
	// controller releases the quota.
	WorkloadEvicted = "Evicted"
	// WorkloadRequeued: the evicted Workload goes back to its queue.
	WorkloadRequeued = "Requeued"
	// WorkloadFinished: the job ended; Kueue releases its quota.
	WorkloadFinished = "Finished"
)

// Reasons agentrun writes on a Workload's conditions, Kueue's own words.
const (
	// ReasonPending is QuotaReserved's reason once an evicted Workload's
	// job stopped and its quota is released.
	ReasonPending = "Pending"
	// ReasonNoReservation is Admitted's reason without quota.
	ReasonNoReservation = "NoReservation"
	// ReasonSucceeded and ReasonFailed are Finished's reasons.
	ReasonSucceeded = "Succeeded"
	ReasonFailed    = "Failed"
)

// PriorityClassRef group and kind of a WorkloadPriorityClass.
const (
	PriorityGroup = "kueue.x-k8s.io"
	PriorityKind  = "WorkloadPriorityClass"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status

// Workload is what Kueue queues and admits: for agentrun, one AgentRun.
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkloadSpec   `json:"spec"`
	Status WorkloadStatus `json:"status,omitempty"`
}

// WorkloadSpec is what the Workload asks for, and where.
type WorkloadSpec struct {
	// PodSets are the sets of pods and what each pod requests: one, of one
	// "pod", for an AgentRun.
	PodSets []PodSet `json:"podSets"`
	// QueueName is the LocalQueue in the Workload's namespace.
	QueueName string `json:"queueName,omitempty"`
	// PriorityClassRef names the WorkloadPriorityClass; Priority is its
	// value, which the Workload's writer copies.
	PriorityClassRef *PriorityClassRef `json:"priorityClassRef,omitempty"`
	Priority         *int32            `json:"priority,omitempty"`
}

// PodSet is a count of identical pods.
type PodSet struct {
	Name     string                 `json:"name"`
	Template corev1.PodTemplateSpec `json:"template"`
	Count    int32                  `json:"count"`
}

// PriorityClassRef names a priority class.
type PriorityClassRef struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// WorkloadStatus is what Kueue decided.
type WorkloadStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Admission is where the quota is reserved; nil without a reservation.
	Admission *Admission `json:"admission,omitempty"`
}

// Admission names the ClusterQueue that reserved the Workload's quota.
type Admission struct {
	ClusterQueue string `json:"clusterQueue"`
}

// +kubebuilder:object:root=true

// WorkloadList is a list of Workloads.
type WorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workload `json:"items"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster

// WorkloadPriorityClass is a named priority for Workloads.
type WorkloadPriorityClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Value is the priority: higher goes first, and may preempt lower.
	Value int32 `json:"value"`
}

// +kubebuilder:object:root=true

// WorkloadPriorityClassList is a list of WorkloadPriorityClasses.
type WorkloadPriorityClassList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadPriorityClass `json:"items"`
}
