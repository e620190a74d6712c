// Package kueueapi is the part of Kueue's kueue.x-k8s.io/v1beta2 API that
// agentrun reads and writes: a Workload's spec and the status fields that
// say whether Kueue admitted or evicted it, and a WorkloadPriorityClass's
// value. It is written here rather than imported from sigs.k8s.io/kueue,
// whose module requires other Kubernetes libraries than ours
// (docs/kueue.md). Fields not declared here are kept by the API server:
// agentrun writes Workloads' status with merge patches, which leave
// undeclared fields alone.
// +kubebuilder:object:generate=true
// +groupName=kueue.x-k8s.io
package kueueapi

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is Kueue's storage version since v0.15.
	GroupVersion = schema.GroupVersion{Group: "kueue.x-k8s.io", Version: "v1beta2"}

	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds Workload and WorkloadPriorityClass to a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Workload{}, &WorkloadList{}, &WorkloadPriorityClass{}, &WorkloadPriorityClassList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
