// Package v1alpha1 holds the agents.agentrun.dev/v1alpha1 API: the AgentRun
// resource, its validation rules and its validating webhook.
// +kubebuilder:object:generate=true
// +groupName=agents.agentrun.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "agents.agentrun.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a scheme. It is
	// apimachinery's, not controller-runtime's (deprecated there), so that a
	// client importing the types does not import controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes adds every kind of the group to a scheme, with the meta types
// (ListOptions, ...) a client sends with them.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&AgentRun{}, &AgentRunList{},
		&AgentRunRecord{}, &AgentRunRecordList{},
		&AgentRunBudget{}, &AgentRunBudgetList{},
		&PodmanHost{}, &PodmanHostList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
