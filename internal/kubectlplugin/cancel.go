package kubectlplugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func (p *plugin) cancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel NAME",
		Short: "Cancel a run: its host stops the container and the run ends Cancelled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return p.cancel(cmd.Context(), args[0])
		},
	}
}

// cancel sets spec.cancel, the one field that may change after creation; the
// run's host does the rest.
func (p *plugin) cancel(ctx context.Context, name string) error {
	c, run, err := p.getRun(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case run.Status.Phase.IsFinished():
		fmt.Fprintf(p.out(), "agentrun/%s already finished (%s)\n", name, run.Status.Phase)
		return nil
	case run.Spec.Cancel:
		fmt.Fprintf(p.out(), "agentrun/%s already cancelled\n", name)
		return nil
	}
	patch := client.RawPatch(client.Merge.Type(), []byte(`{"spec":{"cancel":true}}`))
	if err := c.Patch(ctx, run, patch); err != nil {
		return err
	}
	fmt.Fprintf(p.out(), "agentrun/%s cancelled\n", name)
	return nil
}
