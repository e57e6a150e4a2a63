package store

import (
	"container/heap"
	"context"
	"fmt"
	"sort"

	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	bolt "go.etcd.io/bbolt"
)

// Cursor is a position in time order: records strictly after it (in the
// query's order) come next.
type Cursor struct {
	Time int64
	Seq  uint64
}

// Query says what to return.
type Query struct {
	Filter *filter.Filter
	// Limit is the page size (at least 1).
	Limit int
	// Ascending is oldest first; the default is newest first.
	Ascending bool
	// After resumes a previous page.
	After *Cursor
}

// Stats tells what a query cost.
type Stats struct {
	RecordsScanned uint64
	BytesScanned   uint64
	BlocksScanned  uint64
}

// before reports whether (t1,s1) comes before (t2,s2) in the query order.
func (q *Query) before(t1 int64, s1 uint64, t2 int64, s2 uint64) bool {
	if q.Ascending {
		return t1 < t2 || t1 == t2 && s1 < s2
	}
	return t1 > t2 || t1 == t2 && s1 > s2
}

// resultHeap keeps the best records with the worst at the root.
type resultHeap struct {
	q    *Query
	recs []record.Record
}

func (h *resultHeap) Len() int { return len(h.recs) }
func (h *resultHeap) Less(i, j int) bool {
	a, b := &h.recs[i], &h.recs[j]
	return h.q.before(b.Time, b.Seq, a.Time, a.Seq)
}
func (h *resultHeap) Swap(i, j int) { h.recs[i], h.recs[j] = h.recs[j], h.recs[i] }
func (h *resultHeap) Push(x any)    { h.recs = append(h.recs, x.(record.Record)) }
func (h *resultHeap) Pop() any {
	r := h.recs[len(h.recs)-1]
	h.recs = h.recs[:len(h.recs)-1]
	return r
}

// candidates returns the blocks that may hold matches, in the order they
// should be read for q.
func (s *Store) candidates(q *Query) []*BlockMeta {
	f := q.Filter
	var out []*BlockMeta
	for _, m := range s.Blocks() {
		if m.LevelMask&f.LevelMask == 0 || !f.OverlapsTime(m.MinTime, m.MaxTime) || !f.MatchStream(m.Source, m.Labels) {
			continue
		}
		if c := q.After; c != nil {
			if q.Ascending && m.MaxTime < c.Time || !q.Ascending && m.MinTime > c.Time {
				continue
			}
		}
		out = append(out, m)
	}
	if q.Ascending {
		sort.SliceStable(out, func(i, j int) bool { return out[i].MinTime < out[j].MinTime })
	} else {
		sort.SliceStable(out, func(i, j int) bool { return out[i].MaxTime > out[j].MaxTime })
	}
	return out
}

// Query returns up to q.Limit matching records in order and, when more
// match, the cursor of the last one returned.
func (s *Store) Query(ctx context.Context, q Query) ([]record.Record, *Cursor, Stats, error) {
	if q.Limit < 1 {
		q.Limit = 1
	}
	f := q.Filter
	var st Stats
	h := &resultHeap{q: &q}
	want := q.Limit + 1
	cands := s.candidates(&q)
	var scanErr error
	err := s.db.View(func(tx *bolt.Tx) error {
		bb := tx.Bucket(bucketBlocks)
		get := func(m *BlockMeta) []byte { return bb.Get(idKey(m.ID)) }
		n := 0
		scanBlocks(f, cands, get, func(r blockResult) bool {
			if n++; n%16 == 0 && ctx.Err() != nil {
				scanErr = ctx.Err()
				return false
			}
			m := r.meta
			if h.Len() >= want {
				w := &h.recs[0]
				if q.Ascending && m.MinTime > w.Time || !q.Ascending && m.MaxTime < w.Time {
					return false
				}
			}
			if r.err != nil {
				scanErr = r.err
				return false
			}
			st.BlocksScanned++
			st.BytesScanned += uint64(m.RawBytes)
			st.RecordsScanned += uint64(m.Count)
			v := r.v
			for _, ci := range r.cands {
				i := int(ci)
				t, seq := v.times[i], v.seqs[i]
				if !f.MatchTime(t) {
					continue
				}
				if c := q.After; c != nil && !q.before(c.Time, c.Seq, t, seq) {
					continue
				}
				if h.Len() >= want {
					w := &h.recs[0]
					if !q.before(t, seq, w.Time, w.Seq) {
						continue
					}
				}
				if f.TraceID != "" && v.traceID(i) != f.TraceID {
					continue
				}
				if f.HasText() && !f.MatchMessageOnly(v.message(i)) && (v.metadata[i] == nil || !f.MatchText(nil, v.metadataOf(i))) {
					continue
				}
				heap.Push(h, v.record(i))
				if h.Len() > want {
					heap.Pop(h)
				}
			}
			return true
		})
		return scanErr
	})
	if err != nil {
		return nil, nil, st, fmt.Errorf("query: %w", err)
	}
	out := h.recs
	sort.Slice(out, func(i, j int) bool { return q.before(out[i].Time, out[i].Seq, out[j].Time, out[j].Seq) })
	var next *Cursor
	if len(out) > q.Limit {
		out = out[:q.Limit]
		last := out[len(out)-1]
		next = &Cursor{Time: last.Time, Seq: last.Seq}
	}
	return out, next, st, nil
}

// Scan calls fn for every record matching f, block by block in storage
// order, until fn returns false.
func (s *Store) Scan(ctx context.Context, f *filter.Filter, fn func(*record.Record) bool) (Stats, error) {
	var st Stats
	q := Query{Filter: f, Ascending: true}
	cands := s.candidates(&q)
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID })
	var scanErr error
	err := s.db.View(func(tx *bolt.Tx) error {
		bb := tx.Bucket(bucketBlocks)
		get := func(m *BlockMeta) []byte { return bb.Get(idKey(m.ID)) }
		n := 0
		scanBlocks(f, cands, get, func(r blockResult) bool {
			if n++; n%16 == 0 && ctx.Err() != nil {
				scanErr = ctx.Err()
				return false
			}
			if r.err != nil {
				scanErr = r.err
				return false
			}
			st.BlocksScanned++
			st.BytesScanned += uint64(r.meta.RawBytes)
			st.RecordsScanned += uint64(r.meta.Count)
			v := r.v
			for _, ci := range r.cands {
				i := int(ci)
				if !f.MatchTime(v.times[i]) {
					continue
				}
				if f.TraceID != "" && v.traceID(i) != f.TraceID {
					continue
				}
				if f.HasText() && !f.MatchMessageOnly(v.message(i)) && (v.metadata[i] == nil || !f.MatchText(nil, v.metadataOf(i))) {
					continue
				}
				rec := v.record(i)
				if !fn(&rec) {
					return false
				}
			}
			return true
		})
		return scanErr
	})
	if err != nil {
		return st, fmt.Errorf("scan: %w", err)
	}
	return st, nil
}
