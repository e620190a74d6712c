package kubectlplugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// recentEvents is how many of a run's events describe shows, the latest.
const recentEvents = 10

func (p *plugin) describeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a run: phase, conditions, attempts, host, the agent's result, cost and turns, recent events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return p.describe(cmd.Context(), args[0])
		},
	}
}

func (p *plugin) describe(ctx context.Context, name string) error {
	c, run, err := p.getRun(ctx, name)
	if err != nil {
		return err
	}
	// Events are the hosts' and the fleet's, found by the run's UID so a
	// recreated run's are not mixed in. Reading them may be forbidden to a
	// caller who may read the run: describe then says so and goes on.
	events := &corev1.EventList{}
	eventsErr := c.List(ctx, events, client.InNamespace(run.Namespace), client.MatchingFields{"involvedObject.uid": string(run.UID)})
	return writeDescription(p.out(), run, events.Items, eventsErr)
}

// writeDescription prints the run as kubectl describe prints objects, every
// value with its control characters escaped.
func writeDescription(out io.Writer, run *agentsv1alpha1.AgentRun, events []corev1.Event, eventsErr error) error {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	field := func(name, format string, args ...any) {
		fmt.Fprintf(w, "%s:\t%s\n", name, printable(fmt.Sprintf(format, args...)))
	}
	st := &run.Status
	field("Name", "%s", run.Name)
	field("Namespace", "%s", run.Namespace)
	field("Phase", "%s", orNone(string(st.Phase)))
	field("Host", "%s", orNone(st.Host))
	field("Image", "%s", orDefault(run.Spec.Image))
	if len(run.Spec.Command) > 0 {
		field("Command", "%s", strings.Join(run.Spec.Command, " "))
	}
	field("Attempts", "%d (disrupted: %d)", st.Attempts, st.DisruptedAttempts)
	field("Container", "%s", orNone(st.ContainerName))
	if st.ExitCode != nil {
		field("Exit Code", "%d", *st.ExitCode)
	}
	field("Started", "%s", timeOrNone(st.StartTime))
	field("Completed", "%s", timeOrNone(st.CompletionTime))
	if st.Duration != "" {
		field("Duration", "%s", st.Duration)
	}
	if run.Spec.Cancel {
		field("Cancel", "requested")
	}
	field("Message", "%s", orNone(st.Message))
	describeEgress(field, run)
	if r := st.AgentResult; r != nil {
		fmt.Fprintln(w, "Agent Result:")
		field("  Session", "%s", orNone(r.SessionID))
		field("  Turns", "%d", r.NumTurns)
		field("  Cost (USD)", "%s", orNone(r.CostUSD))
		field("  Is Error", "%t", r.IsError)
		fmt.Fprintln(w, "  Result:")
		fmt.Fprintln(w, indent(printableLines(r.Result), "    "))
	}
	fmt.Fprintln(w, "Conditions:")
	if len(st.Conditions) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		fmt.Fprintln(w, "  Type\tStatus\tReason\tAge\tMessage")
		fmt.Fprintln(w, "  ----\t------\t------\t---\t-------")
		for _, c := range st.Conditions {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", printable(c.Type), printable(string(c.Status)), printable(c.Reason),
				age(c.LastTransitionTime), printable(c.Message))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return writeEvents(out, events, eventsErr)
}

// describeEgress prints the run's egress as its host applied it
// (status.egress): the mode and, through the proxy, the names it may reach,
// what it tried and how its credentials were used; before that, what the
// run asks for.
func describeEgress(field func(name, format string, args ...any), run *agentsv1alpha1.AgentRun) {
	st := run.Status.Egress
	if st == nil {
		if run.Spec.Egress != nil {
			field("Egress", "proxy, asking for %s", listOrNone(run.Spec.Egress.Allow))
			for _, c := range run.Spec.Egress.Credentials {
				field("  Credential", "%s from Podman secret %s", c.Host, c.SecretName)
			}
		}
		return
	}
	field("Egress", "%s", st.Mode)
	if st.Mode != agentsv1alpha1.EgressProxy {
		return
	}
	field("  Allow", "%s", listOrNone(st.Allow))
	field("  Connections", "%d allowed, %d refused", st.Allowed, st.Refused)
	if len(st.TopRefused) > 0 {
		refused := make([]string, len(st.TopRefused))
		for i, r := range st.TopRefused {
			refused[i] = fmt.Sprintf("%s (%d)", r.Destination, r.Count)
		}
		field("  Top Refused", "%s", strings.Join(refused, ", "))
	}
	for _, c := range st.Credentials {
		field("  Credential", "%s from Podman secret %s: added to %d request(s), %d refused (HTTP 401/403)",
			c.Host, c.SecretName, c.Requests, c.Rejected)
	}
}

// writeEvents prints the latest events last, as kubectl describe does.
func writeEvents(out io.Writer, events []corev1.Event, listErr error) error {
	switch {
	case listErr != nil:
		_, err := fmt.Fprintf(out, "Events:\t<cannot list: %s>\n", printable(oneLine(listErr.Error())))
		return err
	case len(events) == 0:
		_, err := fmt.Fprintln(out, "Events:\t<none>")
		return err
	}
	slices.SortFunc(events, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	events = events[max(0, len(events)-recentEvents):]
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Events:")
	fmt.Fprintln(w, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(w, "  ----\t------\t---\t----\t-------")
	for _, e := range events {
		from := e.ReportingController
		if from == "" {
			from = e.Source.Component
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", printable(e.Type), printable(e.Reason), age(metav1.NewTime(eventTime(e))),
			printable(from), printable(oneLine(e.Message)))
	}
	return w.Flush()
}

// eventTime is when an event last happened: events.k8s.io events (which the
// managers write) carry eventTime and, when repeated, a series; core events
// carry lastTimestamp.
func eventTime(e corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func orDefault(image string) string {
	if image == "" {
		return "<the host's default>"
	}
	return image
}

func timeOrNone(t *metav1.Time) string {
	if t == nil {
		return "<none>"
	}
	return t.UTC().Format(time.RFC1123Z)
}

func indent(s, prefix string) string {
	if s == "" {
		return prefix + "<none>"
	}
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}
