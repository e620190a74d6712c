package controllers

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// TrimForCache drops from cached AgentRuns what the reconciler never reads
// back: managed fields, the output tail and the agent's result text. With
// thousands of finished runs, these are most of the manager's memory. The
// reconciler writes them with merge patches, which leave fields it did not
// change alone, so the trimmed copies do not erase them. Use it as the
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
	return run, nil
}

// supersededReads remembers, per run, the resourceVersion a pass read before
// it wrote the run: a later pass that reads that same version reads a cache
// that has not yet caught up with this process's own write. Such a pass
// would redo the Podman calls of the one before (launch checks, inspect,
// logs, remove) only to lose its status write to a conflict; make bench
// counted one such pass in five. The watch brings the written version, and
// with it the next pass, so the stale one can end at once. Versions are only
// compared for equality, never ordered.
type supersededReads struct {
	mu   sync.Mutex
	read map[types.NamespacedName]string
}

// stale tells whether run, as read, is a version this process has written
// over already.
func (s *supersededReads) stale(run *agentsv1alpha1.AgentRun) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.read[client.ObjectKeyFromObject(run)]
	return ok && v == run.ResourceVersion
}

// passed records how a pass ended: readVersion is what it read, run what it
// holds now (the client updates it with each write's answer). A pass that
// wrote nothing leaves nothing to remember.
func (s *supersededReads) passed(key types.NamespacedName, readVersion string, run *agentsv1alpha1.AgentRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if run.ResourceVersion == readVersion {
		delete(s.read, key)
		return
	}
	if s.read == nil {
		s.read = map[types.NamespacedName]string{}
	}
	s.read[key] = readVersion
}

func (s *supersededReads) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.read, key)
}
