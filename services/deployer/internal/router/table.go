package router

import (
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
)

// Balancing chooses a backend within the revision a request was routed to.
type Balancing int

const (
	// LeastInFlight picks the backend with the fewest requests in flight,
	// starting the scan at a rotating position so ties alternate.
	LeastInFlight Balancing = iota
	// RoundRobin picks the backends in turn.
	RoundRobin
)

func (b Balancing) String() string {
	switch b {
	case LeastInFlight:
		return "least-in-flight"
	case RoundRobin:
		return "round-robin"
	}
	return "Balancing(" + strconv.Itoa(int(b)) + ")"
}

// revision groups the backends of one application revision and its
// counters, which outlive any routing table.
type revision struct {
	id    int64
	label string
	stats revStats
	// next rotates the starting backend of each pick.
	next atomic.Uint64
	// backends are the routed backends, ready or not; guarded by Router.mu.
	backends []*backend
}

// route is a revision's share of a table: its ready backends and weight.
type route struct {
	rev      *revision
	backends []*backend
	weight   int
}

// table is an immutable routing decision: which backends take new requests
// and in which proportion. Every change builds a new table and swaps it in
// whole, so a request sees either the old table or the new one.
type table struct {
	routes []route
	total  int
	// fallback is set when weights are configured but no weighted revision
	// has a ready backend, so every ready backend takes traffic instead.
	fallback bool
}

// pick chooses a backend: a revision by weight, then a backend within it.
// exclude, when set, is skipped (the backend a retry moves away from).
func (t *table) pick(bal Balancing, exclude *backend) *backend {
	switch len(t.routes) {
	case 0:
		return nil
	case 1:
		return t.routes[0].pick(bal, exclude)
	}
	n := rand.IntN(t.total)
	i := 0
	for n >= t.routes[i].weight {
		n -= t.routes[i].weight
		i++
	}
	if b := t.routes[i].pick(bal, exclude); b != nil {
		return b
	}
	for j := range t.routes {
		if j == i {
			continue
		}
		if b := t.routes[j].pick(bal, exclude); b != nil {
			return b
		}
	}
	return nil
}

// pick chooses within the route; a backend that recently refused a
// connection is only chosen when no other one is left.
func (rt *route) pick(bal Balancing, exclude *backend) *backend {
	bs := rt.backends
	n := len(bs)
	start := int(rt.rev.next.Add(1) % uint64(n))
	var best, ejected *backend
	bestLoad := int64(math.MaxInt64)
	var now int64
	for i := range n {
		b := bs[(start+i)%n]
		if b == exclude {
			continue
		}
		if b.ejected(&now) {
			if ejected == nil {
				ejected = b
			}
			continue
		}
		if bal == RoundRobin {
			return b
		}
		if load := b.inFlight(); load < bestLoad {
			best, bestLoad = b, load
			if load == 0 {
				break
			}
		}
	}
	if best == nil {
		return ejected
	}
	return best
}

// shares reports the fraction of new requests each revision gets.
func (t *table) shares() map[int64]float64 {
	out := make(map[int64]float64, len(t.routes))
	for _, rt := range t.routes {
		out[rt.rev.id] = float64(rt.weight) / float64(t.total)
	}
	return out
}
