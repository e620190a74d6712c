package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/config"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/placement"
)

// PlacementReconciler is the fleet's scheduler: it places each unpinned run
// on the Ready host that has what the run needs (its secrets, its image, the
// labels its hostSelector asks for, a free slot) and is the least loaded, by
// writing status.host, as the kube-scheduler binds a Pod to a Node. A run no
// host can take stays Pending with reason Unschedulable and a message naming,
// per host, what it lacks; it is placed as soon as a host gains it.
type PlacementReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// RecheckPeriod bounds how long an unschedulable run waits when no
	// watched change wakes it.
	RecheckPeriod ctrl.Result
	// Clock dates budget reservations.
	Clock clock.Clock

	// assumed holds the runs placed by this process whose placement the
	// cache does not show yet, so that the next run's load counts them.
	mu      sync.Mutex
	assumed map[types.NamespacedName]string
}

// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=podmanhosts,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=agents.agentrun.dev,resources=podmanhosts/status,verbs=get;update;patch

// Reconcile places one run. Runs are placed one at a time (one worker), so
// that each placement counts the ones before it.
func (p *PlacementReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	run := &agentsv1alpha1.AgentRun{}
	if err := p.Get(ctx, req.NamespacedName, run); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if awaitsBudget(run) {
		return p.admitPinned(ctx, run)
	}
	if !awaitsPlacement(run) {
		return ctrl.Result{}, nil
	}
	hosts, err := p.candidates(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	base := run.DeepCopy()
	if run.Spec.ContinueFrom != "" {
		// A continuing run goes where its session is kept, once the run
		// it continues has finished.
		earlier, st, err := agentruns.SessionSource(ctx, p.Client, run)
		if err != nil {
			return ctrl.Result{}, err
		}
		if st != nil {
			if st.Phase.IsFinished() {
				agentruns.MarkFinished(&run.Status, time.Now())
			}
			agentruns.ApplyState(&run.Status, run.Generation, *st)
			if err := agentruns.WriteStatus(ctx, p.Client, base, run); err != nil {
				return ctrl.Result{}, ignoreStale(err)
			}
			return p.RecheckPeriod, nil
		}
		hosts = slices.DeleteFunc(hosts, func(h placement.Host) bool { return h.Name != earlier.Status.Host })
	}
	chosen, why, waitsForSlot := placement.Choose(run, hosts)
	if chosen == "" {
		return p.unplaced(ctx, base, run, why, waitsForSlot)
	}
	adm, err := p.admit(ctx, run)
	if err != nil || !adm.admitted {
		return p.waitForBudget(ctx, base, run, adm, err)
	}
	run.Status.Budget = adm.budget
	run.Status.Host = chosen
	agentruns.ApplyState(&run.Status, run.Generation, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonClaimed, Message: "placed on host " + chosen})
	if err := agentruns.WriteStatus(ctx, p.Client, base, run); err != nil {
		if agentruns.Stale(err) {
			// Changed or gone since the cache's copy; the watch brings it.
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	p.mu.Lock()
	p.assumed[req.NamespacedName] = chosen
	p.mu.Unlock()
	log.FromContext(ctx).V(1).Info("Placed AgentRun", "agentrun", req.NamespacedName, "host", chosen)
	return ctrl.Result{}, nil
}

// unschedulableGrace is how long a new run may find no host that can take
// it before it is Unschedulable, with a warning: a host that is joining (its
// PodmanHost not made yet, right after make up) or about to report a secret
// or an image takes it within a heartbeat.
const unschedulableGrace = config.DefaultHeartbeatPeriod

// unplaced keeps a run no host can take Pending, saying why: reason
// WaitingForCapacity when a host that could run it has no free slot (a
// freed slot wakes it); else WaitingForHost while it is new, then
// Unschedulable, with a warning.
func (p *PlacementReconciler) unplaced(ctx context.Context, base, run *agentsv1alpha1.AgentRun, why string, waitsForSlot bool) (ctrl.Result, error) {
	before := agentruns.StateOf(&run.Status)
	st := agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonUnschedulable, Message: why}
	res := p.RecheckPeriod
	if waitsForSlot {
		st.Reason = agentsv1alpha1.ReasonWaitingForCapacity
		st.Message = why + "; it is placed, oldest first, when a host that can run it has a free slot"
	} else if wait := unschedulableGrace - p.Clock.Since(run.CreationTimestamp.Time); wait > 0 {
		st.Reason = agentsv1alpha1.ReasonWaitingForHost
		st.Message = fmt.Sprintf("no Podman host can take the run yet: %s; it is placed as soon as one can, and is Unschedulable if none can within %s of its creation",
			why, unschedulableGrace)
		res.RequeueAfter = min(res.RequeueAfter, wait)
	}
	agentruns.ApplyState(&run.Status, run.Generation, st)
	if err := agentruns.WriteStatus(ctx, p.Client, base, run); err != nil {
		return ctrl.Result{}, ignoreStale(err)
	}
	if before.Reason != st.Reason && st.Reason == agentsv1alpha1.ReasonUnschedulable {
		p.Recorder.Eventf(run, nil, corev1.EventTypeWarning, st.Reason, "Place", "%s", agentruns.TruncateUTF8(why, agentruns.MaxEventNoteBytes))
	}
	return res, nil
}

// awaitsPlacement tells whether a run is the scheduler's: unpinned,
// unplaced, unfinished, not being deleted, and not held in a Kueue queue.
func awaitsPlacement(run *agentsv1alpha1.AgentRun) bool {
	return run.Spec.HostName == "" && run.Status.Host == "" && !run.Status.Phase.IsFinished() && run.DeletionTimestamp.IsZero() &&
		!agentruns.HeldByQueue(run)
}

// awaitsBudget tells whether a run pinned to a host waits for the fleet's
// budget check, which its host waits for before it claims it.
func awaitsBudget(run *agentsv1alpha1.AgentRun) bool {
	return run.Spec.HostName != "" && run.Status.Host == "" && run.Status.Budget == nil && !run.Spec.Cancel &&
		!run.Status.Phase.IsFinished() && run.DeletionTimestamp.IsZero() && !agentruns.HeldByQueue(run)
}

// admitPinned checks a pinned run against its budgets: its host claims it
// once status.budget says it reserved.
func (p *PlacementReconciler) admitPinned(ctx context.Context, run *agentsv1alpha1.AgentRun) (ctrl.Result, error) {
	base := run.DeepCopy()
	adm, err := p.admit(ctx, run)
	if err != nil || !adm.admitted {
		return p.waitForBudget(ctx, base, run, adm, err)
	}
	if adm.budget == nil {
		return ctrl.Result{}, nil // no budget counts it: its host does not wait
	}
	run.Status.Budget = adm.budget
	agentruns.ApplyState(&run.Status, run.Generation, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonWaitingForHost,
		Message: fmt.Sprintf("reserved %s USD under AgentRunBudget %s; waiting for host %s", adm.budget.ReservedUSD, strings.Join(adm.budget.Budgets, ", "), run.Spec.HostName)})
	return ctrl.Result{}, ignoreStale(agentruns.WriteStatus(ctx, p.Client, base, run))
}

