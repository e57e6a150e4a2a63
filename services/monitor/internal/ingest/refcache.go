package ingest

import (
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

const (
	cacheShards = 64
	// maxPerShard bounds a shard; a full shard is emptied and refills.
	maxPerShard = 1 << 15
)

// RefCache remembers, for series pushed before, their validated labels and
// the store's series reference, keyed by a hash of the pushed label pairs.
// A hit skips label validation, sorting and the store's series lookup,
// which is most of the cost of ingesting a series seen before.
type RefCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[uint64]cacheEntry
}

type cacheEntry struct {
	lbls labels.Labels
	ref  storage.SeriesRef
}

// NewRefCache returns an empty cache, safe for concurrent use.
func NewRefCache() *RefCache {
	c := &RefCache{}
	for i := range c.shards {
		c.shards[i].m = map[uint64]cacheEntry{}
	}
	return c
}

// pairsKey hashes label pairs given as symbol indexes; ok is false when a
// pair has an empty value or an index out of range (such series always go
// through full validation).
func pairsKey(syms []string, refs []uint32) (uint64, bool) {
	var d xxhash.Digest
	d.Reset()
	sep := []byte{0xff}
	n := uint32(len(syms))
	for j := 0; j+1 < len(refs); j += 2 {
		if refs[j] >= n || refs[j+1] >= n || syms[refs[j+1]] == "" {
			return 0, false
		}
		_, _ = d.WriteString(syms[refs[j]])
		_, _ = d.Write(sep)
		_, _ = d.WriteString(syms[refs[j+1]])
		_, _ = d.Write(sep)
	}
	return d.Sum64(), true
}

// lookup returns the cached labels and ref of the pairs, verifying the
// labels really are the pairs (no false hit on a hash collision).
func (c *RefCache) lookup(key uint64, syms []string, refs []uint32) (labels.Labels, storage.SeriesRef, bool) {
	sh := &c.shards[key%cacheShards]
	sh.mu.RLock()
	e, ok := sh.m[key]
	sh.mu.RUnlock()
	if !ok || e.lbls.Len() != len(refs)/2 {
		return labels.EmptyLabels(), 0, false
	}
	for j := 0; j+1 < len(refs); j += 2 {
		if e.lbls.Get(syms[refs[j]]) != syms[refs[j+1]] {
			return labels.EmptyLabels(), 0, false
		}
	}
	return e.lbls, e.ref, true
}

func (c *RefCache) store(key uint64, lbls labels.Labels, ref storage.SeriesRef) {
	sh := &c.shards[key%cacheShards]
	sh.mu.Lock()
	if len(sh.m) >= maxPerShard {
		clear(sh.m)
	}
	sh.m[key] = cacheEntry{lbls: lbls, ref: ref}
	sh.mu.Unlock()
}
