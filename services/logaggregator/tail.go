package logaggregator

import (
	"sync"
	"sync/atomic"

	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// hub fans committed records out to tails without ever blocking the
// indexer: a tail that falls behind loses records, counted in dropped.
type hub struct {
	buffer int
	mu     sync.Mutex
	subs   map[*tailSub]struct{}
}

type tailSub struct {
	f       *filter.Filter
	ch      chan []record.Record
	dropped atomic.Uint64
	closed  chan struct{}
}

func newHub(buffer int) *hub { return &hub{buffer: buffer, subs: map[*tailSub]struct{}{}} }

func (h *hub) subscribe(f *filter.Filter) *tailSub {
	t := &tailSub{f: f, ch: make(chan []record.Record, h.buffer), closed: make(chan struct{})}
	h.mu.Lock()
	h.subs[t] = struct{}{}
	h.mu.Unlock()
	return t
}

func (h *hub) unsubscribe(t *tailSub) {
	h.mu.Lock()
	delete(h.subs, t)
	h.mu.Unlock()
}

// publish hands each tail the records matching its filter.
func (h *hub) publish(recs []record.Record, dropped prometheus.Counter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for t := range h.subs {
		var out []record.Record
		for i := range recs {
			if t.f.Match(&recs[i]) {
				out = append(out, recs[i])
			}
		}
		if len(out) == 0 {
			continue
		}
		select {
		case t.ch <- out:
		default:
			t.dropped.Add(uint64(len(out)))
			dropped.Add(float64(len(out)))
		}
	}
}

// closeAll ends every tail, when the service stops.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for t := range h.subs {
		close(t.closed)
		delete(h.subs, t)
	}
}