// waitForBudget keeps a run that does not fit its budgets Pending, reason
// BudgetExceeded, until it may: when the window frees enough, or sooner
// when a budget changes (a run finished under its cap).
func (p *PlacementReconciler) waitForBudget(ctx context.Context, base, run *agentsv1alpha1.AgentRun, adm admission, err error) (ctrl.Result, error) {
	if err != nil {
		// A budget changed since the cache's copy (this process's own
		// reservation for the run before, most often): its watch brings
		// the run back once the cache has the new version.
		return ctrl.Result{}, ignoreStale(err)
	}
	before := agentruns.StateOf(&run.Status)
	st := agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonBudgetExceeded, Message: adm.why}
	agentruns.ApplyState(&run.Status, run.Generation, st)
	if err := agentruns.WriteStatus(ctx, p.Client, base, run); err != nil {
		return ctrl.Result{}, ignoreStale(err)
	}
	if before.Reason != st.Reason {
		p.Recorder.Eventf(run, nil, corev1.EventTypeWarning, st.Reason, "Place", "%s", agentruns.TruncateUTF8(adm.why, agentruns.MaxEventNoteBytes))
	}
	wait := p.RecheckPeriod
	if adm.wait > 0 && adm.wait < wait.RequeueAfter {
		wait.RequeueAfter = adm.wait
	}
	return wait, nil
}

