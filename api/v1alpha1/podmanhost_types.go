package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodmanHostSpec is what an operator sets on a host. The host's manager owns
// everything else: its labels (host.labels) and its status.
type PodmanHostSpec struct {
	// Unschedulable keeps new unpinned runs off the host, as kubectl cordon
	// does for a Node; runs already on it go on, and pinned runs still run.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// PodmanHostStatus is what a host's manager reports of its Podman host.
type PodmanHostStatus struct {
	// Conditions: Ready is True while the host renews its heartbeat and its
	// Podman API answers.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// PodmanVersion is the version of the host's Podman API service.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	PodmanVersion string `json:"podmanVersion,omitempty"`

	// Capacity is how many runs the host runs at once (its
	// host.runs.maxConcurrent); 0 means no cap.
	// +optional
	Capacity int32 `json:"capacity"`

	// Running is how many unfinished runs the host holds (running, or
	// claimed and about to start).
	// +optional
	Running int32 `json:"running"`

	// DefaultImage is the image the host runs for runs that set no
	// spec.image.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	DefaultImage string `json:"defaultImage,omitempty"`

	// Secrets are the names of the Podman secrets the host holds, never
	// their values (podman secret ls).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=253
	Secrets []string `json:"secrets,omitempty"`

	// Images are the names (repository:tag) of the images present on the
	// host; the controller never pulls, so a run's image must be one of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=512
	Images []string `json:"images,omitempty"`

	// LogEndpoint is the HTTPS URL of the host's log endpoint, which streams
	// its runs' output to callers the API server authenticates and allows
	// to get agentruns/log (kubectl agentrun logs); empty when the host
	// serves none.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	LogEndpoint string `json:"logEndpoint,omitempty"`

	// LogCABundle is the PEM certificate of the CA that signed the log
	// endpoint's serving certificate, with which clients verify the host.
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	LogCABundle []byte `json:"logCABundle,omitempty"`

	// Egress is the host's egress policy, which placement checks runs
	// against.
	// +optional
	Egress *HostEgress `json:"egress,omitempty"`

	// Policy is what the host admits of a run's container, which
	// placement checks runs against; absent on hosts from before it was
	// published, which placement does not hold runs to.
	// +optional
	Policy *HostPolicy `json:"policy,omitempty"`

	// LastHeartbeatTime is when the host last renewed its heartbeat Lease,
	// as last written here; the Lease holds the exact time.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`
}

// Condition type and reasons of a PodmanHost.
const (
	// HostConditionReady is True while the host renews its heartbeat and its
	// Podman API answers: only a Ready host is given new runs.
	HostConditionReady = "Ready"
	// ReasonHostReady: the host renews its heartbeat and Podman answers.
	ReasonHostReady = "HostReady"
	// ReasonHeartbeatLost: the host did not renew its heartbeat Lease
	// within the fleet's grace period.
	ReasonHeartbeatLost = "HeartbeatLost"
	// ReasonFencing: the host came back after it was lost and is removing
	// the containers of runs given to other hosts meanwhile; it takes no
	// run until that is done.
	ReasonFencing = "Fencing"
	// ReasonResultDiscarded: an event on a run whose container had finished
	// on a host that was lost meanwhile; the run ran again elsewhere, and
	// the host, back, removed that container. The event gives its exit
	// code: the first attempt did finish.
	ReasonResultDiscarded = "ResultDiscarded"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ph,categories=agents
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Running",type=integer,JSONPath=`.status.running`
// +kubebuilder:printcolumn:name="Capacity",type=integer,JSONPath=`.status.capacity`
// +kubebuilder:printcolumn:name="Podman",type=string,JSONPath=`.status.podmanVersion`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.lastHeartbeatTime`,priority=1
// +kubebuilder:printcolumn:name="Secrets",type=string,JSONPath=`.status.secrets`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// PodmanHost is one Podman host serving the cluster, as a Node is one
// kubelet's machine: created and kept current by the host's manager, named
// after its --host-name. Its heartbeat is the Lease of the same name in the
// managers' lease namespace.
type PodmanHost struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec PodmanHostSpec `json:"spec,omitempty"`

	// +optional
	Status PodmanHostStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PodmanHostList is a list of PodmanHosts.
type PodmanHostList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PodmanHost `json:"items"`
}

// HostEgress is what a host lets its runs reach.
type HostEgress struct {
	// Mode is the egress of runs that set neither spec.egress nor
	// spec.podman.network.
	// +optional
	Mode EgressMode `json:"mode,omitempty"`

	// Default are the names every run on the host may reach through the
	// proxy without asking.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=261
	Default []string `json:"default,omitempty"`

	// Permitted are the patterns a run's spec.egress.allow must stay
	// within on this host; empty: none beyond the defaults.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=261
	Permitted []string `json:"permitted,omitempty"`
}

// HostPolicy is what a host admits of a run's container (its
// host.containers, host.resources, host.volumes and host.sessions): the
// host fails a run it refuses, so placement sends a run only to a host
// whose policy admits it.
type HostPolicy struct {
	// AllowedImages are the image patterns runs may use ('*' matches any
	// run of characters, slashes included); empty: none.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=512
	AllowedImages []string `json:"allowedImages,omitempty"`

	// AllowedNetworks are the networks runs may name in
	// spec.podman.network.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=256
	AllowedNetworks []string `json:"allowedNetworks,omitempty"`

	// AllowedVolumePaths are the host directories volumes may come from
	// (each and what is below it); empty: no volume at all.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=4096
	AllowedVolumePaths []string `json:"allowedVolumePaths,omitempty"`

	// ForbiddenVolumePaths are the host paths no volume may be, hold or be
	// below, besides those no host allows (/proc, /sys, /dev, /run, /etc,
	// /var/lib/containers).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=4096
	ForbiddenVolumePaths []string `json:"forbiddenVolumePaths,omitempty"`

	// BlockedContainerPaths are the container paths volumes may not mount
	// over, nor anything below them.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=4096
	BlockedContainerPaths []string `json:"blockedContainerPaths,omitempty"`

	// AllowVolumeRelabel tells whether volumes may use the options U, z
	// and Z.
	// +optional
	AllowVolumeRelabel bool `json:"allowVolumeRelabel,omitempty"`

	// DefaultMemory and DefaultCPUs are the limits of runs that set none;
	// MaxMemory and MaxCPUs the most a run may ask for. Absent: no limit,
	// no maximum.
	// +optional
	DefaultMemory *resource.Quantity `json:"defaultMemory,omitempty"`
	// +optional
	MaxMemory *resource.Quantity `json:"maxMemory,omitempty"`
	// +optional
	DefaultCPUs *resource.Quantity `json:"defaultCPUs,omitempty"`
	// +optional
	MaxCPUs *resource.Quantity `json:"maxCPUs,omitempty"`

	// KeepsSessions tells whether the host keeps its runs' Claude sessions
	// (a host.sessions.dir, and Claude Code as its default command): a run
	// with spec.continueFrom needs it.
	// +optional
	KeepsSessions bool `json:"keepsSessions,omitempty"`
}
