package v1alpha1

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/credential"
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

// validateEgressCredentials holds each credential's host, header and format
// to the parsers the hosts' proxy reads them with (internal/egress,
// internal/credential): the host a plain name that spec.egress.allow lets
// the run reach on port 443, the header one a credential may set, the
// format one the proxy can render. The CRD's CEL rules state the same (the
// fuzz targets hold them together). An empty header or format is the
// field's default: the API server has filled it in, and a typed client
// cannot tell "" from unset.
func validateEgressCredentials(run *agentsv1alpha1.AgentRun) field.ErrorList {
	if run.Spec.Egress == nil {
		return nil
	}
	allowed := allowPolicy(run.Spec.Egress.Allow)
	credsPath := field.NewPath("spec", "egress", "credentials")
	var errs field.ErrorList
	for i, c := range run.Spec.Egress.Credentials {
		p := credsPath.Index(i)
		errs = append(errs, validateCredentialHost(p.Child("host"), c.Host, allowed)...)
		if err := credential.CheckHeader(c.HeaderOrDefault()); err != nil {
			errs = append(errs, field.Invalid(p.Child("header"), c.Header, agentsv1alpha1.Rule(err.Error(), agentsv1alpha1.RuleCredentialHeader)))
		}
		if _, err := credential.ParseFormat(c.FormatOrDefault()); err != nil {
			errs = append(errs, field.Invalid(p.Child("format"), c.Format, agentsv1alpha1.Rule(err.Error(), agentsv1alpha1.RuleCredentialFormat)))
		}
	}
	return errs
}

// validateCredentialHost refuses a host that is not one name on port 443,
// or that allowed does not let the run reach there.
func validateCredentialHost(p *field.Path, host string, allowed egress.Policy) field.ErrorList {
	pattern, err := egress.ParsePattern(host)
	switch {
	case err != nil:
		return field.ErrorList{field.Invalid(p, host, agentsv1alpha1.Rule(err.Error(), agentsv1alpha1.RuleCredentialHost))}
	case pattern.Wildcard || pattern.Port != 0:
		return field.ErrorList{field.Invalid(p, host, agentsv1alpha1.Rule(
			"the host is one name without wildcard or port, as api.github.com: the credential goes to that name on port 443", agentsv1alpha1.RuleCredentialHost))}
	case !allowed.Allows(host, 443):
		return field.ErrorList{field.Invalid(p, host, agentsv1alpha1.Rule(
			"spec.egress.allow does not let the run reach "+host+" on port 443: add "+host+" to it", agentsv1alpha1.RuleCredentialHostAllowed))}
	}
	return nil
}

// allowPolicy is the policy of the entries of allow that parse; the others
// are refused by validateEgressNames.
func allowPolicy(allow []string) egress.Policy {
	var policy egress.Policy
	for _, entry := range allow {
		if p, err := egress.ParsePattern(entry); err == nil {
			policy = append(policy, p)
		}
	}
	return policy
}
