package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// grantRolePrefix names the Role and RoleBinding grant writes for a secret:
// one pair a secret and namespace, whose binding lists everyone granted it.
const grantRolePrefix = "agentrun-podman-secret-"

func (p *plugin) grantCommand() *cobra.Command {
	var user, serviceAccount string
	cmd := &cobra.Command{
		Use:   "grant SECRET --to USER | --serviceaccount NAMESPACE:NAME",
		Short: "Let a user or ServiceAccount name the Podman secret SECRET in the namespace's runs (RBAC's use on podmansecrets)",
		Long: "Writes the Role " + grantRolePrefix + "SECRET, whose one rule grants use on the podmansecrets name SECRET, " +
			"and adds the subject to the RoleBinding of the same name, in the namespace -n selects " +
			"(kubectl create role refuses the verb use). See docs/tenancy.md.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			subject, err := grantSubject(user, serviceAccount)
			if err != nil {
				return err
			}
			return p.grant(cmd.Context(), args[0], subject)
		},
	}
	cmd.Flags().StringVar(&user, "to", "", "the user to grant it to")
	cmd.Flags().StringVar(&serviceAccount, "serviceaccount", "", "the ServiceAccount to grant it to, as NAMESPACE:NAME")
	return cmd
}

// grantSubject is the one subject --to or --serviceaccount names.
func grantSubject(user, serviceAccount string) (rbacv1.Subject, error) {
	switch {
	case (user == "") == (serviceAccount == ""):
		return rbacv1.Subject{}, errors.New("give one of --to USER and --serviceaccount NAMESPACE:NAME")
	case user != "":
		return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}, nil
	}
	ns, name, ok := strings.Cut(serviceAccount, ":")
	if !ok || ns == "" || name == "" {
		return rbacv1.Subject{}, fmt.Errorf("--serviceaccount %q: want NAMESPACE:NAME", serviceAccount)
	}
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}, nil
}

// grant makes sure the Role for secret exists with its rule and that its
// binding lists subject. Run again, it changes nothing.
func (p *plugin) grant(ctx context.Context, secret string, subject rbacv1.Subject) error {
	if errs := agentsv1alpha1.ValidateSecretName(field.NewPath("SECRET"), secret); len(errs) > 0 {
		return errs.ToAggregate()
	}
	c, ns, err := p.client()
	if err != nil {
		return err
	}
	meta := metav1.ObjectMeta{Name: grantRolePrefix + secret, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "agentrun"}}
	role := &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{agentsv1alpha1.GroupVersion.Group}, Resources: []string{"podmansecrets"},
		ResourceNames: []string{secret}, Verbs: []string{"use"},
	}}}
	if err := createOrUpdate(ctx, c, role, &rbacv1.Role{}, func(existing *rbacv1.Role) { existing.Rules = role.Rules }); err != nil {
		return err
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{subject},
	}
	if err := createOrUpdate(ctx, c, binding, &rbacv1.RoleBinding{}, func(existing *rbacv1.RoleBinding) {
		if !slices.Contains(existing.Subjects, subject) {
			existing.Subjects = append(existing.Subjects, subject)
		}
	}); err != nil {
		return err
	}
	fmt.Fprintf(p.out(), "%s %s may use the Podman secret %s in namespace %s (role.rbac.authorization.k8s.io/%s)\n",
		strings.ToLower(subject.Kind), subjectName(subject), secret, ns, role.Name)
	return nil
}

// createOrUpdate creates obj, or, when it exists, reads it into existing,
// applies edit and updates it.
func createOrUpdate[T client.Object](ctx context.Context, c client.Client, obj, existing T, edit func(T)) error {
	err := c.Create(ctx, obj)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
		return err
	}
	edit(existing)
	return c.Update(ctx, existing)
}

func subjectName(s rbacv1.Subject) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		return s.Namespace + ":" + s.Name
	}
	return s.Name
}
