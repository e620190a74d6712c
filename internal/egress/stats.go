package egress

import (
	"cmp"
	"slices"
	"sync"
)

// Outcome is what became of one attempt to go through the proxy.
type Outcome int

const (
	// Allowed: the name is on the run's list and was reached.
	Allowed Outcome = iota
	// RefusedName: the name or port is not on the run's list, the target
	// is an IP address, or the ClientHello names another host or none.
	RefusedName
	// RefusedAddress: the name is on the list but leads to an address the
	// host refuses (loopback, link-local, private, its own).
	RefusedAddress
	// OverLimit: the run had its bound of connections open.
	OverLimit
)

// Attempt is one decision of the proxy, as counters and observers see it.
type Attempt struct {
	Outcome Outcome
	// Target is "host:port" as asked for (never a URL's path, query or
	// user information); "" when the connection was refused before its
	// request was read (OverLimit).
	Target string
	// Reason says why a refusal, for an event's message.
	Reason string
}

// Stats are a run's counts since its server started.
type Stats struct {
	Allowed          int64
	RefusedNames     int64
	RefusedAddresses int64
	OverLimit        int64
	// TopRefused are the most refused targets, most first, at most
	// topShown: what status shows.
	TopRefused []TargetCount
}

// TargetCount is how often one target was refused. A count is exact
// unless the target came back after the counter, full, had dropped it:
// then it may count up to that many more (see topTargets).
type TargetCount struct {
	Target string
	Count  int64
}

const (
	// topShown is how many refused targets status shows.
	topShown = 10
	// topKept is how many refused targets a run's counter keeps: a run
	// that tries a million names keeps a hundred, the most tried among them.
	topKept = 100
)

// counters are a run's Stats, safe for concurrent use.
type counters struct {
	mu    sync.Mutex
	stats Stats
	top   topTargets
}

func (c *counters) add(a Attempt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch a.Outcome {
	case Allowed:
		c.stats.Allowed++
		return
	case RefusedName:
		c.stats.RefusedNames++
	case RefusedAddress:
		c.stats.RefusedAddresses++
	case OverLimit:
		c.stats.OverLimit++
		return
	}
	c.top.add(a.Target)
}

// Stats returns the run's counts so far.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	st := s.stats.stats
	st.TopRefused = s.stats.top.most(topShown)
	return st
}

// topTargets counts refused targets in bounded memory, the way the
// Space-Saving algorithm (Metwally, Agrawal, El Abbadi, 2005) does: when
// full, a new target takes the place of the least counted one, and its
// count. A target refused often stays, however many others are tried once.
type topTargets map[string]int64

func (t *topTargets) add(target string) {
	if *t == nil {
		*t = topTargets{}
	}
	m := *t
	if _, ok := m[target]; !ok && len(m) >= topKept {
		least, n := "", int64(0)
		for k, v := range m {
			if least == "" || v < n {
				least, n = k, v
			}
		}
		delete(m, least)
		m[target] = n
	}
	m[target]++
}

// most returns the n most counted targets, most first, ties by name.
func (t topTargets) most(n int) []TargetCount {
	all := make([]TargetCount, 0, len(t))
	for k, v := range t {
		all = append(all, TargetCount{Target: k, Count: v})
	}
	slices.SortFunc(all, func(a, b TargetCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Target, b.Target))
	})
	return all[:min(n, len(all))]
}
