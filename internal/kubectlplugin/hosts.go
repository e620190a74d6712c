package kubectlplugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func (p *plugin) hostsCommand() *cobra.Command {
	print := genericclioptions.NewPrintFlags("").WithTypeSetter(scheme)
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "List the Podman hosts: readiness, load, Podman version, secrets and images (and with -o wide, egress)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return p.hosts(cmd.Context(), print)
		},
	}
	print.AddFlags(cmd)
	cmd.Flag("output").Usage = "yaml, json, name, wide, ...: as kubectl get; empty: a table"
	return cmd
}

func (p *plugin) hosts(ctx context.Context, print *genericclioptions.PrintFlags) error {
	c, _, err := p.client()
	if err != nil {
		return err
	}
	hosts := &agentsv1alpha1.PodmanHostList{}
	if err := c.List(ctx, hosts); err != nil {
		return err
	}
	format := ptrValue(print.OutputFormat)
	if format != "" && format != "wide" {
		return p.printList(print, hosts)
	}
	if len(hosts.Items) == 0 {
		fmt.Fprintln(p.streams.ErrOut, "No Podman hosts found.")
		return nil
	}
	t := table{header: []string{"NAME", "READY", "LOAD", "PODMAN", "SECRETS", "IMAGES", "AGE"}}
	wide := format == "wide"
	if wide {
		t.header = append(t.header, "REASON", "LABELS", "EGRESS", "PERMITTED")
	}
	for _, h := range hosts.Items {
		row := []string{h.Name, hostReady(&h).status, load(&h), h.Status.PodmanVersion,
			listOrNone(h.Status.Secrets), listOrNone(h.Status.Images), age(h.CreationTimestamp)}
		if wide {
			row = append(row, hostReady(&h).reason, labels(h.Labels))
			row = append(row, hostEgress(&h)...)
		}
		t.rows = append(t.rows, row)
	}
	return t.print(p.out())
}

// printList prints a list with kubectl's printers (-o yaml, json, name,
// jsonpath, ...), with the control characters of what they print escaped
// but newlines. The items of a typed list come without their kind, which
// the printers need: set from the scheme. The name printer takes no typed
// list: it gets the items one by one, as kubectl get gives them.
func (p *plugin) printList(print *genericclioptions.PrintFlags, list runtime.Object) error {
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	for _, item := range items {
		gvks, _, err := scheme.ObjectKinds(item)
		if err != nil {
			return err
		}
		item.GetObjectKind().SetGroupVersionKind(gvks[0])
	}
	printer, err := print.ToPrinter()
	if err != nil {
		return err
	}
	return printEscaped(p.out(), func(out io.Writer) error {
		if ptrValue(print.OutputFormat) != "name" {
			return printer.PrintObj(list, out)
		}
		for _, item := range items {
			if err := printer.PrintObj(item, out); err != nil {
				return err
			}
		}
		return nil
	})
}

type readiness struct{ status, reason string }

func hostReady(h *agentsv1alpha1.PodmanHost) readiness {
	c := meta.FindStatusCondition(h.Status.Conditions, agentsv1alpha1.HostConditionReady)
	if c == nil {
		return readiness{"Unknown", "<none>"}
	}
	return readiness{string(c.Status), c.Reason}
}

// load is running/capacity, as a person reads a host's share in use; a host
// without a cap shows its running count alone.
func load(h *agentsv1alpha1.PodmanHost) string {
	if h.Status.Capacity == 0 {
		return fmt.Sprintf("%d", h.Status.Running)
	}
	return fmt.Sprintf("%d/%d", h.Status.Running, h.Status.Capacity)
}

// hostEgress is the host's egress mode and the names runs may ask for
// beyond its defaults, as it publishes them; a host that publishes none
// (from before egress) takes no run with spec.egress.
func hostEgress(h *agentsv1alpha1.PodmanHost) []string {
	if h.Status.Egress == nil {
		return []string{"<none>", "<none>"}
	}
	return []string{orNone(string(h.Status.Egress.Mode)), listOrNone(h.Status.Egress.Permitted)}
}

func listOrNone(items []string) string {
	if len(items) == 0 {
		return "<none>"
	}
	return strings.Join(items, ",")
}

func labels(l map[string]string) string {
	var kv []string
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return listOrNone(kv)
}

func ptrValue(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// table prints as kubectl get does: upper-case headers, columns aligned with
// kubectl's own tab writer; each cell with its control characters escaped.
type table struct {
	header []string
	rows   [][]string
}

func (t table) print(w io.Writer) error {
	tw := printers.GetNewTabWriter(w)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = printable(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// age is a timestamp's age as kubectl shows it (5m, 3h, 2d).
func age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}
