package v1alpha1_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// Each refusal of a credential names the credential's own field, by its
// index, and the rule: a run with several credentials shows which one is
// wrong and how.
func TestCredentialRefusalsNameTheCredentialsField(t *testing.T) {
	good := agentsv1alpha1.EgressCredential{Host: "api.github.com", SecretName: "github-token", PlaceholderEnv: []string{"GH_TOKEN"}}
	for _, c := range []struct {
		name       string
		second     agentsv1alpha1.EgressCredential
		field, msg string
	}{
		{"format", agentsv1alpha1.EgressCredential{Host: "github.com", SecretName: "t", Format: "Basic md5({})"},
			"spec.egress.credentials[1].format", "md5(...), which is not a function"},
		{"header", agentsv1alpha1.EgressCredential{Host: "github.com", SecretName: "t", Header: "Host"},
			"spec.egress.credentials[1].header", "not one a credential may set: it is about the connection or the message's framing, not authentication (rule: credential header)"},
		{"host not allowed", agentsv1alpha1.EgressCredential{Host: "uploads.github.com", SecretName: "t"},
			"spec.egress.credentials[1].host", "add uploads.github.com to it (rule: credential host allowed)"},
		{"host with a port", agentsv1alpha1.EgressCredential{Host: "github.com:443", SecretName: "t"},
			"spec.egress.credentials[1].host", "without wildcard or port, as api.github.com: the credential goes to that name on port 443 (rule: credential host)"},
		{"IP address", agentsv1alpha1.EgressCredential{Host: "140.82.112.3", SecretName: "t"},
			"spec.egress.credentials[1].host", "IP address: give a host name (rule: credential host)"},
		{"secret name", agentsv1alpha1.EgressCredential{Host: "github.com", SecretName: "t;id"},
			"spec.egress.credentials[1].secretName", "(rule: Podman secret name)"},
		{"placeholder twice", agentsv1alpha1.EgressCredential{Host: "github.com", SecretName: "t", PlaceholderEnv: []string{"GH_TOKEN"}},
			"spec.egress.credentials[1].placeholderEnv[0]", "already a placeholder of credentials[0] (rule: one source per variable)"},
		{"placeholder also in env", agentsv1alpha1.EgressCredential{Host: "github.com", SecretName: "t", PlaceholderEnv: []string{"CI"}},
			"spec.egress.credentials[1].placeholderEnv[0]", "also set in spec.podman.env or secretsEnv: a variable has one source (rule: one source per variable)"},
		{"host twice", agentsv1alpha1.EgressCredential{Host: "api.github.com", SecretName: "t"},
			"spec.egress.credentials[1].host", "each host has one credential (rule: one credential a host)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := &agentsv1alpha1.AgentRun{Spec: agentsv1alpha1.AgentRunSpec{
				Prompt: "p",
				Podman: agentsv1alpha1.PodmanSpec{Env: map[string]agentsv1alpha1.EnvValue{"CI": "1"}},
				Egress: &agentsv1alpha1.EgressSpec{
					Allow:       []string{"api.github.com", "github.com"},
					Credentials: []agentsv1alpha1.EgressCredential{good, c.second},
				},
			}}
			causes := refusal(t, run)
			if len(causes) != 1 || causes[0].Field != c.field || !strings.Contains(causes[0].Message, c.msg) {
				t.Errorf("refused with %+v; want one refusal at %s saying %q", causes, c.field, c.msg)
			}
		})
	}
}

func refusal(t *testing.T, run *agentsv1alpha1.AgentRun) []metav1.StatusCause {
	t.Helper()
	_, err := (&webhookv1alpha1.AgentRunValidator{}).ValidateCreate(context.Background(), run)
	var status *apierrors.StatusError
	if !errors.As(err, &status) || status.ErrStatus.Details == nil {
		t.Fatalf("ValidateCreate = %v; want an Invalid error", err)
	}
	return status.ErrStatus.Details.Causes
}
