package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// AnnotationRerun is the annotation that runs a manifest again on purpose: a
// run whose manifest already ran under its name (see AgentRunRecord) is run
// again when this annotation's value differs from the value it had then (a
// date, a counter: any new value).
const AnnotationRerun = "agents.agentrun.dev/rerun"

// RunKey identifies what a run runs: its spec (without spec.cancel, which
// stops a run rather than describing it) and its AnnotationRerun value. The
// same manifest applied again gives the same key; an edited one, or one
// with a new rerun value, a new key.
func RunKey(run *AgentRun) string {
	spec := run.Spec.DeepCopy()
	spec.Cancel = false
	// encoding/json writes struct fields in order and map keys sorted, so
	// equal specs give equal bytes.
	data, err := json.Marshal(struct {
		Spec  *AgentRunSpec `json:"spec"`
		Rerun string        `json:"rerun"`
	}{spec, run.Annotations[AnnotationRerun]})
	if err != nil {
		// An AgentRunSpec is plain data: marshalling cannot fail.
		panic(err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=arrec,categories=agents
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.spec.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=`.spec.host`
// +kubebuilder:printcolumn:name="Completed",type=date,JSONPath=`.spec.completionTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// AgentRunRecord remembers how an AgentRun ended after the run itself is
// deleted, under the run's namespace and name, so that the same manifest
// applied again (a GitOps sync recreating a run its TTL deleted) does not run
// twice: it ends at once, reason AlreadyRan, with the recorded outcome. The
// fleet writes it, from the final status the run's host wrote, and deletes it
// once no run of that name and manifest has existed for its
// fleet.runRecordRetention; hosts only read it.
type AgentRunRecord struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the recorded outcome.
	// +required
	Spec AgentRunRecordSpec `json:"spec"`
}

// AgentRunRecordSpec is how one AgentRun ended.
type AgentRunRecordSpec struct {
	// RunKey identifies the manifest that ran (RunKey).
	// +required
	// +kubebuilder:validation:MaxLength=128
	RunKey string `json:"runKey"`

	// RunUID is the UID of the AgentRun that ran.
	// +required
	RunUID types.UID `json:"runUID"`

	// Host is the Podman host that ran it.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Host string `json:"host"`

	// Phase is the terminal phase it reached.
	// +required
	// +kubebuilder:validation:Enum=Succeeded;Failed;Cancelled
	Phase AgentRunPhase `json:"phase"`

	// Reason is its final reason (Completed, ExitedNonZero, ...).
	// +required
	// +kubebuilder:validation:MaxLength=128
	Reason string `json:"reason"`

	// Message is its final status.message.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`

	// ExitCode is its last container's exit code.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`

	// Attempts is how many containers it launched.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// CompletionTime is when it finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// +kubebuilder:object:root=true

// AgentRunRecordList is a list of AgentRunRecords.
type AgentRunRecordList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentRunRecord `json:"items"`
}
