package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/logserver"
)

// errContainerGone: the host no longer has the container; its output's tail
// is in the run's status.
var errContainerGone = errors.New("the container is gone")

// errNoEndpoint: the run's host serves no live output (its configuration
// file sets no host.logs.bindAddress).
var errNoEndpoint = errors.New("its host serves no live output (its manager runs without --logs-bind-address)")

type logsOptions struct {
	follow bool
	tail   int
	since  time.Duration
}

func (p *plugin) logsCommand() *cobra.Command {
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs NAME [-f] [--tail N]",
		Short: "Print a run's output, live from its host; after its container is gone, the tail kept in its status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return p.logs(cmd.Context(), o, args[0])
		},
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "stream the output until the container exits")
	cmd.Flags().IntVar(&o.tail, "tail", -1, "lines of recent output to show; -1: all")
	cmd.Flags().DurationVar(&o.since, "since", 0, "only output newer than this (5s, 2m, 3h)")
	return cmd
}

func (p *plugin) logs(ctx context.Context, o *logsOptions, name string) error {
	c, run, err := p.getRun(ctx, name)
	if err != nil {
		return err
	}
	if run.Status.ContainerID == "" && o.follow && !run.Status.Phase.IsFinished() {
		// Started but not yet running: wait for its container, as kubectl
		// logs -f waits for a pod's.
		if run, err = waitForContainer(ctx, c, client.ObjectKeyFromObject(run), ""); err != nil {
			return err
		}
	}
	if run.Status.ContainerID == "" {
		if run.Status.Phase.IsFinished() {
			return p.storedOutput(run, "it never started a container")
		}
		return fmt.Errorf("agentrun/%s has no container yet (phase %s): use -f to wait for it", name, orNone(string(run.Status.Phase)))
	}
	err = p.streamFromHost(ctx, c, run, logserver.Request{Namespace: run.Namespace, Name: name, Follow: o.follow, TailLines: o.tail, Since: o.since})
	switch {
	case errors.Is(err, errContainerGone):
		if err := c.Get(ctx, client.ObjectKeyFromObject(run), run); err != nil {
			return err
		}
		return p.storedOutput(run, "its container is gone")
	case errors.Is(err, errNoEndpoint) && run.Status.Phase.IsFinished():
		return p.storedOutput(run, err.Error())
	case errors.Is(err, errNoEndpoint):
		return fmt.Errorf("agentrun/%s: %w; its status keeps the end of its output once it finishes", name, err)
	}
	return err
}

// streamFromHost copies the run's live output to stdout. It asks the API
// server (the fleet's aggregated API, logs.agentrun.dev), never the host:
// the caller's credentials go to the API server only, and the fleet fetches
// the stream from the host with its own identity.
func (p *plugin) streamFromHost(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun, r logserver.Request) error {
	host := &agentsv1alpha1.PodmanHost{}
	if err := c.Get(ctx, client.ObjectKey{Name: run.Status.Host}, host); err != nil {
		return fmt.Errorf("reading whether host %s serves logs: %w", run.Status.Host, err)
	}
	if host.Status.LogEndpoint == "" {
		return errNoEndpoint
	}
	caller, err := p.restConfig()
	if err != nil {
		return err
	}
	stream, err := logapi.Stream(ctx, caller, r)
	switch {
	case apierrors.IsGone(err):
		return errContainerGone
	case err != nil:
		return fmt.Errorf("agentrun/%s on host %s: %w", r.Name, host.Name, err)
	}
	defer stream.Close()
	_, err = io.Copy(p.out(), stream)
	return err
}

// storedOutput prints the tail of the output the run's status keeps, after
// a note on stderr saying why it is not the live stream.
func (p *plugin) storedOutput(run *agentsv1alpha1.AgentRun, why string) error {
	if run.Status.Output == "" {
		fmt.Fprintf(p.streams.ErrOut, "note: agentrun/%s: %s, and its status holds no output\n", run.Name, why)
		return nil
	}
	fmt.Fprintf(p.streams.ErrOut, "note: agentrun/%s: %s; this is the end of its output kept in its status (status.output, %d bytes)\n", run.Name, why, len(run.Status.Output))
	_, err := io.WriteString(p.out(), run.Status.Output)
	return err
}

// waitForContainer polls the run until it has a container other than
// previous, or finishes.
func waitForContainer(ctx context.Context, c client.Client, key client.ObjectKey, previous string) (*agentsv1alpha1.AgentRun, error) {
	run := &agentsv1alpha1.AgentRun{}
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, run); err != nil {
			return false, err
		}
		id := run.Status.ContainerID
		return id != "" && id != previous || run.Status.Phase.IsFinished(), nil
	})
	return run, err
}

// follow streams each of the run's containers (a retry is a new one) until
// the run finishes, then exits with its exit code. A container gone before
// it could be streamed (a run that ends in a second), or a host that serves
// no live output, is shown from the output its status keeps.
func (p *plugin) follow(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun) error {
	key := client.ObjectKeyFromObject(run)
	streamed := ""
	for {
		run, err := waitForContainer(ctx, c, key, streamed)
		if err != nil {
			return err
		}
		id := run.Status.ContainerID
		if id == "" || id == streamed {
			return exitStatus(run)
		}
		err = p.streamFromHost(ctx, c, run, logserver.Request{Namespace: key.Namespace, Name: key.Name, Follow: true, TailLines: -1})
		if errors.Is(err, errContainerGone) || errors.Is(err, errNoEndpoint) {
			why := "its container was gone before it could be streamed"
			if errors.Is(err, errNoEndpoint) {
				why = err.Error()
			}
			if run, err = waitFinished(ctx, c, key); err != nil {
				return err
			}
			if err := p.storedOutput(run, why); err != nil {
				return err
			}
			return exitStatus(run)
		}
		if err != nil {
			return err
		}
		streamed = id
	}
}
