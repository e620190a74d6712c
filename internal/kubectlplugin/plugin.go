// Package kubectlplugin is `kubectl agentrun`: start, follow, describe and
// cancel AgentRuns and list the Podman hosts from the command line, with
// kubectl's own connection flags (k8s.io/cli-runtime) and the caller's own
// credentials. cmd/kubectl-agentrun only calls Main.
package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// scheme knows the core types (events) and agentrun's.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := agentsv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// ExitError ends the plugin with a run's exit code: `run --wait` and `run
// --follow` exit as the run did, like `podman run`.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("the run exited with code %d", e.Code) }

// plugin holds what every subcommand shares: the streams and kubectl's
// connection flags.
type plugin struct {
	streams genericiooptions.IOStreams
	config  *genericclioptions.ConfigFlags
}

// NewCommand is the root command, `kubectl agentrun`.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	p := &plugin{streams: streams, config: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use:   "kubectl-agentrun",
		Short: "Run AI agents in Podman containers through AgentRuns, and follow them",
		// Errors are printed once, as one line, by Main; usage only on
		// request.
		SilenceErrors: true,
		SilenceUsage:  true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl agentrun"},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	p.config.AddFlags(root.PersistentFlags())
	root.AddCommand(p.runCommand(), p.logsCommand(), p.listCommand(), p.cancelCommand(), p.describeCommand(), p.hostsCommand(), p.grantCommand())
	return root
}

// Main runs the plugin with args and returns the process's exit code: the
// run's for `run --wait|--follow`, 1 with one line on stderr for an error.
func Main(streams genericiooptions.IOStreams, args []string) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	err := cmd.Execute()
	var exit ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.Code
	default:
		fmt.Fprintln(streams.ErrOut, "error: "+printable(oneLine(err.Error())))
		return 1
	}
}

// oneLine joins a multi-line error (an aggregate, a wrapped server message)
// into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// restConfig is the caller's connection: kubeconfig, context, token, ...
func (p *plugin) restConfig() (*rest.Config, error) {
	return p.config.ToRESTConfig()
}

// client returns an API client for the caller and the namespace the flags
// and the kubeconfig select.
func (p *plugin) client() (client.Client, string, error) {
	cfg, err := p.restConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := p.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", err
	}
	return c, ns, nil
}

// getRun reads the run NAME of the selected namespace, and returns the
// client it used.
func (p *plugin) getRun(ctx context.Context, name string) (client.Client, *agentsv1alpha1.AgentRun, error) {
	c, ns, err := p.client()
	if err != nil {
		return nil, nil, err
	}
	run := &agentsv1alpha1.AgentRun{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, run); err != nil {
		return nil, nil, err
	}
	return c, run, nil
}

// out is where results go.
func (p *plugin) out() io.Writer { return p.streams.Out }
