// Package hostagent is a Podman host's presence in the cluster, as the
// kubelet's node status and lease are a Node's: it keeps the host's
// PodmanHost (labels, Podman version, capacity, load, secret and image names,
// egress and admission policy) and its heartbeat Lease current, and, after
// the host was cut off long enough to be declared lost, fences it: it removes the containers of runs
// the fleet gave to other hosts meanwhile before the host takes any run.
package hostagent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
)

// statusReportPeriod is how often the PodmanHost's status is written when
// nothing in it changed, to move its lastHeartbeatTime on (the kubelet's
// node status report frequency plays the same part). The Lease carries the
// heartbeat that counts, every HeartbeatPeriod.
const statusReportPeriod = time.Minute

// Agent keeps one host's PodmanHost and Lease current. It is a manager
// Runnable that needs leader election: of several managers of one host, only
// the one that runs its runs speaks for it (the PodmanHost, fencing). Its
// Heartbeat is a Runnable of its own that does not wait for the lease.
type Agent struct {
	// Client writes the PodmanHost and the Lease; Reader reads them, and the
	// runs fencing checks, from the API server itself (never a cache that
	// may be stale after the host was cut off).
	Client   client.Client
	Reader   client.Reader
	Recorder events.EventRecorder
	Runtime  containers.Runtime

	Host           string
	Labels         map[string]string
	LeaseNamespace string
	Capacity       int
	DefaultImage   string
	// Egress is the host's egress policy (host.egress: mode, default
	// names, ceiling), published for placement, which sends a run with
	// spec.egress only where the ceiling covers it; nil publishes none, as
	// a host from before egress did.
	Egress *agentsv1alpha1.HostEgress
	// Policy is what the host admits of a run's container, published for
	// placement, which sends a run only where it would be admitted; nil
	// publishes none.
	Policy *agentsv1alpha1.HostPolicy
	// LogEndpoint and LogCABundle are where the host serves its runs'
	// output and the CA of that endpoint's certificate; empty: nowhere.
	LogEndpoint string
	LogCABundle []byte
	// HeartbeatPeriod is how often the Lease is renewed; GracePeriod how
	// long the fleet waits for a renewal before it declares the host lost.
	HeartbeatPeriod, GracePeriod time.Duration
	// StopGracePeriod is how long a fenced container has after SIGTERM.
	StopGracePeriod time.Duration
	// Running counts the unfinished runs the host holds.
	Running func(ctx context.Context) (int, error)
	// Released is told of each run, no longer this host's, whose container
	// fencing removed.
	Released func(key types.NamespacedName)
	Clock    clock.Clock

	// wake asks the status loop for a pass (the renewal loop saw a gap).
	wake     chan struct{}
	wakeOnce sync.Once
	lease    *coordinationv1.Lease      // the renewal loop's
	host     *agentsv1alpha1.PodmanHost // the status loop's

	mu sync.Mutex
	// lastRenewal is when the Lease was last renewed; fenced tells whether
	// the host fenced since it started or may last have been declared lost;
	// podmanErr is the status loop's last word on Podman.
	lastRenewal time.Time
	fenced      bool
	podmanErr   error
	// losses counts the times fenced was cleared, so that a fencing pass
	// that began before the latest loss does not count as fencing it.
	losses int
}

// errNotFenced is why a host that has not fenced yet launches nothing.
var errNotFenced = errors.New("the host has not yet checked for containers of runs given to other hosts while it was away (at start, or after being cut off)")

// Admission returns nil when the host may launch runs, and otherwise why not:
// before its first fencing pass and while it may have been declared lost, it
// takes nothing; when Podman does not answer, that is the reason.
func (a *Agent) Admission() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.fenced:
		return nil
	case a.podmanErr != nil:
		return a.podmanErr
	}
	return errNotFenced
}

// IsNotFenced tells whether an Admission error is the fence's.
func IsNotFenced(err error) bool { return errors.Is(err, errNotFenced) }

// Start renews the heartbeat Lease every HeartbeatPeriod, in a loop of its
// own that calls only the API server (a slow Podman must not stop the
// heartbeat), and refreshes the PodmanHost at the same pace and as soon as
// Podman reports an image change. Secrets are listed at each pass only:
// neither Podman 4.3.1 nor 5.4.2 sends secret events (measured), so a new
// secret shows within one HeartbeatPeriod.
func (a *Agent) Start(ctx context.Context) error {
	a.init()
	changes := a.followInventory(ctx)
	for {
		a.report(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-a.Clock.After(a.HeartbeatPeriod):
		case <-changes:
		case <-a.wake:
		}
	}
}

