package host

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/credential"
	"github.com/agentrun/agentrun/internal/intercept"
)

// secretReader reads a Podman secret's value for the host's own use
// (containers.Runtime's SecretValue).
type secretReader interface {
	SecretValue(ctx context.Context, name string) (string, error)
}

// readCredentials reads the values of the run's credentials, in memory, for
// its proxy: they never reach the container, the API or a log, and go with
// the proxy's serving of the run. A secret two credentials share is read
// once. Errors name the field and the secret, never a value.
func readCredentials(ctx context.Context, secrets secretReader, run *agentsv1alpha1.AgentRun) (map[string]intercept.Credential, error) {
	if !hasCredentials(run) {
		return nil, nil
	}
	out := map[string]intercept.Credential{}
	values := map[string]string{}
	for i, c := range run.Spec.Egress.Credentials {
		path := field.NewPath("spec", "egress", "credentials").Index(i)
		name := string(c.SecretName)
		// Admission checks these too; the host checks again, since what
		// it sends is its own doing.
		if errs := agentsv1alpha1.ValidateSecretName(path.Child("secretName"), name); len(errs) > 0 {
			return nil, errs.ToAggregate()
		}
		header := c.HeaderOrDefault()
		if err := credential.CheckHeader(header); err != nil {
			return nil, fmt.Errorf("%s: %w", path.Child("header"), err)
		}
		format, err := credential.ParseFormat(c.FormatOrDefault())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path.Child("format"), err)
		}
		value, ok := values[name]
		if !ok {
			if value, err = secrets.SecretValue(ctx, name); err != nil {
				return nil, fmt.Errorf("%s: reading Podman secret %s: %w", path.Child("secretName"), shellQuote(name), err)
			}
			values[name] = value
		}
		// Render's errors say what is wrong with a value without showing it.
		if _, err := format.Render(value); err != nil {
			return nil, fmt.Errorf("%s: Podman secret %s cannot go in a header: %w; update it with podman secret create --replace %s -",
				path.Child("secretName"), shellQuote(name), err, shellQuote(name))
		}
		out[c.Host] = intercept.Credential{Header: header, Format: format, Value: value}
	}
	return out, nil
}

// plannedCredentials are the run's credentials in status.egress before the
// proxy has used them.
func plannedCredentials(run *agentsv1alpha1.AgentRun) []agentsv1alpha1.EgressCredentialStatus {
	if !hasCredentials(run) {
		return nil
	}
	out := make([]agentsv1alpha1.EgressCredentialStatus, len(run.Spec.Egress.Credentials))
	for i, c := range run.Spec.Egress.Credentials {
		out[i] = agentsv1alpha1.EgressCredentialStatus{Host: c.Host, SecretName: c.SecretName}
	}
	return out
}

// addCredentialCounts is an earlier process's counts (before) with this
// process's (now, by host) added: set, not added to status as it is, so a
// pass and a progress refresh that both count write the same figures.
func addCredentialCounts(before []agentsv1alpha1.EgressCredentialStatus, now map[string]intercept.Counts) []agentsv1alpha1.EgressCredentialStatus {
	if len(before) == 0 {
		return nil
	}
	out := make([]agentsv1alpha1.EgressCredentialStatus, len(before))
	for i, b := range before {
		n := now[b.Host]
		out[i] = b
		out[i].Requests += n.Requests
		out[i].Rejected += n.Rejected
	}
	return out
}

// rejectedEventPeriod is the least time between two CredentialRejected
// events of a run: an agent retrying with an expired token must not flood
// the API server; status.egress.credentials counts every rejection.
const rejectedEventPeriod = time.Minute

// rejections are when a run's last CredentialRejected event was.
type rejections struct {
	mu   sync.Mutex
	last time.Time
}

// due tells whether an event is due at now, and if so counts it as made.
func (r *rejections) due(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < rejectedEventPeriod {
		return false
	}
	r.last = now
	return true
}

// rejectedMessage says which token a host refused and how to replace it.
func rejectedMessage(secret, host string, status int) string {
	return fmt.Sprintf("the token in Podman secret %s was refused by %s (HTTP %d): it may be expired or revoked; "+
		"update it with podman secret create --replace %s -", secret, host, status, shellQuote(secret))
}
