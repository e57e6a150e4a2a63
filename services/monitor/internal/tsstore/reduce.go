package tsstore

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tombstones"
)

// Reduction is how one value is taken from the samples a series has in a
// window (mint, maxt], the way PromQL takes it. Staleness markers and native
// histogram samples never give a value.
type Reduction int

const (
	// Latest is the newest sample, as an instant vector selector with a
	// lookback of maxt-mint sees it: none when that sample is a staleness
	// marker (the series ended) or a histogram.
	Latest Reduction = iota
	// LastOverTime is the newest sample that is not a staleness marker, as
	// last_over_time: none when that sample is a histogram.
	LastOverTime
	// MinOverTime is the least float sample, as min_over_time: NaN only
	// when every sample is NaN; histograms are ignored.
	MinOverTime
	// MaxOverTime is the greatest float sample, as max_over_time.
	MaxOverTime
)

// String names r as the PromQL it mirrors.
func (r Reduction) String() string {
	switch r {
	case Latest:
		return "latest"
	case LastOverTime:
		return "last_over_time"
	case MinOverTime:
		return "min_over_time"
	case MaxOverTime:
		return "max_over_time"
	}
	return fmt.Sprintf("Reduction(%d)", int(r))
}

// SeriesValue is the value of one series.
type SeriesValue struct {
	Labels labels.Labels
	F      float64
}

// Reader reduces matching series straight from the TSDB, without the PromQL
// engine, into buffers it reuses from call to call. When the window lies in
// the head block (the usual case for alert rules) it reads the head's index
// and chunks directly: no per-series allocation beyond the chunk handle.
// Otherwise it reads through a querier over blocks and head. A Reader is
// for one goroutine at a time.
type Reader struct {
	store   *Store
	builder labels.ScratchBuilder
	chks    []chunks.Meta
	it      chunkenc.Iterator
	fh      *histogram.FloatHistogram
	h       *histogram.Histogram
	out     []SeriesValue

	// HeadReads and QuerierReads count the calls each way answered, and
	// CacheHits the series whose newest sample came from the store's
	// latest-sample cache, for tests and benchmarks.
	HeadReads, QuerierReads, CacheHits int
}

// NewReader returns a Reader of s.
func (s *Store) NewReader() *Reader { return &Reader{store: s} }

// LookbackDelta is how far back an instant vector selector of the store's
// PromQL engine looks for a series' latest sample.
const LookbackDelta = lookbackDelta

// Reduce returns the value by red of every series matching ms that has one
// in the window (mint, maxt], in no particular order. The labels are the
// series' own; the slice is valid until the next call.
func (r *Reader) Reduce(ctx context.Context, red Reduction, mint, maxt int64, ms ...*labels.Matcher) ([]SeriesValue, error) {
	r.out = r.out[:0]
	if maxt <= mint {
		return r.out, nil
	}
	lo := mint + 1 // the window is closed: [lo, maxt]
	done, err := r.reduceHead(ctx, red, lo, maxt, ms)
	if err != nil || done {
		return r.out, err
	}
	r.out = r.out[:0]
	return r.out, r.reduceQuerier(ctx, red, lo, maxt, ms)
}