// candidates reads every PodmanHost with its load: the unfinished runs it
// holds or that are pinned to it, counted from the runs themselves (fresher
// than the host's own report), plus the placements the cache does not show
// yet.
func (p *PlacementReconciler) candidates(ctx context.Context) ([]placement.Host, error) {
	list := &agentsv1alpha1.PodmanHostList{}
	if err := p.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing PodmanHosts: %w", err)
	}
	pending := p.unseenPlacements(ctx)
	hosts := make([]placement.Host, 0, len(list.Items))
	for i := range list.Items {
		h, err := p.withLoad(ctx, &list.Items[i], pending)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// withLoad reads a PodmanHost with its load: the unfinished runs in its
// line, counted from the runs themselves, plus pending, this process's
// placements on it that the cache does not show yet.
func (p *PlacementReconciler) withLoad(ctx context.Context, ph *agentsv1alpha1.PodmanHost, pending map[string]int) (placement.Host, error) {
	line, err := agentruns.InLine(ctx, p.Client, ph.Name)
	if err != nil {
		return placement.Host{}, err
	}
	return placement.FromPodmanHost(ph, len(line)+pending[ph.Name]), nil
}

// unseenPlacements counts, per host, the runs this process placed that the
// cache does not show placed yet, forgetting the others.
func (p *PlacementReconciler) unseenPlacements(ctx context.Context) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for key, host := range p.assumed {
		run := &agentsv1alpha1.AgentRun{}
		if err := p.Get(ctx, key, run); err != nil || run.Status.Host != "" || !awaitsPlacement(run) {
			delete(p.assumed, key)
			continue
		}
		out[host]++
	}
	return out
}

// wakeForFreedSlot wakes the runs that host's free slots go to: as many as
// it has free, the oldest first among the waiting runs it could run. A run
// its budget holds waits for the budget instead, and a continuation, which
// goes only where its session is, is woken without taking a slot.
func (p *PlacementReconciler) wakeForFreedSlot(ctx context.Context, host string, q interface{ Add(reconcile.Request) }) {
	ph := &agentsv1alpha1.PodmanHost{}
	if err := p.Get(ctx, client.ObjectKey{Name: host}, ph); err != nil {
		return // a host that is gone frees nothing
	}
	h, err := p.withLoad(ctx, ph, p.unseenPlacements(ctx))
	if err != nil {
		log.FromContext(ctx).Error(err, "Listing a host's runs", "host", host)
		return
	}
	if h.Full() {
		return
	}
	free := h.Capacity - h.Load
	// Every waiting run, at every run's end: read in place, not copied.
	waiting, err := agentruns.InLine(ctx, p.Client, agentruns.AnyHost, client.UnsafeDisableDeepCopy)
	if err != nil {
		log.FromContext(ctx).Error(err, "Listing the runs that wait for a host")
		return
	}
	takers := make([]*agentsv1alpha1.AgentRun, 0, len(waiting))
	for i := range waiting {
		run := &waiting[i]
		if awaitsPlacement(run) && agentruns.StateOf(&run.Status).Reason != agentsv1alpha1.ReasonBudgetExceeded && placement.CouldRun(run, h) {
			takers = append(takers, run)
		}
	}
	slices.SortFunc(takers, agentruns.ByCreation)
	for _, run := range takers {
		q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(run)})
		if run.Spec.ContinueFrom != "" || h.Capacity == 0 {
			continue
		}
		if free--; free == 0 {
			return
		}
	}
}

