package agentruns

import (
	"context"
	"fmt"
	"strings"
	"sync"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// QueueIndex indexes unfinished AgentRuns by the hosts whose line they stand
// in (see QueueKeys), so a pass that counts a host's slots lists only the
// runs that can hold or want one, never the cluster's finished runs.
const QueueIndex = "agentrun.queue"

// AnyHost is the queue key of unfinished runs no host has claimed and none is
// pinned to: every host's line includes them. It cannot be a host name, which
// has no spaces.
const AnyHost = "any host"

// QueueKeys is the index function behind QueueIndex: the host that claimed
// the run, else the host it is pinned to, else AnyHost; nothing for a
// finished run.
func QueueKeys(o client.Object) []string {
	run, ok := o.(*agentsv1alpha1.AgentRun)
	if !ok || run.Status.Phase.IsFinished() {
		return nil
	}
	switch {
	case run.Status.Host != "":
		return []string{run.Status.Host}
	case run.Spec.HostName != "":
		return []string{run.Spec.HostName}
	}
	return []string{AnyHost}
}

// indexedManagers remembers the caches QueueIndex was added to: a process
// running the fleet and a host (--mode=all) sets both up on one manager, and
// a cache takes an index once.
var indexedManagers sync.Map

// IndexQueues adds QueueIndex to mgr's cache, once.
func IndexQueues(mgr ctrl.Manager) error {
	if _, done := indexedManagers.LoadOrStore(mgr.GetCache(), true); done {
		return nil
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &agentsv1alpha1.AgentRun{}, QueueIndex, QueueKeys); err != nil {
		return fmt.Errorf("indexing AgentRuns by host queue: %w", err)
	}
	return nil
}

// InLine lists the unfinished runs with the given queue key: a host's (its
// own and those pinned to it), or AnyHost's (those waiting to be placed).
// opts add to the list's options (client.UnsafeDisableDeepCopy, for a
// reader of a cache that only reads what it lists).
func InLine(ctx context.Context, c client.Reader, key string, opts ...client.ListOption) ([]agentsv1alpha1.AgentRun, error) {
	list := &agentsv1alpha1.AgentRunList{}
	if err := c.List(ctx, list, append(opts, client.MatchingFields{QueueIndex: key})...); err != nil {
		return nil, fmt.Errorf("listing the AgentRuns in %s's line: %w", key, err)
	}
	return list.Items, nil
}

// ByCreation orders runs as they stand in line: by creation, then
// namespace and name, so that runs created in the same second keep one
// order.
func ByCreation(a, b *agentsv1alpha1.AgentRun) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}