// init sets what both Runnables share, whichever starts first.
func (a *Agent) init() {
	a.wakeOnce.Do(func() {
		if a.Clock == nil {
			a.Clock = clock.RealClock{}
		}
		a.wake = make(chan struct{}, 1)
	})
}

// Heartbeat is the Runnable that renews the host's Lease every
// HeartbeatPeriod, in a loop that calls only the API server (a slow Podman
// must not stop the heartbeat). It does not wait for the leader lease: a
// manager that restarts after a crash waits up to the lease's duration before
// it leads, and its heartbeat, which says the host is alive, would stop for
// as long, taking a host that is back for a lost one. Launching, fencing and
// the PodmanHost wait for the lease; a standby manager of the same host
// renews the same Lease.
func (a *Agent) Heartbeat() manager.Runnable { return heartbeat{a} }

type heartbeat struct{ a *Agent }

func (h heartbeat) Start(ctx context.Context) error {
	h.a.init()
	for {
		h.a.renewOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-h.a.Clock.After(h.a.HeartbeatPeriod):
		}
	}
}

func (heartbeat) NeedLeaderElection() bool { return false }

// renewOnce renews the Lease. A host whose last renewal is older than the
// grace period may have been declared lost, its runs given to other hosts:
// from then on it launches nothing until it has fenced.
func (a *Agent) renewOnce(ctx context.Context) {
	now := a.Clock.Now()
	err := a.renew(ctx, now)
	if err != nil {
		log.FromContext(ctx).Error(err, "Renewing the heartbeat Lease", "host", a.Host)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.lastRenewal.IsZero() && now.Sub(a.lastRenewal) > a.GracePeriod && a.fenced {
		log.FromContext(ctx).Info("The heartbeat was not renewed within the grace period: the fleet may have given this host's runs to others; "+
			"launching nothing until fenced", "host", a.Host, "lastRenewal", a.lastRenewal)
		a.fenced = false
		a.losses++
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	if err == nil {
		a.lastRenewal = now
	}
}

// followInventory turns Podman's image events into a signal, reconnecting
// when the stream breaks; a reconnect counts as a change (events may have
// been missed).
func (a *Agent) followInventory(ctx context.Context) <-chan struct{} {
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	go func() {
		for ctx.Err() == nil {
			events, errs := a.Runtime.InventoryChanges(ctx)
			for range events {
				signal()
			}
			if err := <-errs; err != nil {
				log.FromContext(ctx).V(1).Info("Podman's image event stream broke; reconnecting", "host", a.Host, "error", err.Error())
			}
			select {
			case <-ctx.Done():
			case <-a.Clock.After(a.HeartbeatPeriod):
				signal()
			}
		}
	}()
	return changed
}

// report fences the host when it must and can (its heartbeat is current and
// Podman answers), and writes the PodmanHost's status.
func (a *Agent) report(ctx context.Context) {
	logger := log.FromContext(ctx).WithValues("host", a.Host)
	host, err := a.podmanHost(ctx)
	if err != nil {
		logger.Error(err, "Reading the PodmanHost")
		return
	}
	now := a.Clock.Now()
	a.mu.Lock()
	if c := meta.FindStatusCondition(host.Status.Conditions, agentsv1alpha1.HostConditionReady); c != nil &&
		c.Reason == agentsv1alpha1.ReasonHeartbeatLost && a.fenced {
		logger.Info("The fleet declared this host lost; fencing before launching anything")
		a.fenced = false
		a.losses++
	}
	fenced, losses, current := a.fenced, a.losses, !a.lastRenewal.IsZero() && now.Sub(a.lastRenewal) <= a.GracePeriod
	a.mu.Unlock()

	ready := metav1.Condition{Type: agentsv1alpha1.HostConditionReady, Status: metav1.ConditionTrue,
		Reason: agentsv1alpha1.ReasonHostReady, Message: "the host renews its heartbeat and its Podman API answers"}
	inv, invErr := a.Runtime.Inventory(ctx)
	switch {
	case invErr != nil:
		ready.Status, ready.Reason = metav1.ConditionFalse, agentsv1alpha1.ReasonPodmanUnavailable
		ready.Message = "the host's Podman API does not answer: " + invErr.Error()
	case !fenced && !current:
		ready.Status, ready.Reason = metav1.ConditionFalse, agentsv1alpha1.ReasonFencing
		ready.Message = "waiting for the heartbeat to be renewed, to remove the containers of runs given to other hosts meanwhile"
	case !fenced:
		if err := a.fence(ctx); err != nil {
			ready.Status, ready.Reason = metav1.ConditionFalse, agentsv1alpha1.ReasonFencing
			ready.Message = "removing the containers of runs given to other hosts while this host was away: " + err.Error()
			break
		}
		fenced = true
	}
	a.mu.Lock()
	a.podmanErr = invErr
	if fenced && a.losses == losses {
		a.fenced = true
	}
	a.mu.Unlock()
	if err := a.writeStatus(ctx, host, ready, inv, invErr == nil, now); err != nil {
		logger.Error(err, "Writing the PodmanHost status")
	}
}

// renew creates or renews the host's Lease, as the kubelet renews its node's
// Lease in kube-node-lease.
func (a *Agent) renew(ctx context.Context, now time.Time) error {
	if a.lease == nil {
		lease := &coordinationv1.Lease{}
		err := a.Reader.Get(ctx, types.NamespacedName{Namespace: a.LeaseNamespace, Name: a.Host}, lease)
		switch {
		case apierrors.IsNotFound(err):
			lease = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Namespace: a.LeaseNamespace, Name: a.Host},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(a.Host),
					LeaseDurationSeconds: ptr.To(int32(a.GracePeriod / time.Second)),
					RenewTime:            &metav1.MicroTime{Time: now},
				},
			}
			if err := a.Client.Create(ctx, lease); err != nil {
				return fmt.Errorf("creating Lease %s/%s: %w", a.LeaseNamespace, a.Host, err)
			}
			a.lease = lease
			return nil
		case err != nil:
			return fmt.Errorf("reading Lease %s/%s: %w", a.LeaseNamespace, a.Host, err)
		}
		a.lease = lease
	}
	lease := a.lease.DeepCopy()
	lease.Spec.HolderIdentity = ptr.To(a.Host)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(a.GracePeriod / time.Second))
	lease.Spec.RenewTime = &metav1.MicroTime{Time: now}
	if err := a.Client.Update(ctx, lease); err != nil {
		a.lease = nil // read it afresh next time
		if apierrors.IsConflict(err) {
			// Another manager of this host (a standby) renewed it since;
			// either way this one reached the API server, and the host is
			// alive.
			return nil
		}
		return fmt.Errorf("renewing Lease %s/%s: %w", a.LeaseNamespace, a.Host, err)
	}
	a.lease = lease
	return nil
}

