package agentruns

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// The fields of an AgentRun a host selects its runs by: the CRD declares
// them selectable (api/v1alpha1, +kubebuilder:selectablefield), so the API
// server filters a host's watch as it filters a kubelet's by spec.nodeName.
const (
	FieldHost       = "status.host"
	FieldPinnedHost = "spec.hostName"
)

// UseHostCache makes opts those of a manager that runs host and not the fleet
// (--mode=host): of the AgentRuns, it holds only the host's own, unreleased:
// those placed on it (status.host) and those pinned to it (spec.hostName),
// claimed or not. A host acts on no other run, so its memory, its watch's
// traffic and the API server's work for it stay the same however many runs
// the rest of the cluster creates, waits on or keeps; what it must read of
// another run (the one a run continues, a released run) it reads from the
// API server.
//
// The API server has no "or" in a selector, so the two sets are two watches,
// read as one: placed runs where spec.hostName is not the host, pinned runs
// whatever their status.host. spec.hostName is immutable, so no run moves
// from one to the other, and no read finds a run of the host in neither.
func UseHostCache(opts *manager.Options, host string) {
	placed := fields.AndSelectors(fields.OneTermEqualSelector(FieldHost, host), fields.OneTermNotEqualSelector(FieldPinnedHost, host))
	opts.Cache = cacheOptions(notReleased(), placed)
	opts.NewCache = func(config *rest.Config, opts cache.Options) (cache.Cache, error) {
		main, err := cache.New(config, opts)
		if err != nil {
			return nil, err
		}
		pinnedOpts := opts
		pinnedOpts.ByObject = map[client.Object]cache.ByObject{
			&agentsv1alpha1.AgentRun{}: runsBy(notReleased(), fields.OneTermEqualSelector(FieldPinnedHost, host)),
		}
		pinned, err := cache.New(config, pinnedOpts)
		if err != nil {
			return nil, err
		}
		return &hostRuns{Cache: main, pinned: pinned, stopped: make(chan struct{})}, nil
	}
}

// hostRuns is a host's cache: AgentRuns from two caches, the placed runs'
// (which holds every other kind too) and the pinned runs'.
type hostRuns struct {
	cache.Cache
	pinned cache.Cache
	// stopped closes as Start returns: what waits for the two informers to
	// sync waits no longer, as they never will.
	stopped chan struct{}
}

var runKind = agentsv1alpha1.GroupVersion.WithKind("AgentRun")

func isRun(obj any) bool {
	switch obj.(type) {
	case *agentsv1alpha1.AgentRun, *agentsv1alpha1.AgentRunList:
		return true
	}
	return false
}

func (c *hostRuns) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := c.Cache.Get(ctx, key, obj, opts...)
	if isRun(obj) && apierrors.IsNotFound(err) {
		return c.pinned.Get(ctx, key, obj, opts...)
	}
	return err
}

func (c *hostRuns) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	runs, ok := list.(*agentsv1alpha1.AgentRunList)
	if !ok {
		return c.Cache.List(ctx, list, opts...)
	}
	pinned := &agentsv1alpha1.AgentRunList{}
	if err := c.pinned.List(ctx, pinned, opts...); err != nil {
		return err
	}
	if err := c.Cache.List(ctx, runs, opts...); err != nil {
		return err
	}
	runs.Items = append(runs.Items, pinned.Items...)
	// Each cache kept to the limit; the two together keep to it too. A
	// cache's list has no next page (it says "continue-not-supported").
	if limit := (&client.ListOptions{}).ApplyOptions(opts).Limit; limit > 0 && int64(len(runs.Items)) > limit {
		runs.Items = runs.Items[:limit]
	}
	return nil
}

func (c *hostRuns) GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error) {
	if !isRun(obj) {
		return c.Cache.GetInformer(ctx, obj, opts...)
	}
	return c.informers(func(from cache.Cache) (cache.Informer, error) { return from.GetInformer(ctx, obj, opts...) })
}

func (c *hostRuns) GetInformerForKind(ctx context.Context, gvk schema.GroupVersionKind, opts ...cache.InformerGetOption) (cache.Informer, error) {
	if gvk != runKind {
		return c.Cache.GetInformerForKind(ctx, gvk, opts...)
	}
	return c.informers(func(from cache.Cache) (cache.Informer, error) { return from.GetInformerForKind(ctx, gvk, opts...) })
}

func (c *hostRuns) informers(get func(cache.Cache) (cache.Informer, error)) (cache.Informer, error) {
	placed, err := get(c.Cache)
	if err != nil {
		return nil, err
	}
	pinned, err := get(c.pinned)
	if err != nil {
		return nil, err
	}
	return bothInformers{informers: [2]cache.Informer{placed, pinned}, stopped: c.stopped}, nil
}

func (c *hostRuns) RemoveInformer(ctx context.Context, obj client.Object) error {
	err := c.Cache.RemoveInformer(ctx, obj)
	if isRun(obj) {
		err = errors.Join(err, c.pinned.RemoveInformer(ctx, obj))
	}
	return err
}

