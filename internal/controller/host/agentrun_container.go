package host

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/claudecli"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/policy"
	"github.com/agentrun/agentrun/internal/runoutput"
)

// Defaults are the host's settings for what a run leaves out.
type Defaults struct {
	Image   string
	Command []string
}

// maxNamePart bounds the namespace-and-name part of a container name so
// names stay readable in `podman ps`; the UID suffix keeps them unique.
const maxNamePart = 80

// containerName is deterministic for a run and attempt, so a second create
// after a crash fails with "already exists" instead of running twice.
func containerName(run *agentsv1alpha1.AgentRun, attempt int32) string {
	part := run.Namespace + "-" + run.Name
	if len(part) > maxNamePart {
		part = part[:maxNamePart]
	}
	uid := strings.ReplaceAll(string(run.UID), "-", "")
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return fmt.Sprintf("agentrun-%s-%s-%d", strings.TrimRight(part, "-."), uid, attempt)
}

// runLabels selects every container of a run on one host.
func runLabels(run *agentsv1alpha1.AgentRun, host string) map[string]string {
	return map[string]string{
		agentsv1alpha1.LabelNamespace: run.Namespace,
		agentsv1alpha1.LabelName:      run.Name,
		agentsv1alpha1.LabelUID:       string(run.UID),
		agentsv1alpha1.LabelHost:      host,
	}
}

// containerSpec builds the container for one attempt of a run. The prompt is
// the command's last argument and AGENT_PROMPT; secrets stay names, for
// Podman to resolve.
func containerSpec(run *agentsv1alpha1.AgentRun, d Defaults, host string, attempt int32) (containers.Spec, error) {
	p := run.Spec.Podman
	spec, err := policy.Asked(run, d.Image)
	if err != nil {
		return containers.Spec{}, err
	}
	spec.Name = containerName(run, attempt)
	spec.Command = append([]string{}, run.Spec.Command...)
	spec.Workdir = run.Spec.Workdir
	spec.Env = map[string]string{}
	spec.Labels = runLabels(run, host)
	spec.Labels[agentsv1alpha1.LabelAttempt] = strconv.Itoa(int(attempt))
	if len(spec.Command) == 0 {
		options := run.Spec.Claude
		if claudecli.IsClaude(d.Command) {
			options = withBudgetCap(run)
		}
		command, err := claudecli.Command(d.Command, options)
		if err != nil {
			return containers.Spec{}, err
		}
		spec.Command = command
	}
	spec.Command = append(spec.Command, run.Spec.Prompt)

	for k, v := range p.Env {
		// What the controller sets (the prompt, the secrets) wins over env,
		// should validation ever have let such a name through.
		if _, secret := p.SecretsEnv[k]; !secret {
			spec.Env[k] = string(v)
		}
	}
	spec.Env[agentsv1alpha1.PromptEnvVar] = run.Spec.Prompt
	secretsPath := field.NewPath("spec", "podman", "secretsEnv")
	for k, v := range p.SecretsEnv {
		// Admission checks this too; the host checks again, since a run
		// admitted under older rules may still be launched.
		if errs := agentsv1alpha1.ValidateSecretName(secretsPath.Key(k), string(v)); len(errs) > 0 {
			return containers.Spec{}, errs.ToAggregate()
		}
	}
	spec.SecretEnv = runoutput.SecretEnv(run)
	return spec, nil
}

// latestAttempt picks, among a run's containers, the one of its latest
// attempt (by the attempt label).
func latestAttempt(owned []containers.Container) (c containers.Container, attempt int32, ok bool) {
	for _, o := range owned {
		n, err := strconv.ParseInt(o.Labels[agentsv1alpha1.LabelAttempt], 10, 32)
		if err == nil && int32(n) > attempt {
			c, attempt, ok = o, int32(n), true
		}
	}
	return c, attempt, ok
}

// secretUses maps each Podman secret a run needs to the fields that name
// it, sorted: its env secrets' and its credentials'.
func secretUses(run *agentsv1alpha1.AgentRun) map[string][]string {
	uses := map[string][]string{}
	env := field.NewPath("spec", "podman", "secretsEnv")
	for _, variable := range slices.Sorted(maps.Keys(run.Spec.Podman.SecretsEnv)) {
		name := string(run.Spec.Podman.SecretsEnv[variable])
		uses[name] = append(uses[name], env.Key(variable).String())
	}
	if run.Spec.Egress != nil {
		creds := field.NewPath("spec", "egress", "credentials")
		for i, c := range run.Spec.Egress.Credentials {
			uses[string(c.SecretName)] = append(uses[string(c.SecretName)], creds.Index(i).Child("secretName").String())
		}
	}
	return uses
}