// podmanHost reads the host's PodmanHost afresh (the fleet may have declared
// the host lost in it), creating it, and putting the host's labels on it, as
// needed.
func (a *Agent) podmanHost(ctx context.Context) (*agentsv1alpha1.PodmanHost, error) {
	host := &agentsv1alpha1.PodmanHost{}
	err := a.Reader.Get(ctx, types.NamespacedName{Name: a.Host}, host)
	switch {
	case apierrors.IsNotFound(err):
		host = &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: a.Host, Labels: maps.Clone(a.Labels)}}
		if err := a.Client.Create(ctx, host); err != nil {
			return nil, fmt.Errorf("creating PodmanHost %s: %w", a.Host, err)
		}
	case err != nil:
		return nil, err
	}
	// maps.Equal takes no labels (nil) and an empty map as equal.
	if !maps.Equal(host.Labels, a.Labels) {
		labelled := host.DeepCopy()
		labelled.Labels = maps.Clone(a.Labels)
		if err := a.Client.Patch(ctx, labelled, client.MergeFrom(host)); err != nil {
			return nil, fmt.Errorf("labelling PodmanHost %s: %w", a.Host, err)
		}
		host = labelled
	}
	a.host = host
	return host, nil
}

// writeStatus writes the PodmanHost's status when it changed, or when the
// last written heartbeat is older than statusReportPeriod. It writes over
// whatever the fleet wrote (Ready False, HeartbeatLost): the host is back.
func (a *Agent) writeStatus(ctx context.Context, host *agentsv1alpha1.PodmanHost, ready metav1.Condition, inv containers.Inventory, invOK bool, now time.Time) error {
	updated := host.DeepCopy()
	st := &updated.Status
	meta.SetStatusCondition(&st.Conditions, ready)
	st.Capacity = int32(a.Capacity)
	st.DefaultImage = a.DefaultImage
	st.LogEndpoint, st.LogCABundle = a.LogEndpoint, a.LogCABundle
	st.Egress = a.Egress.DeepCopy()
	st.Policy = a.Policy.DeepCopy()
	if invOK {
		st.PodmanVersion = inv.Version
		st.Secrets = sortedUnique(inv.Secrets)
		st.Images = sortedUnique(inv.Images)
	}
	if a.Running != nil {
		if n, err := a.Running(ctx); err == nil {
			st.Running = int32(n)
		}
	}
	last := host.Status.LastHeartbeatTime
	if equality.Semantic.DeepEqual(host.Status, updated.Status) && last != nil && now.Sub(last.Time) < statusReportPeriod {
		return nil
	}
	st.LastHeartbeatTime = &metav1.Time{Time: now}
	return a.Client.Status().Update(ctx, updated)
}

