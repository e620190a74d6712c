package kubectlplugin

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func (p *plugin) listCommand() *cobra.Command {
	print := genericclioptions.NewPrintFlags("").WithTypeSetter(scheme)
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:     "list [-A]",
		Aliases: []string{"ls"},
		Short:   "List the runs of a namespace, or of all (-A): phase, host, attempts, exit code, age",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return p.list(cmd.Context(), print, allNamespaces)
		},
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list the runs of every namespace")
	print.AddFlags(cmd)
	cmd.Flag("output").Usage = "yaml, json, name, wide, ...: as kubectl get; empty: a table"
	return cmd
}

func (p *plugin) list(ctx context.Context, print *genericclioptions.PrintFlags, allNamespaces bool) error {
	c, ns, err := p.client()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if !allNamespaces {
		opts = append(opts, client.InNamespace(ns))
	}
	runs := &agentsv1alpha1.AgentRunList{}
	if err := c.List(ctx, runs, opts...); err != nil {
		return err
	}
	format := ptrValue(print.OutputFormat)
	if format != "" && format != "wide" {
		return p.printList(print, runs)
	}
	if len(runs.Items) == 0 {
		where := "in namespace " + ns
		if allNamespaces {
			where = "in any namespace"
		}
		fmt.Fprintf(p.streams.ErrOut, "No AgentRuns found %s.\n", where)
		return nil
	}
	t := table{header: []string{"NAME", "PHASE", "HOST", "ATTEMPTS", "EXIT", "AGE"}}
	if allNamespaces {
		t.header = append([]string{"NAMESPACE"}, t.header...)
	}
	wide := format == "wide"
	if wide {
		t.header = append(t.header, "COST", "TURNS", "MESSAGE")
	}
	for _, r := range runs.Items {
		exit := "<none>"
		if r.Status.ExitCode != nil {
			exit = strconv.Itoa(int(*r.Status.ExitCode))
		}
		row := []string{r.Name, orNone(string(r.Status.Phase)), orNone(r.Status.Host), strconv.Itoa(int(r.Status.Attempts)), exit, age(r.CreationTimestamp)}
		if allNamespaces {
			row = append([]string{r.Namespace}, row...)
		}
		if wide {
			cost, turns := "<none>", "<none>"
			if res := r.Status.AgentResult; res != nil {
				cost, turns = orNone(res.CostUSD), strconv.Itoa(int(res.NumTurns))
			}
			row = append(row, cost, turns, orNone(r.Status.Message))
		}
		t.rows = append(t.rows, row)
	}
	return t.print(p.out())
}
