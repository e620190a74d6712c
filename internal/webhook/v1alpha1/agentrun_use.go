package v1alpha1

import (
	"context"
	"fmt"
	"maps"
	"slices"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// The virtual resources whose verb use RBAC grants per name: a Podman
// secret a run names, and the Podman host a run is pinned to. Nothing
// stores them; config/tenancy's admission policy asks the API server's
// authorizer the same questions in CEL.
const (
	useVerb               = "use"
	podmanSecretsResource = "podmansecrets"
	podmanHostsResource   = "podmanhosts"
	ruleUseSecrets        = "use Podman secrets"
	ruleUseHosts          = "use Podman hosts"
)

// useReviewer asks the API server, with SubjectAccessReviews, whether the
// user who creates a run may use what it names. It is the webhook's copy of
// config/tenancy's admission policy, for clusters that turn admission
// policies off. The right to create reviews is in config/rbac's
// fleet_role.yaml, which only the Deployment has, not in a marker: markers
// go to manager-role, which the hosts share.
type useReviewer struct {
	reviews   authorizationv1client.SubjectAccessReviewInterface
	user      authenticationv1.UserInfo
	namespace string
	// answers holds one answer a resource and name, so a secret named in
	// several fields is asked about once.
	answers map[string]bool
}

// maxSecretsByName is how many distinct Podman secrets config/tenancy's
// admission policy checks by name, which CEL's cost limits bound: a run
// naming more needs use on every name. The webhook holds runs to the same
// limit, so that the two answer alike.
const maxSecretsByName = 20

// validateUse refuses each field of run that names a Podman secret or host
// the requesting user may not use, naming the field, the user, the name
// and the Role rule that would allow it. As the admission policy does, it
// asks first whether the user may use every secret (one review), and only
// then about each name.
func validateUse(ctx context.Context, reviews authorizationv1client.SubjectAccessReviewInterface, run *agentsv1alpha1.AgentRun) (field.ErrorList, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("checking the use of Podman secrets: %w", err)
	}
	r := &useReviewer{reviews: reviews, user: req.UserInfo, namespace: req.Namespace, answers: map[string]bool{}}
	var errs field.ErrorList
	if refs := secretRefs(run); len(refs) > 0 {
		all, err := r.review(ctx, podmanSecretsResource, "")
		if err != nil {
			return nil, err
		}
		if !all {
			if errs, err = r.checkSecrets(ctx, refs); err != nil {
				return nil, err
			}
		}
	}
	if run.Spec.HostName != "" {
		e, err := r.check(ctx, field.NewPath("spec", "hostName"), podmanHostsResource, "Podman host", run.Spec.HostName, ruleUseHosts)
		if err != nil {
			return nil, err
		}
		errs = append(errs, e...)
	}
	return errs, nil
}

// checkSecrets refuses each of refs that names a secret the user may not
// use, and a run naming more distinct secrets than maxSecretsByName.
func (r *useReviewer) checkSecrets(ctx context.Context, refs []secretRef) (field.ErrorList, error) {
	var errs field.ErrorList
	distinct := map[agentsv1alpha1.SecretName]bool{}
	for _, ref := range refs {
		distinct[ref.name] = true
		e, err := r.check(ctx, ref.path, podmanSecretsResource, "Podman secret", string(ref.name), ruleUseSecrets)
		if err != nil {
			return nil, err
		}
		errs = append(errs, e...)
	}
	if len(distinct) > maxSecretsByName {
		errs = append(errs, field.Forbidden(field.NewPath("spec"), agentsv1alpha1.Rule(fmt.Sprintf(
			"user %s may not use %d distinct Podman secrets in namespace %s: a Role there with the rule {apiGroups: [%s], resources: [%s], verbs: [%s]}, without resourceNames, allows it: the admission policy checks at most %d by name",
			r.user.Username, len(distinct), r.namespace, agentsv1alpha1.GroupVersion.Group, podmanSecretsResource, useVerb, maxSecretsByName), ruleUseSecrets)))
	}
	return errs, nil
}

// secretRef is a field that names a Podman secret.
type secretRef struct {
	path *field.Path
	name agentsv1alpha1.SecretName
}

// secretRefs lists every Podman secret run names, with its field:
// spec.podman.secretsEnv's values (sorted by variable), the credentials'
// and the callback's.
func secretRefs(run *agentsv1alpha1.AgentRun) []secretRef {
	var refs []secretRef
	envPath := field.NewPath("spec", "podman", "secretsEnv")
	for _, k := range slices.Sorted(maps.Keys(run.Spec.Podman.SecretsEnv)) {
		refs = append(refs, secretRef{envPath.Key(k), run.Spec.Podman.SecretsEnv[k]})
	}
	if run.Spec.Egress != nil {
		credsPath := field.NewPath("spec", "egress", "credentials")
		for i, c := range run.Spec.Egress.Credentials {
			refs = append(refs, secretRef{credsPath.Index(i).Child("secretName"), c.SecretName})
		}
	}
	if run.Spec.Notify != nil {
		refs = append(refs, secretRef{field.NewPath("spec", "notify", "secretName"), run.Spec.Notify.SecretName})
	}
	return refs
}

// check refuses path, which names name of resource, unless the user may use
// it in the run's namespace.
func (r *useReviewer) check(ctx context.Context, path *field.Path, resource, what, name, rule string) (field.ErrorList, error) {
	key := resource + "/" + name
	allowed, asked := r.answers[key]
	if !asked {
		var err error
		if allowed, err = r.review(ctx, resource, name); err != nil {
			return nil, err
		}
		r.answers[key] = allowed
	}
	if allowed {
		return nil, nil
	}
	return field.ErrorList{field.Forbidden(path, agentsv1alpha1.Rule(fmt.Sprintf(
		"user %s may not use the %s %s in namespace %s: a Role there with the rule {apiGroups: [%s], resources: [%s], resourceNames: [%s], verbs: [%s]}, bound to the user, allows it",
		r.user.Username, what, name, r.namespace, agentsv1alpha1.GroupVersion.Group, resource, name, useVerb), rule))}, nil
}

// review asks whether the user may use name of resource in the namespace;
// every name when name is "".
func (r *useReviewer) review(ctx context.Context, resource, name string) (bool, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(r.user.Extra))
	for k, v := range r.user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: r.user.Username, Groups: r.user.Groups, UID: r.user.UID, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: r.namespace, Verb: useVerb, Group: agentsv1alpha1.GroupVersion.Group,
			Resource: resource, Name: name,
		},
	}}
	sar, err := r.reviews.Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("asking whether %s may use the %s %s: %w", r.user.Username, resource, name, err)
	}
	return sar.Status.Allowed, nil
}
