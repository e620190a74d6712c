// Package v1alpha1 is the validating admission webhook for AgentRuns of
// agents.agentrun.dev/v1alpha1. The rules themselves are pure functions in
// api/v1alpha1, shared with the controller's launch-time checks.
package v1alpha1

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// +kubebuilder:webhook:path=/validate-agents-agentrun-dev-v1alpha1-agentrun,mutating=false,failurePolicy=fail,sideEffects=None,groups=agents.agentrun.dev,resources=agentruns,verbs=create;update,versions=v1alpha1,name=vagentrun-v1alpha1.agentrun.dev,admissionReviewVersions=v1

// AgentRunValidator is the validating admission webhook for AgentRuns. The API
// server evaluates the CRD's CEL rules before calling it, so it sees runs that
// already pass them; it adds the checks CEL cannot state and names the exact
// key or index at fault.
type AgentRunValidator struct{}

// The typed Validator is used rather than the deprecated CustomValidator, so
// the methods take *AgentRun and need no type assertion.
var _ admission.Validator[*agentsv1alpha1.AgentRun] = &AgentRunValidator{}

// SetupAgentRunWebhookWithManager registers the validating webhook with a
// manager.
func SetupAgentRunWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &agentsv1alpha1.AgentRun{}).WithValidator(&AgentRunValidator{}).Complete()
}

// ValidateCreate refuses a new run that breaks any rule, listing every
// violation.
func (v *AgentRunValidator) ValidateCreate(_ context.Context, run *agentsv1alpha1.AgentRun) (admission.Warnings, error) {
	return nil, invalid(run, agentsv1alpha1.ValidateAgentRun(run))
}

// ValidateUpdate refuses any change but setting spec.cancel.
func (v *AgentRunValidator) ValidateUpdate(_ context.Context, old, run *agentsv1alpha1.AgentRun) (admission.Warnings, error) {
	return nil, invalid(run, agentsv1alpha1.ValidateAgentRunUpdate(old, run))
}

// ValidateDelete allows every deletion: the controller's finalizer stops the
// container.
func (v *AgentRunValidator) ValidateDelete(context.Context, *agentsv1alpha1.AgentRun) (admission.Warnings, error) {
	return nil, nil
}

func invalid(run *agentsv1alpha1.AgentRun, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(agentsv1alpha1.GroupVersion.WithKind("AgentRun").GroupKind(), run.Name, errs)
}