// SetupWithManager watches unplaced runs, wakes them all when a host changes
// what placement reads of it (it may have gained a secret, an image or its
// Ready condition), and wakes those a freed slot goes to when a placed run
// ends.
func (p *PlacementReconciler) SetupWithManager(mgr ctrl.Manager) error {
	p.assumed = map[types.NamespacedName]string{}
	wakeAll := handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p.enqueueUnplaced(ctx, q)
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p.enqueueUnplaced(ctx, q)
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p.enqueueUnplaced(ctx, q)
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1alpha1.AgentRun{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			run, ok := o.(*agentsv1alpha1.AgentRun)
			return ok && (awaitsPlacement(run) || awaitsBudget(run))
		}))).
		Watches(&agentsv1alpha1.AgentRunBudget{}, handler.EnqueueRequestsFromMapFunc(p.waitingUnder)).
		Watches(&agentsv1alpha1.PodmanHost{}, wakeAll, builder.WithPredicates(placementChanged())).
		Watches(&agentsv1alpha1.AgentRun{}, handler.TypedFuncs[client.Object, reconcile.Request]{
			UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				p.wakeForFreedSlot(ctx, e.ObjectOld.(*agentsv1alpha1.AgentRun).Status.Host, q)
			},
			DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				if run, ok := e.Object.(*agentsv1alpha1.AgentRun); ok {
					p.wakeForFreedSlot(ctx, run.Status.Host, q)
				}
			},
		}, builder.WithPredicates(slotFreed())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Named("placement").
		Complete(p)
}

// placementChanged passes the PodmanHost events that may let a waiting run
// be placed: a host that joins or goes, and an update of what placement
// reads of it. A host's status changes with every run it starts or ends
// (status.running) and with its heartbeat: each such update woke every
// waiting run for a pass that could only wait again, and runs count a host's
// load from the runs, not from that report.
func placementChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldHost, ok1 := e.ObjectOld.(*agentsv1alpha1.PodmanHost)
			newHost, ok2 := e.ObjectNew.(*agentsv1alpha1.PodmanHost)
			return !ok1 || !ok2 || !equality.Semantic.DeepEqual(placement.FromPodmanHost(oldHost, 0), placement.FromPodmanHost(newHost, 0))
		},
	}
}

// slotFreed passes the events that free a host's slot: a placed run that
// finishes or goes.
func slotFreed() predicate.Predicate {
	placed := func(o client.Object) bool {
		run, ok := o.(*agentsv1alpha1.AgentRun)
		return ok && run.Status.Host != ""
	}
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		DeleteFunc:  func(e event.DeleteEvent) bool { return placed(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldRun, ok1 := e.ObjectOld.(*agentsv1alpha1.AgentRun)
			newRun, ok2 := e.ObjectNew.(*agentsv1alpha1.AgentRun)
			return ok1 && ok2 && placed(oldRun) && !oldRun.Status.Phase.IsFinished() && newRun.Status.Phase.IsFinished()
		},
	}
}

func (p *PlacementReconciler) enqueueUnplaced(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	waiting, err := agentruns.InLine(ctx, p.Client, agentruns.AnyHost)
	if err != nil {
		log.FromContext(ctx).Error(err, "Listing the runs that wait for a host")
		return
	}
	for i := range waiting {
		if awaitsPlacement(&waiting[i]) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&waiting[i])})
		}
	}
}

// waitingUnder lists the runs of a budget's namespace that wait for a host
// or for the budget, when the budget changes: it may take them now.
func (p *PlacementReconciler) waitingUnder(ctx context.Context, o client.Object) []reconcile.Request {
	list := &agentsv1alpha1.AgentRunList{}
	if err := p.List(ctx, list, client.InNamespace(o.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Listing the runs an AgentRunBudget may hold", "namespace", o.GetNamespace())
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if run := &list.Items[i]; awaitsPlacement(run) || awaitsBudget(run) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(run)})
		}
	}
	return out
}

// ignoreStale drops a write's error when the object changed or went away
// since it was read (agentruns.Stale).
func ignoreStale(err error) error {
	if agentruns.Stale(err) {
		return nil
	}
	return err
}
