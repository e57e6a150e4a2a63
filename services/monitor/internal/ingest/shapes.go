package ingest

import (
	"bytes"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
)

// maxShapeSeries bounds the series of all shapes kept; past it the shapes
// are dropped and relearnt.
const maxShapeSeries = 1 << 21

// shapes remembers the layout of batches seen before: an agent pushing the
// same series batch after batch sends the same symbol table and the same
// label references each time, only the samples change. A batch whose
// symbols and references are byte for byte those of a known shape gets its
// series' labels and store references from it, without a per-series hash,
// lookup or UTF-8 check.
type shapes struct {
	mu     sync.RWMutex
	m      map[uint64]*shape
	series int
}

// shape is the layout of one batch and what its series resolved to.
type shape struct {
	symbols []byte   // the encoded symbol fields, as received
	refs    []uint32 // every series' label refs, concatenated
	ends    []int    // end of each series' refs in refs
	series  []shapeSeries
}

type shapeSeries struct {
	lbls  labels.Labels
	key   uint64
	pairs string
	// ref is the store's reference, updated when the store gives a new one.
	ref atomic.Uint64
}

func shapeKey(symbols []byte, nseries, nrefs int) uint64 {
	return keyHash(keyHash(xxhash.Sum64(symbols), uint64(nseries)), uint64(nrefs))
}

// find returns the known shape of a batch, or nil.
func (c *shapes) find(symbols []byte, refs []uint32, spans []wireSpan) *shape {
	key := shapeKey(symbols, len(spans), len(refs))
	c.mu.RLock()
	sh := c.m[key]
	c.mu.RUnlock()
	if sh == nil || len(sh.ends) != len(spans) || !bytes.Equal(sh.symbols, symbols) || !slices.Equal(sh.refs, refs) {
		return nil
	}
	for i, sp := range spans {
		if sh.ends[i] != sp.r1 {
			return nil
		}
	}
	return sh
}

// learn keeps the shape of a batch whose every series is out (resolved).
func (c *shapes) learn(symbols []byte, refs []uint32, spans []wireSpan, out []Series) {
	sh := &shape{symbols: bytes.Clone(symbols), refs: slices.Clone(refs), ends: make([]int, len(spans)), series: make([]shapeSeries, len(out))}
	for i, sp := range spans {
		sh.ends[i] = sp.r1
		s := &sh.series[i]
		s.lbls, s.key, s.pairs = out[i].Labels, out[i].key, out[i].pairs
		s.ref.Store(uint64(out[i].Ref))
	}
	key := shapeKey(symbols, len(spans), len(refs))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.series+len(out) > maxShapeSeries {
		c.m, c.series = map[uint64]*shape{}, 0
	}
	if old := c.m[key]; old != nil {
		c.series -= len(old.series)
	}
	c.m[key] = sh
	c.series += len(out)
}