// reduceHead reads the head block when it holds all of [lo, maxt]; done
// is false when it cannot (blocks on disk overlap the window, out-of-order
// data, or a head truncation in progress).
func (r *Reader) reduceHead(ctx context.Context, red Reduction, lo, maxt int64, ms []*labels.Matcher) (bool, error) {
	db := r.store.db
	head := db.Head()
	if lo < head.MinTime() {
		for _, b := range db.Blocks() {
			if b.OverlapsClosedInterval(lo, maxt) {
				return false, nil
			}
		}
	}
	if overlaps(lo, maxt, head.MinOOOTime(), head.MaxOOOTime()) {
		return false, nil
	}
	rh := tsdb.NewRangeHead(head, lo, maxt)
	// Taking the chunk reader registers the read with the head's isolation,
	// which a truncation waits on; one already under way sends the read to
	// the querier, as the DB's own querier does.
	cr, err := rh.Chunks()
	if err != nil {
		return false, fmt.Errorf("tsstore: head chunks: %w", err)
	}
	defer cr.Close()
	if closeIt, getNew, _ := head.IsQuerierCollidingWithTruncation(lo, maxt); closeIt || getNew {
		return false, nil
	}
	ir, err := rh.Index()
	if err != nil {
		return false, fmt.Errorf("tsstore: head index: %w", err)
	}
	defer ir.Close()
	tr, err := rh.Tombstones()
	if err != nil {
		return false, fmt.Errorf("tsstore: head tombstones: %w", err)
	}
	anyDeleted := tr.Total() > 0
	p, err := tsdb.PostingsForMatchers(ctx, ir, ms...)
	if err != nil {
		return false, fmt.Errorf("tsstore: postings: %w", err)
	}
	r.HeadReads++
	for n := 0; p.Next(); n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return true, err
			}
		}
		ref := p.At()
		if err := ir.Series(ref, &r.builder, &r.chks); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				continue // garbage-collected since the postings were read
			}
			return true, fmt.Errorf("tsstore: series %d: %w", ref, err)
		}
		if len(r.chks) == 0 {
			continue
		}
		var deleted tombstones.Intervals
		if anyDeleted {
			if deleted, err = tr.Get(ref); err != nil {
				return true, fmt.Errorf("tsstore: tombstones of series %d: %w", ref, err)
			}
		}
		// The newest sample, when the cache knows it and it is in the
		// window, answers Latest and LastOverTime (a staleness marker
		// needs the chunks: last_over_time looks past it).
		if !anyDeleted && (red == Latest || red == LastOverTime) {
			if t, v, ok := r.store.latest.get(ref); ok && t <= maxt && !value.IsStaleNaN(v) {
				r.CacheHits++
				if t >= lo {
					r.out = append(r.out, SeriesValue{Labels: r.builder.Labels(), F: v})
				}
				continue
			}
		}
		acc := reducer{red: red}
		if red == MinOverTime || red == MaxOverTime {
			for _, m := range r.chks {
				if err := r.scanChunk(cr, m, lo, maxt, deleted, &acc); err != nil {
					return true, err
				}
			}
		} else {
			// Newest chunk first: the first chunk with a sample that counts
			// holds the answer.
			for i := len(r.chks) - 1; i >= 0 && !acc.seen; i-- {
				if err := r.scanChunk(cr, r.chks[i], lo, maxt, deleted, &acc); err != nil {
					return true, err
				}
			}
		}
		if f, ok := acc.result(); ok {
			r.out = append(r.out, SeriesValue{Labels: r.builder.Labels(), F: f})
		}
	}
	if err := p.Err(); err != nil {
		return true, fmt.Errorf("tsstore: postings: %w", err)
	}
	return true, nil
}

// scanChunk feeds acc the samples of one chunk in [lo, maxt] that are not
// deleted, oldest first.
func (r *Reader) scanChunk(cr tsdb.ChunkReader, m chunks.Meta, lo, maxt int64, deleted tombstones.Intervals, acc *reducer) error {
	chk, iterable, err := cr.ChunkOrIterable(m)
	if errors.Is(err, storage.ErrNotFound) {
		// A series being created as we read (listed, no sample committed
		// yet) or collected since: nothing of it to count.
		return nil
	}
	if err != nil {
		return fmt.Errorf("tsstore: chunk %d: %w", m.Ref, err)
	}
	if chk != nil {
		r.it = chk.Iterator(r.it)
	} else {
		r.it = iterable.Iterator(r.it)
	}
	return r.scan(r.it, lo, maxt, deleted, acc)
}