func (c *hostRuns) IndexField(ctx context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	if err := c.Cache.IndexField(ctx, obj, field, extract); err != nil || !isRun(obj) {
		return err
	}
	return c.pinned.IndexField(ctx, obj, field, extract)
}

// Start runs both caches until ctx ends.
func (c *hostRuns) Start(ctx context.Context) error {
	defer close(c.stopped)
	errs := make(chan error, 1)
	go func() { errs <- c.pinned.Start(ctx) }()
	return errors.Join(c.Cache.Start(ctx), <-errs)
}

func (c *hostRuns) WaitForCacheSync(ctx context.Context) bool {
	return c.Cache.WaitForCacheSync(ctx) && c.pinned.WaitForCacheSync(ctx)
}

// bothInformers are the placed and the pinned runs' informers, as one: a
// handler added is added to both, and it has synced once both have.
type bothInformers struct {
	informers [2]cache.Informer
	stopped   <-chan struct{}
}

func (b bothInformers) add(add func(cache.Informer) (toolscache.ResourceEventHandlerRegistration, error)) (toolscache.ResourceEventHandlerRegistration, error) {
	var regs [2]toolscache.ResourceEventHandlerRegistration
	for i, inf := range b.informers {
		reg, err := add(inf)
		if err != nil {
			for j := range i {
				_ = b.informers[j].RemoveEventHandler(regs[j]) // the add's error is the one to report
			}
			return nil, err
		}
		regs[i] = reg
	}
	return &bothRegistrations{regs: regs, synced: bothSynced(regs[0].HasSyncedChecker(), regs[1].HasSyncedChecker(), b.stopped)}, nil
}

func (b bothInformers) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	return b.add(func(i cache.Informer) (toolscache.ResourceEventHandlerRegistration, error) {
		return i.AddEventHandler(h)
	})
}

func (b bothInformers) AddEventHandlerWithResyncPeriod(h toolscache.ResourceEventHandler, period time.Duration) (toolscache.ResourceEventHandlerRegistration, error) {
	return b.add(func(i cache.Informer) (toolscache.ResourceEventHandlerRegistration, error) {
		return i.AddEventHandlerWithResyncPeriod(h, period)
	})
}

func (b bothInformers) AddEventHandlerWithOptions(h toolscache.ResourceEventHandler, opts toolscache.HandlerOptions) (toolscache.ResourceEventHandlerRegistration, error) {
	return b.add(func(i cache.Informer) (toolscache.ResourceEventHandlerRegistration, error) {
		return i.AddEventHandlerWithOptions(h, opts)
	})
}

func (b bothInformers) RemoveEventHandler(reg toolscache.ResourceEventHandlerRegistration) error {
	both, ok := reg.(*bothRegistrations)
	if !ok {
		return errors.New("not a registration of a host's AgentRun informer")
	}
	return errors.Join(b.informers[0].RemoveEventHandler(both.regs[0]), b.informers[1].RemoveEventHandler(both.regs[1]))
}

func (b bothInformers) AddIndexers(indexers toolscache.Indexers) error {
	return errors.Join(b.informers[0].AddIndexers(indexers), b.informers[1].AddIndexers(indexers))
}

func (b bothInformers) HasSynced() bool {
	return b.informers[0].HasSynced() && b.informers[1].HasSynced()
}

// HasSyncedChecker starts a wait for both informers each time it is asked
// (a goroutine that ends as they sync or the cache stops). Controllers wait
// on their handler's registration, whose checker is made once, not on this.
func (b bothInformers) HasSyncedChecker() toolscache.DoneChecker {
	return bothSynced(b.informers[0].HasSyncedChecker(), b.informers[1].HasSyncedChecker(), b.stopped)
}

func (b bothInformers) IsStopped() bool {
	return b.informers[0].IsStopped() || b.informers[1].IsStopped()
}

// bothRegistrations are a handler's registrations with both informers.
type bothRegistrations struct {
	regs   [2]toolscache.ResourceEventHandlerRegistration
	synced *bothDone
}

func (r *bothRegistrations) HasSynced() bool { return r.regs[0].HasSynced() && r.regs[1].HasSynced() }

func (r *bothRegistrations) HasSyncedChecker() toolscache.DoneChecker { return r.synced }

// bothDone is done once both of its checkers are.
type bothDone struct {
	name string
	done chan struct{}
}

// bothSynced is done once a and b are. Its one goroutine waits for them
// until the cache stops: informers stopped before they synced never will,
// and what waits for them waits no longer (its own context ends it).
func bothSynced(a, b toolscache.DoneChecker, stopped <-chan struct{}) *bothDone {
	d := &bothDone{name: a.Name() + " and " + b.Name(), done: make(chan struct{})}
	go d.wait(a, b, stopped)
	return d
}

func (d *bothDone) wait(a, b toolscache.DoneChecker, stopped <-chan struct{}) {
	for _, c := range []toolscache.DoneChecker{a, b} {
		select {
		case <-c.Done():
		case <-stopped:
			return
		}
	}
	close(d.done)
}

func (d *bothDone) Name() string { return d.name }

func (d *bothDone) Done() <-chan struct{} { return d.done }
