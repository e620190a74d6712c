// Package v1alpha1 is the validating admission webhook for AgentRuns of
// agents.agentrun.dev/v1alpha1. The rules themselves are pure functions in
// api/v1alpha1, shared with the controller's launch-time checks.
package v1alpha1

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// +kubebuilder:webhook:path=/validate-agents-agentrun-dev-v1alpha1-agentrun,mutating=false,failurePolicy=fail,sideEffects=None,groups=agents.agentrun.dev,resources=agentruns,verbs=create;update,versions=v1alpha1,name=vagentrun-v1alpha1.agentrun.dev,admissionReviewVersions=v1

// AgentRunValidator is the validating admission webhook for AgentRuns. The API
// server evaluates the CRD's CEL rules before calling it, so it sees runs that
// already pass them; it applies the same rules (so that it holds the whole
// contract, which the fuzz targets check), adds the checks CEL cannot state
// and names the exact key or index at fault.
//
// The zero value applies the API's rules. Rules apply when a run is created
// only: its spec cannot change afterwards, so an update is checked for that
// alone (see ValidateUpdate).
type AgentRunValidator struct {
	// ExtraCreateRules are checked after the API's rules when a run is
	// created, for a deployment that wants stricter runs than the API
	// allows. Like the API's rules they are not checked again on update:
	// adding one must not stop existing runs from being cancelled or
	// deleted. The admission suite uses this to tighten a rule under a
	// stored run.
	ExtraCreateRules []func(*agentsv1alpha1.AgentRun) field.ErrorList

	// SubjectAccessReviews asks the API server whether the user creating a
	// run may use the Podman secrets and the host it names (validateUse).
	// SetupWithManager sets it; nil checks nothing, for the unit tests and
	// fuzz targets, which have no API server and no user.
	SubjectAccessReviews authorizationv1client.SubjectAccessReviewInterface
}

// The typed Validator is used rather than the deprecated CustomValidator, so
// the methods take *AgentRun and need no type assertion.
var _ admission.Validator[*agentsv1alpha1.AgentRun] = &AgentRunValidator{}

// SetupAgentRunWebhookWithManager registers the validating webhook, with the
// API's rules only, with a manager.
func SetupAgentRunWebhookWithManager(mgr ctrl.Manager) error {
	return (&AgentRunValidator{}).SetupWithManager(mgr)
}

// SetupWithManager registers v as the validating webhook with a manager.
func (v *AgentRunValidator) SetupWithManager(mgr ctrl.Manager) error {
	if v.SubjectAccessReviews == nil {
		c, err := authorizationv1client.NewForConfig(mgr.GetConfig())
		if err != nil {
			return err
		}
		v.SubjectAccessReviews = c.SubjectAccessReviews()
	}
	return ctrl.NewWebhookManagedBy(mgr, &agentsv1alpha1.AgentRun{}).WithValidator(v).Complete()
}

// ValidateCreate refuses a new run that breaks any rule or names a Podman
// secret or host its creator may not use, listing every violation, and
// warns about volume options that change files on the host.
func (v *AgentRunValidator) ValidateCreate(ctx context.Context, run *agentsv1alpha1.AgentRun) (admission.Warnings, error) {
	errs := agentsv1alpha1.ValidateAgentRun(run)
	if v.SubjectAccessReviews != nil {
		denied, err := validateUse(ctx, v.SubjectAccessReviews, run)
		if err != nil {
			return nil, err
		}
		errs = append(errs, denied...)
	}
	errs = append(errs, validateEgressNames(run)...)
	errs = append(errs, validateEgressCredentials(run)...)
	for _, extra := range v.ExtraCreateRules {
		errs = append(errs, extra(run)...)
	}
	return hostChangeWarnings(run), invalid(run, errs)
}

// ValidateUpdate refuses any change to the spec but setting spec.cancel, and
// any change to the Kueue queue label, and nothing else: other metadata
// changes (finalizers, labels) pass, and the create-time rules are not
// applied again, so a run stored before a rule was tightened can still be
// cancelled and deleted.
func (v *AgentRunValidator) ValidateUpdate(_ context.Context, old, run *agentsv1alpha1.AgentRun) (admission.Warnings, error) {
	return nil, invalid(run, agentsv1alpha1.ValidateAgentRunUpdate(old, run))
}

// ValidateDelete allows every deletion: the controller's finalizer stops the
// container.
func (v *AgentRunValidator) ValidateDelete(context.Context, *agentsv1alpha1.AgentRun) (admission.Warnings, error) {
	return nil, nil
}

// hostChangeWarnings names each volume option that would make Podman chown or
// relabel the host's files. Such a run is valid, but whether it runs is the
// host's decision at launch (hosts refuse these options by default), so the
// author hears about it from kubectl at once rather than from a failed run.
func hostChangeWarnings(run *agentsv1alpha1.AgentRun) admission.Warnings {
	var warnings admission.Warnings
	for i, entry := range run.Spec.Podman.Volumes {
		vol, err := agentsv1alpha1.ParseVolume(entry)
		if err != nil {
			continue // refused with its own message
		}
		for _, change := range vol.HostChanges() {
			warnings = append(warnings, fmt.Sprintf(
				"spec.podman.volumes[%d]: %s; hosts refuse it at launch unless their configuration sets host.volumes.allowRelabel", i, change))
		}
	}
	return warnings
}

func invalid(run *agentsv1alpha1.AgentRun, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(agentsv1alpha1.GroupVersion.WithKind("AgentRun").GroupKind(), run.Name, errs)
}
