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
// the store's series reference, keyed by a hash of the pushed label pairs
// (as sent: in the client's order, before validation). A hit skips label
// validation, sorting, building the labels and the store's series lookup,
// which is most of the cost of ingesting a series seen before.
type RefCache struct {
	shards [cacheShards]cacheShard
	shapes shapes
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[uint64]cacheEntry
}

type cacheEntry struct {
	// pairs is the pushed pairs' encoding (name 0xff value 0xff ...), to
	// verify a hit without trusting the hash.
	pairs string
	lbls  labels.Labels
	ref   storage.SeriesRef
}

// NewRefCache returns an empty cache, safe for concurrent use.
func NewRefCache() *RefCache {
	c := &RefCache{}
	for i := range c.shards {
		c.shards[i].m = map[uint64]cacheEntry{}
	}
	return c
}

// symHash is the hash of one symbol; a batch hashes each symbol once and
// keys its series by combining the hashes of their pairs.
func symHash(b []byte) uint64 { return xxhash.Sum64(b) }

// keyHash folds the hashes of a series' pairs (name, value, name, ...) into
// its cache key, in order; 0 is never returned (it means "no key").
func keyHash(h, sym uint64) uint64 {
	h ^= sym
	h *= 0x9e3779b97f4a7c15
	h ^= h >> 29
	return h
}

const keySeed = 0x2545f4914f6cdd1d

func finishKey(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}

// pairsEncoding is the verification string of pairs given as symbols.
func pairsEncoding(sym func(uint32) string, refs []uint32) string {
	n := 0
	for _, r := range refs {
		n += len(sym(r)) + 1
	}
	b := make([]byte, 0, n)
	for _, r := range refs {
		b = append(b, sym(r)...)
		b = append(b, 0xff)
	}
	return string(b)
}

// pairsMatch reports whether enc is the encoding of the pairs refs.
func pairsMatch[S []byte | string](enc string, syms []S, refs []uint32) bool {
	for _, r := range refs {
		s := syms[r]
		if len(enc) < len(s)+1 || enc[:len(s)] != string(s) || enc[len(s)] != 0xff {
			return false
		}
		enc = enc[len(s)+1:]
	}
	return enc == ""
}

// lookup returns the cached labels and ref of the pairs refs over syms,
// verifying the entry really is those pairs (no false hit on a collision).
func lookup[S []byte | string](c *RefCache, key uint64, syms []S, refs []uint32) (cacheEntry, bool) {
	sh := &c.shards[key%cacheShards]
	sh.mu.RLock()
	e, ok := sh.m[key]
	sh.mu.RUnlock()
	if !ok || !pairsMatch(e.pairs, syms, refs) {
		return cacheEntry{}, false
	}
	return e, true
}

func (c *RefCache) store(key uint64, pairs string, lbls labels.Labels, ref storage.SeriesRef) {
	sh := &c.shards[key%cacheShards]
	sh.mu.Lock()
	if len(sh.m) >= maxPerShard {
		clear(sh.m)
	}
	sh.m[key] = cacheEntry{pairs: pairs, lbls: lbls, ref: ref}
	sh.mu.Unlock()
}
