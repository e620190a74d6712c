// Package agentrunstest builds the AgentRuns that the host's and the fleet's
// unit tests share (over fake API servers and the fake runtime). Tests only:
// product code never imports it (make lint-imports).
package agentrunstest

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// Host is the host the unit tests' reconciler runs as, and Image the default
// image the hosts report.
const (
	Host  = "host-a"
	Image = "localhost/agent:test"
)

// Run is a run pinned to the harness's host, which claims it itself (the
// fleet's placement of unpinned runs has tests of its own).
func Run(name string) *agentsv1alpha1.AgentRun {
	return &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team", UID: "0123abcd-0000-0000-0000-000000000000", Generation: 1},
		Spec: agentsv1alpha1.AgentRunSpec{
			HostName: Host,
			Prompt:   "Review the open PRs",
			Workdir:  "/workspace",
			Podman: agentsv1alpha1.PodmanSpec{
				Volumes:    []string{"/srv/repo:/workspace:ro"},
				SecretsEnv: map[string]agentsv1alpha1.SecretName{"GH_TOKEN": "github-token", "GITLAB_TOKEN": "gitlab-token"},
				Env:        map[string]agentsv1alpha1.EnvValue{"LOG_LEVEL": "debug"},
				Memory:     "512m",
				CPUs:       "1.5",
			},
		},
	}
}

// Condition is run's condition of type t, or the zero condition.
func Condition(run *agentsv1alpha1.AgentRun, t string) metav1.Condition {
	if c := meta.FindStatusCondition(run.Status.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// PlainRun is a run without secrets or volumes, so nothing but the control
// under test stands in its way.
func PlainRun(name string, edit func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	run := Run(name)
	run.Spec.Podman = agentsv1alpha1.PodmanSpec{}
	if edit != nil {
		edit(run)
	}
	return run
}
