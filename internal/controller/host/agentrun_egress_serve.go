package host

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressgate"
)

// egressRuns are the proxied runs this process serves, and what it tells
// of them: their counts in status, EgressDenied events, metrics.
type egressRuns struct {
	gate     *egressgate.Gate // nil: the host runs no proxy
	host     string
	recorder events.EventRecorder
	clock    clock.Clock

	mu    sync.Mutex
	byRun map[types.NamespacedName]*proxiedRun
}

// proxiedRun is one run this process serves.
type proxiedRun struct {
	uid string
	// ref names the run in its events.
	ref *agentsv1alpha1.AgentRun
	// before are the counts status held when this process began serving
	// the run: an earlier process's, which this one's add to.
	before  agentsv1alpha1.EgressStatus
	denials denials
	// secrets are the Podman secrets of the run's credentials, by host,
	// for CredentialRejected events.
	secrets    map[string]string
	rejections rejections
}

// serve serves the run's socket with the names status.egress.allow gives
// it and its credentials, read from secrets, unless this process serves it
// already: before its container starts, and again after a restart while it
// runs. The run's CA is valid until a margin past deadline.
func (e *egressRuns) serve(ctx context.Context, run *agentsv1alpha1.AgentRun, secrets secretReader, deadline time.Time) error {
	if e.gate == nil {
		return fmt.Errorf("host %s runs no egress proxy (host.egress.socketDir is empty)", e.host)
	}
	uid := string(run.UID)
	if e.gate.Serving(uid) {
		return nil
	}
	policy, err := egress.ParsePolicy(run.Status.Egress.Allow...)
	if err != nil {
		return fmt.Errorf("status.egress.allow: %w", err)
	}
	creds, err := readCredentials(ctx, secrets, run)
	if err != nil {
		return err
	}
	p := &proxiedRun{uid: uid, before: *run.Status.Egress.DeepCopy(), secrets: map[string]string{},
		ref: &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Namespace: run.Namespace, Name: run.Name, UID: run.UID}}}
	p.ref.SetGroupVersionKind(agentsv1alpha1.GroupVersion.WithKind("AgentRun"))
	for _, c := range plannedCredentials(run) {
		p.secrets[c.Host] = string(c.SecretName)
	}
	if err := e.gate.Serve(uid, egressgate.Run{Policy: policy, Credentials: creds, Deadline: deadline,
		Observe:  func(a egress.Attempt) { e.observed(p, a) },
		Rejected: func(host string, status int) { e.rejected(p, host, status) },
	}); err != nil {
		return err
	}
	e.mu.Lock()
	if e.byRun == nil {
		e.byRun = map[types.NamespacedName]*proxiedRun{}
	}
	e.byRun[client.ObjectKeyFromObject(run)] = p
	e.mu.Unlock()
	return nil
}

// observed counts one attempt of a run's, and tells of refusals in events,
// at most one a period per run.
func (e *egressRuns) observed(p *proxiedRun, a egress.Attempt) {
	egressConnections.WithLabelValues(e.host, outcomeLabel(a.Outcome)).Inc()
	if a.Outcome == egress.Allowed {
		return
	}
	if msg, due := p.denials.refused(a.Target, e.clock.Now()); due {
		e.recorder.Eventf(p.ref, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonEgressDenied, "Connect", "%s", msg)
	}
}

// rejected tells of a credentialed host's 401 or 403 in an event, at most
// one a period per run.
func (e *egressRuns) rejected(p *proxiedRun, host string, status int) {
	if !p.rejections.due(e.clock.Now()) {
		return
	}
	e.recorder.Eventf(p.ref, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonCredentialRejected, "Request", "%s",
		rejectedMessage(p.secrets[host], host, status))
}

