package v1alpha1

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/egress"
)

// validateEgressNames holds each entry of spec.egress.allow to the parser
// the hosts' proxy and placement read it with, so that admission accepts
// exactly what they can use; the CRD's CEL rules state the same grammar
// (the fuzz targets hold them together). The API package cannot import the
// parser, so this rule is the webhook's own.
func validateEgressNames(run *agentsv1alpha1.AgentRun) field.ErrorList {
	if run.Spec.Egress == nil {
		return nil
	}
	allowPath := field.NewPath("spec", "egress", "allow")
	var errs field.ErrorList
	for i, entry := range run.Spec.Egress.Allow {
		if len(entry) > agentsv1alpha1.MaxEgressEntryLength {
			continue // refused for its size, without repeating it
		}
		if _, err := egress.ParsePattern(entry); err != nil {
			errs = append(errs, field.Invalid(allowPath.Index(i), entry, agentsv1alpha1.Rule(err.Error(), agentsv1alpha1.RuleEgressName)))
		}
	}
	return errs
}