// scan feeds acc the samples of it in [lo, maxt] outside deleted.
func (r *Reader) scan(it chunkenc.Iterator, lo, maxt int64, deleted tombstones.Intervals, acc *reducer) error {
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		t := it.AtT()
		if t < lo {
			continue
		}
		if t > maxt {
			break
		}
		if len(deleted) > 0 && isDeleted(t, deleted) {
			continue
		}
		switch vt {
		case chunkenc.ValFloat:
			_, f := it.At()
			acc.float(f)
		case chunkenc.ValHistogram:
			if acc.red == LastOverTime {
				_, r.h = it.AtHistogram(r.h)
				acc.histogram(value.IsStaleNaN(r.h.Sum))
			} else {
				acc.histogram(false)
			}
		case chunkenc.ValFloatHistogram:
			if acc.red == LastOverTime {
				_, r.fh = it.AtFloatHistogram(r.fh)
				acc.histogram(value.IsStaleNaN(r.fh.Sum))
			} else {
				acc.histogram(false)
			}
		}
	}
	return it.Err()
}

// reduceQuerier reads through the DB's querier: any time range, blocks
// included.
func (r *Reader) reduceQuerier(ctx context.Context, red Reduction, lo, maxt int64, ms []*labels.Matcher) error {
	q, err := r.store.db.Querier(lo, maxt)
	if err != nil {
		return fmt.Errorf("tsstore: querier: %w", err)
	}
	defer q.Close()
	r.QuerierReads++
	// No trimming: scan keeps to [lo, maxt] itself, and the querier's
	// trimming of chunks with deleted samples panics in
	// tombstones.Intervals.Add when it trims both ends.
	set := q.Select(ctx, false, &storage.SelectHints{Start: lo, End: maxt, DisableTrimming: true}, ms...)
	for n := 0; set.Next(); n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		s := set.At()
		r.it = s.Iterator(r.it)
		acc := reducer{red: red}
		if err := r.scan(r.it, lo, maxt, nil, &acc); err != nil {
			return fmt.Errorf("tsstore: read %s: %w", s.Labels(), err)
		}
		if f, ok := acc.result(); ok {
			r.out = append(r.out, SeriesValue{Labels: s.Labels(), F: f})
		}
	}
	if err := set.Err(); err != nil {
		return fmt.Errorf("tsstore: select: %w", err)
	}
	return nil
}

// reducer takes samples oldest first.
type reducer struct {
	red Reduction
	// seen: a sample that decides the value was taken.
	seen bool
	// hist: that sample is a histogram (no float value).
	hist bool
	f    float64
}

func (a *reducer) float(f float64) {
	switch a.red {
	case Latest:
		a.seen, a.hist, a.f = true, false, f
	case LastOverTime:
		if !value.IsStaleNaN(f) {
			a.seen, a.hist, a.f = true, false, f
		}
	case MinOverTime:
		// As min_over_time: the first sample, then any lower one or any
		// one after a NaN.
		if !value.IsStaleNaN(f) && (!a.seen || f < a.f || math.IsNaN(a.f)) {
			a.seen, a.f = true, f
		}
	case MaxOverTime:
		if !value.IsStaleNaN(f) && (!a.seen || f > a.f || math.IsNaN(a.f)) {
			a.seen, a.f = true, f
		}
	}
}

func (a *reducer) histogram(stale bool) {
	switch a.red {
	case Latest:
		a.seen, a.hist = true, true
	case LastOverTime:
		if !stale {
			a.seen, a.hist = true, true
		}
	}
}

func (a *reducer) result() (float64, bool) {
	if !a.seen || a.hist || (a.red == Latest && value.IsStaleNaN(a.f)) {
		return 0, false
	}
	return a.f, true
}

func isDeleted(t int64, in tombstones.Intervals) bool {
	for _, iv := range in {
		if iv.InBounds(t) {
			return true
		}
	}
	return false
}

func overlaps(lo, hi, mint, maxt int64) bool { return mint <= hi && lo <= maxt }