// fence stops and removes every container of this host whose run is no
// longer this host's (given to another host, deleted, or recreated), and
// every running container of an attempt older than its run's current one,
// recording each on the run and on the PodmanHost.
func (a *Agent) fence(ctx context.Context) error {
	owned, err := a.Runtime.List(ctx, map[string]string{agentsv1alpha1.LabelHost: a.Host})
	if err != nil {
		return fmt.Errorf("listing this host's containers: %w", err)
	}
	for _, c := range owned {
		key := types.NamespacedName{Namespace: c.Labels[agentsv1alpha1.LabelNamespace], Name: c.Labels[agentsv1alpha1.LabelName]}
		run := &agentsv1alpha1.AgentRun{}
		err := a.Reader.Get(ctx, key, run)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading AgentRun %s: %w", key, err)
		}
		why := staleBecause(run, err == nil, c, a.Host)
		if why == "" {
			continue
		}
		if err := containers.StopAndRemove(ctx, a.Runtime, c, a.StopGracePeriod); err != nil {
			return err
		}
		note := fmt.Sprintf("host %s fenced container %s of AgentRun %s: %s", a.Host, c.Name, key, why)
		log.FromContext(ctx).Info("Fenced a container", "host", a.Host, "container", c.Name, "agentrun", key, "why", why)
		if a.host != nil {
			a.Recorder.Eventf(a.host, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonFencing, "Fence", "%s", note)
		}
		sameRun := err == nil && string(run.UID) == c.Labels[agentsv1alpha1.LabelUID]
		if sameRun {
			a.Recorder.Eventf(run, nil, corev1.EventTypeWarning, agentsv1alpha1.ReasonFencing, "Fence", "%s", note)
			if c.State == containers.StateExited && run.Status.Host != a.Host {
				// The attempt ran to its end while this host was away:
				// the run ran again, and the user sees that it had.
				a.Recorder.Eventf(run, nil, corev1.EventTypeNormal, agentsv1alpha1.ReasonResultDiscarded, "Fence",
					"attempt %s (container %s) had finished on host %s, exited %d, while the host was lost; the run was given to another host, and that result was discarded",
					c.Labels[agentsv1alpha1.LabelAttempt], c.Name, a.Host, c.ExitCode)
			}
		}
		// A run still this host's lost an old attempt's container only: its
		// current attempt runs here, with its slot and its egress proxy.
		if a.Released != nil && (!sameRun || run.Status.Host != a.Host) {
			a.Released(key)
		}
	}
	return nil
}

// staleBecause says why container c no longer belongs on host, or "" when it
// does.
func staleBecause(run *agentsv1alpha1.AgentRun, found bool, c containers.Container, host string) string {
	switch {
	case !found:
		return "the run no longer exists"
	case string(run.UID) != c.Labels[agentsv1alpha1.LabelUID]:
		return "the run was deleted and recreated"
	case run.Status.Host != host:
		if run.Status.Host == "" {
			return "the run was taken from this host while it was lost, and awaits another host"
		}
		return "the run was given to host " + run.Status.Host + " while this host was lost"
	}
	attempt, _ := strconv.ParseInt(c.Labels[agentsv1alpha1.LabelAttempt], 10, 32)
	if c.State == containers.StateRunning && int32(attempt) < run.Status.Attempts {
		return fmt.Sprintf("it runs attempt %d, and the run is at attempt %d", attempt, run.Status.Attempts)
	}
	return ""
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
