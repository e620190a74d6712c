package logapi

import "sync"

// Limits are how many streams may be open at once. A follow lasts as long
// as its run, and each holds a connection to a host and a Podman log reader
// there: without a cap one user (or a script gone wrong) could hold them
// all.
type Limits struct {
	// PerUser is the most one user follows at once, over all hosts.
	PerUser int
	// PerHost is the most streams the fleet opens to one host at once.
	PerHost int
}

// DefaultLimits are generous for people and tight enough for a runaway
// script.
var DefaultLimits = Limits{PerUser: 16, PerHost: 64}

// streams counts the open streams by user and by host.
type streams struct {
	limits Limits
	mu     sync.Mutex
	users  map[string]int
	hosts  map[string]int
}

func newStreams(l Limits) *streams {
	return &streams{limits: l, users: map[string]int{}, hosts: map[string]int{}}
}

// open counts a stream of user's to host, or says which cap it would pass
// ("" when it fits). The caller calls the returned release once the stream
// ends.
func (s *streams) open(user, host string) (release func(), over string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.users[user] >= s.limits.PerUser:
		return nil, "user"
	case s.hosts[host] >= s.limits.PerHost:
		return nil, "host"
	}
	s.users[user]++
	s.hosts[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			decrement(s.users, user)
			decrement(s.hosts, host)
		})
	}, ""
}

// decrement lowers a count, dropping it at zero so the maps hold only the
// open streams.
func decrement(m map[string]int, k string) {
	if m[k]--; m[k] <= 0 {
		delete(m, k)
	}
}
