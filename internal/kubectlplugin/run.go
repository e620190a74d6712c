package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// pollInterval is how often a waiting command reads the run again: a person
// waits for it, and one GET a second is nothing to the API server.
const pollInterval = time.Second

// runOptions are `kubectl agentrun run`'s flags.
type runOptions struct {
	prompt, image, workdir, host string
	volumes, secretEnv           []string
	timeout                      time.Duration
	wait, follow                 bool
	dryRun                       string
	print                        *genericclioptions.PrintFlags
}

func (p *plugin) runCommand() *cobra.Command {
	o := &runOptions{print: genericclioptions.NewPrintFlags("created").WithTypeSetter(scheme)}
	cmd := &cobra.Command{
		Use:   "run NAME --prompt TEXT [flags] [-- COMMAND [ARGS...]]",
		Short: "Create an AgentRun, as kubectl create job does a Job; the command after -- replaces the host's default",
		Example: `  kubectl agentrun run hello --prompt 'Say hello' --follow
  kubectl agentrun run review --prompt 'Review the open PRs' --workdir /workspace \
      --volume /home/user/myrepo:/workspace --secret-env GH_TOKEN=github-token --wait
  kubectl agentrun run review --prompt 'Review' --dry-run=client -o yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash == 0 {
				return errors.New("NAME comes before --: kubectl agentrun run NAME --prompt TEXT -- COMMAND")
			} else if dash < 0 && len(args) > 1 || dash > 1 {
				return fmt.Errorf("one NAME, then the command after --; got %q", args)
			}
			return p.run(cmd.Context(), o, args[0], args[1:])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.prompt, "prompt", "", "the task (required)")
	f.StringVar(&o.image, "image", "", "image to run (empty: the host's default)")
	f.StringVar(&o.workdir, "workdir", "", "the container's working directory")
	f.StringVar(&o.host, "host", "", "pin the run to this Podman host (empty: the fleet places it)")
	f.StringArrayVar(&o.volumes, "volume", nil, "bind mount SRC:DST[:OPTS] (repeatable)")
	f.StringArrayVar(&o.secretEnv, "secret-env", nil, "VAR=SECRET: the Podman secret SECRET as the variable VAR (repeatable)")
	f.DurationVar(&o.timeout, "timeout", 0, "how long the run may take (0: the host's default)")
	f.BoolVar(&o.wait, "wait", false, "wait until the run finishes, print how it ended and exit with its exit code")
	f.BoolVar(&o.follow, "follow", false, "stream the run's output live until it finishes, and exit with its exit code")
	f.StringVar(&o.dryRun, "dry-run", "none", `"none", "client" (print the manifest, create nothing) or "server" (the API server validates, nothing is stored)`)
	f.Lookup("dry-run").NoOptDefVal = "client"
	o.print.AddFlags(cmd)
	_ = cmd.MarkFlagRequired("prompt")
	return cmd
}

// agentRun is the AgentRun the flags describe.
func (o *runOptions) agentRun(name, namespace string, command []string) (*agentsv1alpha1.AgentRun, error) {
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: agentsv1alpha1.AgentRunSpec{
			Prompt:   o.prompt,
			Workdir:  o.workdir,
			Image:    o.image,
			Command:  command,
			HostName: o.host,
			Podman:   agentsv1alpha1.PodmanSpec{Volumes: o.volumes},
		},
	}
	if o.timeout > 0 {
		run.Spec.Timeout = &metav1.Duration{Duration: o.timeout}
	}
	for _, kv := range o.secretEnv {
		name, secret, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--secret-env %q: want VAR=SECRET", kv)
		}
		if run.Spec.Podman.SecretsEnv == nil {
			run.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{}
		}
		run.Spec.Podman.SecretsEnv[name] = agentsv1alpha1.SecretName(secret)
	}
	// The rules the webhook applies, here too, so that --dry-run=client
	// refuses what the cluster would.
	if errs := agentsv1alpha1.ValidateAgentRun(run); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return run, nil
}

func (p *plugin) run(ctx context.Context, o *runOptions, name string, command []string) error {
	switch o.dryRun {
	case "none", "client", "server":
	default:
		return fmt.Errorf(`--dry-run must be "none", "client" or "server", not %q`, o.dryRun)
	}
	if o.wait && o.follow {
		return errors.New("--wait or --follow: not both")
	}
	if o.dryRun != "none" && (o.wait || o.follow) {
		return errors.New("--dry-run creates no run to wait for or follow")
	}
	c, ns, err := p.client()
	if err != nil {
		return err
	}
	run, err := o.agentRun(name, ns, command)
	if err != nil {
		return err
	}
	switch o.dryRun {
	case "client":
		if err := o.print.Complete("%s (dry run)"); err != nil {
			return err
		}
	case "server":
		if err := o.print.Complete("%s (server dry run)"); err != nil {
			return err
		}
		if err := c.Create(ctx, run, client.DryRunAll); err != nil {
			return err
		}
	default:
		if err := c.Create(ctx, run); err != nil {
			return err
		}
	}
	printer, err := o.print.ToPrinter()
	if err != nil {
		return err
	}
	// While following, the run's output alone goes to stdout.
	out := p.out()
	if o.follow {
		out = p.streams.ErrOut
	}
	if err := printer.PrintObj(run, out); err != nil {
		return err
	}
	switch {
	case o.wait:
		return p.waitAndReport(ctx, c, client.ObjectKeyFromObject(run))
	case o.follow:
		return p.follow(ctx, c, run)
	}
	return nil
}

// waitAndReport waits for the run to finish, prints how it ended and exits
// with its exit code.
func (p *plugin) waitAndReport(ctx context.Context, c client.Client, key client.ObjectKey) error {
	run, err := waitFinished(ctx, c, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(p.streams.ErrOut, "agentrun/%s %s: %s\n", run.Name, run.Status.Phase, run.Status.Message)
	return exitStatus(run)
}

// waitFinished polls the run until it reaches a terminal phase.
func waitFinished(ctx context.Context, c client.Client, key client.ObjectKey) (*agentsv1alpha1.AgentRun, error) {
	run := &agentsv1alpha1.AgentRun{}
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, run); err != nil {
			return false, err
		}
		return run.Status.Phase.IsFinished(), nil
	})
	return run, err
}

// exitStatus is nil for a run that succeeded, else its exit code (1 when it
// ended without one: cancelled, never started, or an agent error after exit
// 0).
func exitStatus(run *agentsv1alpha1.AgentRun) error {
	switch {
	case run.Status.Phase == agentsv1alpha1.PhaseSucceeded:
		return nil
	case run.Status.ExitCode != nil && *run.Status.ExitCode != 0:
		return ExitError{Code: int(*run.Status.ExitCode)}
	default:
		return ExitError{Code: 1}
	}
}
