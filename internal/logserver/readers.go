package logserver

import "sync"

// Readers counts the streams reading each container, so that the host
// keeps a finished run's container until they have read its last lines:
// when Podman's own follow stops early (see the podman package's
// StreamLogs), the stream reads the rest from the container's log, which
// goes with the container.
type Readers struct {
	mu     sync.Mutex
	counts map[string]int
}

// Reading tells whether a stream reads the container with this ID.
func (r *Readers) Reading(containerID string) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[containerID] > 0
}

// Open counts a stream of the container until the returned func is called.
func (r *Readers) Open(containerID string) (release func()) {
	if r == nil {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[containerID]++
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.counts[containerID]--; r.counts[containerID] <= 0 {
			delete(r.counts, containerID)
		}
	}
}