// count writes the counts of a run this process serves into its
// status.egress.
func (e *egressRuns) count(run *agentsv1alpha1.AgentRun) {
	if run.Status.Egress == nil || e.gate == nil {
		return
	}
	e.mu.Lock()
	p := e.byRun[client.ObjectKeyFromObject(run)]
	e.mu.Unlock()
	if p == nil || p.uid != string(run.UID) {
		return
	}
	st, ok := e.gate.Stats(p.uid)
	if !ok {
		return
	}
	out := run.Status.Egress
	out.Allowed = p.before.Allowed + st.Allowed
	out.Refused = p.before.Refused + st.RefusedNames + st.RefusedAddresses + st.OverLimit
	out.TopRefused = mergeRefused(p.before.TopRefused, st.TopRefused)
	out.Credentials = addCredentialCounts(p.before.Credentials, e.gate.CredentialStats(p.uid))
}

// mergeRefused adds a process's most refused targets to an earlier one's,
// keeping the ten most refused.
func mergeRefused(before []agentsv1alpha1.EgressRefusal, now []egress.TargetCount) []agentsv1alpha1.EgressRefusal {
	counts := map[string]int64{}
	for _, b := range before {
		counts[b.Destination] += b.Count
	}
	for _, n := range now {
		counts[n.Target] += n.Count
	}
	out := make([]agentsv1alpha1.EgressRefusal, 0, len(counts))
	for _, d := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, agentsv1alpha1.EgressRefusal{Destination: d, Count: counts[d]})
	}
	slices.SortStableFunc(out, func(a, b agentsv1alpha1.EgressRefusal) int { return cmp.Compare(b.Count, a.Count) })
	return out[:min(len(out), 10)]
}

// stop ends the serving of a run this process serves, and tells of the
// refusals no event told of yet.
func (e *egressRuns) stop(key types.NamespacedName) {
	e.mu.Lock()
	p := e.byRun[key]
	delete(e.byRun, key)
	e.mu.Unlock()
	if p == nil {
		return
	}
	if msg, due := p.denials.flush(); due {
		e.recorder.Eventf(p.ref, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonEgressDenied, "Connect", "%s", msg)
	}
	_ = e.gate.Stop(p.uid) // its directory goes with the run's last pass, below
}

// remove stops the run's serving and removes its socket directory, which an
// earlier process may have left: the run has ended or gone.
func (e *egressRuns) remove(run *agentsv1alpha1.AgentRun) error {
	e.stop(client.ObjectKeyFromObject(run))
	if e.gate == nil || run.Status.Egress == nil || run.Status.Egress.Mode != agentsv1alpha1.EgressProxy {
		return nil
	}
	return e.gate.Stop(string(run.UID))
}

// deniedEventPeriod is the least time between two EgressDenied events of a
// run: an agent that retries a refused name in a loop must not flood the
// API server.
const deniedEventPeriod = time.Minute

// maxDeniedShown bounds the targets one event names.
const maxDeniedShown = 5

// denials are a run's refusals since its last EgressDenied event.
type denials struct {
	mu      sync.Mutex
	last    time.Time
	since   int64
	targets map[string]int64
}

// refused counts a refusal of target at now and returns an event's message
// when one is due: the first refusal, then the first a period after the
// last event, telling of every refusal since.
func (d *denials) refused(target string, now time.Time) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.since++
	if d.targets == nil {
		d.targets = map[string]int64{}
	}
	if _, ok := d.targets[target]; ok || len(d.targets) < maxDeniedShown {
		d.targets[target]++
	}
	if !d.last.IsZero() && now.Sub(d.last) < deniedEventPeriod {
		return "", false
	}
	d.last = now
	return d.message(), true
}

// flush returns the message of the refusals no event told of yet.
func (d *denials) flush() (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.since == 0 {
		return "", false
	}
	return d.message(), true
}

// message tells of the refusals since the last event, and starts counting
// afresh.
func (d *denials) message() string {
	names := slices.SortedFunc(maps.Keys(d.targets), func(a, b string) int {
		return cmp.Or(cmp.Compare(d.targets[b], d.targets[a]), cmp.Compare(a, b))
	})
	shown := make([]string, len(names))
	for i, n := range names {
		shown[i] = fmt.Sprintf("%s (%d)", cmp.Or(n, "over the run's connection bound"), d.targets[n])
	}
	msg := fmt.Sprintf("the egress proxy refused %d connection(s) of this run: %s; it may reach only status.egress.allow",
		d.since, strings.Join(shown, ", "))
	d.since, d.targets = 0, nil
	return msg
}
