package controllers

import (
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// TrimForCache drops from cached AgentRuns what the reconciler never reads
// back: managed fields, the output tail and the agent's result text; and of a
// finished run also its prompt, container settings, message and result, and
// its conditions but Finished (an AlreadyRan run outlives its TTL) and
// Notified (the callback goes once). A finished run's passes read its host,
// phase, container, times, finalizers and TTL, and later runs its session's
// directory and ID, all kept. With thousands of finished runs, these are
// most of the manager's memory (measured: 2.7 KB of heap per cached finished
// run trimmed of its output alone, 1.4 KB trimmed as here). The reconciler
// writes with merge patches, which leave fields it did not change alone, so
// the trimmed copies do not erase them; the one write to a finished run's
// status (its Notified condition) starts from the run as the API server has
// it, since a merge patch replaces a list whole. What needs the rest (a run's
// record, its callback) reads the run from the API server. Use it as the
// manager cache's transform for AgentRuns.
func TrimForCache(obj any) (any, error) {
	run, ok := obj.(*agentsv1alpha1.AgentRun)
	if !ok {
		return obj, nil
	}
	run.ManagedFields = nil
	run.Status.Output = ""
	if run.Status.AgentResult != nil {
		run.Status.AgentResult.Result = ""
	}
	if run.Status.Phase.IsFinished() {
		run.Spec.Prompt, run.Spec.Command, run.Spec.Podman = "", nil, agentsv1alpha1.PodmanSpec{}
		run.Status.Conditions = slices.DeleteFunc(run.Status.Conditions, func(c metav1.Condition) bool {
			return c.Type != agentsv1alpha1.ConditionFinished && c.Type != agentsv1alpha1.ConditionNotified
		})
		run.Status.Message = ""
		if r := run.Status.AgentResult; r != nil {
			run.Status.AgentResult = &agentsv1alpha1.AgentResult{SessionID: r.SessionID}
		}
	}
	return run, nil
}

// supersededReads remembers, per run, the resourceVersions this process has
// written over: the one a pass read, and the one its own finalizer patch made
// before its status write. A later pass that reads one of them reads a cache
// that has not yet caught up with this process's own writes. Such a pass
// would redo the Podman calls of the one before (launch checks, inspect,
// logs, remove) only to lose its status write to a conflict: make bench
// counted such passes for about one run in six. The watch brings the written
// version, and with it the next pass, so the stale one can end at once.
// Versions are only compared for equality, never ordered.
type supersededReads struct {
	mu       sync.Mutex
	versions map[types.NamespacedName][]string
}

// stale tells whether run, as read, is a version this process has written
// over already.
func (s *supersededReads) stale(run *agentsv1alpha1.AgentRun) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.versions[client.ObjectKeyFromObject(run)], run.ResourceVersion)
}

// passed records how a pass ended: run is what it holds now (the client
// updates it with each write's answer), seen the versions it read or made
// on the way. Those that are not run's own are superseded; a pass that
// wrote nothing leaves nothing to remember.
func (s *supersededReads) passed(key types.NamespacedName, run *agentsv1alpha1.AgentRun, seen ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []string
	for _, v := range seen {
		if v != run.ResourceVersion && !slices.Contains(old, v) {
			old = append(old, v)
		}
	}
	if len(old) == 0 {
		delete(s.versions, key)
		return
	}
	if s.versions == nil {
		s.versions = map[types.NamespacedName][]string{}
	}
	s.versions[key] = old
}

func (s *supersededReads) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.versions, key)
}
