// Package v1alpha1 holds config.agentrun.dev/v1alpha1: the manager's
// configuration file (--config), one Configuration for every process, whose
// host and fleet sections are read by the processes that run them.
// +kubebuilder:object:generate=true
// +groupName=config.agentrun.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the apiVersion of a configuration file.
	GroupVersion = schema.GroupVersion{Group: "config.agentrun.dev", Version: "v1alpha1"}

	// SchemeBuilder registers Configuration with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &Configuration{})
		return nil
	})

	// AddToScheme adds Configuration to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
