package host

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

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
