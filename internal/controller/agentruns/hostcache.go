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

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// The fields of an AgentRun a host selects its runs by: the CRD declares
// them selectable (api/v1alpha1, +kubebuilder:selectablefield), so the API
// server filters a host's watch as it filters a kubelet's by spec.nodeName.
const (
	FieldHost       = "status.host"
	FieldPinnedHost = "spec.hostName"
)

// HostCache is the cache of a manager that runs host and not the fleet
// (--mode=host): of the AgentRuns, it holds only the host's own, unreleased:
// those placed on it (status.host) and those pinned to it (spec.hostName),
// claimed or not. A host acts on no other run, so its memory, its watch's
// traffic and the API server's work for it stay the same however many runs
// the rest of the cluster creates, waits on or keeps; what it must read of
// another run (the one a run continues, a released run) it reads from the
// API server. Set the manager's options' Cache and NewCache to the two
// results.
//
// The API server has no "or" in a selector, so the two sets are two watches,
// read as one: placed runs where spec.hostName is not the host, pinned runs
// whatever their status.host. spec.hostName is immutable, so no run moves
// from one to the other, and no read finds a run of the host in neither.
func HostCache(host string) (cache.Options, cache.NewCacheFunc) {
	placed := fields.AndSelectors(fields.OneTermEqualSelector(FieldHost, host), fields.OneTermNotEqualSelector(FieldPinnedHost, host))
	opts := cacheOptions(notReleased(), placed)
	newCache := func(config *rest.Config, opts cache.Options) (cache.Cache, error) {
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
		return &hostRuns{Cache: main, pinned: pinned}, nil
	}
	return opts, newCache
}

// hostRuns is a host's cache: AgentRuns from two caches, the placed runs'
// (which holds every other kind too) and the pinned runs'.
type hostRuns struct {
	cache.Cache
	pinned cache.Cache
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
	return bothInformers{placed, pinned}, nil
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
	errs := make(chan error, 1)
	go func() { errs <- c.pinned.Start(ctx) }()
	return errors.Join(c.Cache.Start(ctx), <-errs)
}

func (c *hostRuns) WaitForCacheSync(ctx context.Context) bool {
	return c.Cache.WaitForCacheSync(ctx) && c.pinned.WaitForCacheSync(ctx)
}

// bothInformers are the placed and the pinned runs' informers, as one: a
// handler added is added to both, and it has synced once both have.
type bothInformers [2]cache.Informer

func (b bothInformers) add(add func(cache.Informer) (toolscache.ResourceEventHandlerRegistration, error)) (toolscache.ResourceEventHandlerRegistration, error) {
	var regs bothRegistrations
	for i, inf := range b {
		reg, err := add(inf)
		if err != nil {
			for j := range i {
				_ = b[j].RemoveEventHandler(regs[j]) // the add's error is the one to report
			}
			return nil, err
		}
		regs[i] = reg
	}
	return regs, nil
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
	regs, ok := reg.(bothRegistrations)
	if !ok {
		return errors.New("not a registration of a host's AgentRun informer")
	}
	return errors.Join(b[0].RemoveEventHandler(regs[0]), b[1].RemoveEventHandler(regs[1]))
}

func (b bothInformers) AddIndexers(indexers toolscache.Indexers) error {
	return errors.Join(b[0].AddIndexers(indexers), b[1].AddIndexers(indexers))
}

func (b bothInformers) HasSynced() bool { return b[0].HasSynced() && b[1].HasSynced() }

func (b bothInformers) HasSyncedChecker() toolscache.DoneChecker {
	return bothDone{b[0].HasSyncedChecker(), b[1].HasSyncedChecker()}
}

func (b bothInformers) IsStopped() bool { return b[0].IsStopped() || b[1].IsStopped() }

// bothRegistrations are a handler's registrations with both informers.
type bothRegistrations [2]toolscache.ResourceEventHandlerRegistration

func (r bothRegistrations) HasSynced() bool { return r[0].HasSynced() && r[1].HasSynced() }

func (r bothRegistrations) HasSyncedChecker() toolscache.DoneChecker {
	return bothDone{r[0].HasSyncedChecker(), r[1].HasSyncedChecker()}
}

// bothDone is done once both of its checkers are. Each Done waits on its
// own: a cache is waited for once, as its manager starts.
type bothDone [2]toolscache.DoneChecker

func (d bothDone) Name() string { return d[0].Name() + " and " + d[1].Name() }

func (d bothDone) Done() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		<-d[0].Done()
		<-d[1].Done()
		close(done)
	}()
	return done
}
