package tsstore

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
)

// latest keeps, for each head series appended through the Store, its newest
// committed float sample, so a rule asking for a series' last value reads
// two words instead of decoding the series' head chunk (which costs an
// allocation per series in the TSDB's chunk reader; at 10k series that
// garbage, not the reading, made an evaluation's tail twice its median).
//
// Entries live in pages of pageSize indexed by series ref (the head hands
// refs out in increasing order and never reuses one). Writers hold mu;
// readers take no lock: an entry's time doubles as its sequence, set to
// busy while its value changes, so a reader that sees the same time before
// and after reading the value has a consistent pair. An entry that is
// unset, or poisoned (a histogram sample or a failed commit touched the
// series), is unknown: the reader falls back to the chunks.
type latest struct {
	// bufs recycles appenders' pending samples.
	bufs sync.Pool

	mu    sync.Mutex
	pages atomic.Pointer[[]*latestPage]
	// pagesSinceSweep counts pages made since pages untouched for a while
	// were dropped.
	pagesSinceSweep int
}

const (
	pageBits = 12
	pageSize = 1 << pageBits

	unset    = math.MinInt64     // nothing recorded
	busy     = math.MinInt64 + 1 // a writer is changing the value
	poisoned = math.MinInt64 + 2 // not to be trusted again
	// sweepEvery pages made, pages whose newest sample is older than
	// sweepAge before the newest sample recorded are dropped: their series
	// are gone from the head (it keeps a few hours).
	sweepEvery = 64
	sweepAge   = int64(24 * 60 * 60 * 1000)
)

type latestPage struct {
	maxT atomic.Int64
	e    [pageSize]latestEntry
}

type latestEntry struct {
	t atomic.Int64
	v atomic.Uint64
}

func newLatestPage() *latestPage {
	p := &latestPage{}
	p.maxT.Store(unset)
	for i := range p.e {
		p.e[i].t.Store(unset)
	}
	return p
}

// sample is one append waiting for its commit.
type sample struct {
	ref storage.SeriesRef
	t   int64
	v   float64
}

// record keeps committed samples; poison marks series whose newest sample
// the cache cannot know.
func (l *latest) record(ss []sample, poison []storage.SeriesRef) {
	if len(ss) == 0 && len(poison) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Samples of one commit mostly come in runs of one page: its newest
	// time is published once per run.
	var (
		p    *latestPage
		pi   = -1
		pmax = int64(unset)
	)
	flush := func() {
		if p != nil && pmax > p.maxT.Load() {
			p.maxT.Store(pmax)
		}
	}
	for _, s := range ss {
		if i := int(s.ref >> pageBits); i != pi {
			flush()
			p, pi, pmax = l.page(s.ref), i, unset
		}
		e := &p.e[s.ref&(pageSize-1)]
		cur := e.t.Load()
		if cur == poisoned || (cur != unset && cur > s.t) {
			continue
		}
		e.t.Store(busy)
		e.v.Store(math.Float64bits(s.v))
		e.t.Store(s.t)
		pmax = max(pmax, s.t)
	}
	flush()
	for _, ref := range poison {
		l.page(ref).e[ref&(pageSize-1)].t.Store(poisoned)
	}
}

// page returns ref's page, making it (and the table) as needed; l.mu held.
func (l *latest) page(ref storage.SeriesRef) *latestPage {
	i := int(ref >> pageBits)
	var table []*latestPage
	if t := l.pages.Load(); t != nil {
		table = *t
	}
	if i < len(table) && table[i] != nil {
		return table[i]
	}
	grown := make([]*latestPage, max(len(table), i+1))
	copy(grown, table)
	p := newLatestPage()
	grown[i] = p
	l.pagesSinceSweep++
	if l.pagesSinceSweep >= sweepEvery {
		l.pagesSinceSweep = 0
		sweep(grown, i)
	}
	l.pages.Store(&grown)
	return p
}

// sweep drops the pages, other than keep, whose newest sample is far older
// than the newest recorded anywhere.
func sweep(table []*latestPage, keep int) {
	newest := int64(unset)
	for _, p := range table {
		if p != nil {
			newest = max(newest, p.maxT.Load())
		}
	}
	if newest == unset {
		return
	}
	for i, p := range table {
		if p != nil && i != keep && p.maxT.Load() < newest-sweepAge {
			table[i] = nil
		}
	}
}

// get returns the newest committed float sample of ref, when known.
func (l *latest) get(ref storage.SeriesRef) (int64, float64, bool) {
	t := l.pages.Load()
	if t == nil {
		return 0, 0, false
	}
	i := int(ref >> pageBits)
	if i >= len(*t) || (*t)[i] == nil {
		return 0, 0, false
	}
	e := &(*t)[i].e[ref&(pageSize-1)]
	t1 := e.t.Load()
	if t1 == unset || t1 == busy || t1 == poisoned {
		return 0, 0, false
	}
	v := e.v.Load()
	if e.t.Load() != t1 {
		return 0, 0, false
	}
	return t1, math.Float64frombits(v), true
}

// appender records what it appends in the store's latest-sample cache once
// the transaction commits. It spells out every method of storage.Appender
// (no embedding), so a method added to the interface upstream fails to
// compile here instead of appending behind the cache's back.
type appender struct {
	app    storage.Appender
	latest *latest
	ss     []sample
	poison []storage.SeriesRef
}

func (a *appender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	r, err := a.app.Append(ref, l, t, v)
	if err == nil {
		a.ss = append(a.ss, sample{ref: r, t: t, v: v})
	}
	return r, err
}

func (a *appender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	r, err := a.app.AppendHistogram(ref, l, t, h, fh)
	if err == nil {
		a.poison = append(a.poison, r)
	}
	return r, err
}

func (a *appender) AppendHistogramSTZeroSample(ref storage.SeriesRef, l labels.Labels, t, st int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	r, err := a.app.AppendHistogramSTZeroSample(ref, l, t, st, h, fh)
	if err == nil {
		a.poison = append(a.poison, r)
	}
	return r, err
}

func (a *appender) AppendSTZeroSample(ref storage.SeriesRef, l labels.Labels, t, st int64) (storage.SeriesRef, error) {
	r, err := a.app.AppendSTZeroSample(ref, l, t, st)
	if err == nil {
		a.ss = append(a.ss, sample{ref: r, t: st, v: 0})
	}
	return r, err
}

func (a *appender) AppendExemplar(ref storage.SeriesRef, l labels.Labels, e exemplar.Exemplar) (storage.SeriesRef, error) {
	return a.app.AppendExemplar(ref, l, e)
}

func (a *appender) UpdateMetadata(ref storage.SeriesRef, l labels.Labels, m metadata.Metadata) (storage.SeriesRef, error) {
	return a.app.UpdateMetadata(ref, l, m)
}

func (a *appender) SetOptions(opts *storage.AppendOptions) { a.app.SetOptions(opts) }

func (a *appender) Commit() error {
	defer a.release()
	if err := a.app.Commit(); err != nil {
		// Part of it may be in the head: nothing it touched is known.
		for _, s := range a.ss {
			a.poison = append(a.poison, s.ref)
		}
		a.latest.record(nil, a.poison)
		return err
	}
	a.latest.record(a.ss, a.poison)
	return nil
}

func (a *appender) Rollback() error {
	defer a.release()
	return a.app.Rollback()
}

// release hands the pending samples' buffer back for the next appender.
func (a *appender) release() {
	if cap(a.ss) > 0 && cap(a.ss) <= 1<<20 {
		buf := a.ss[:0]
		a.latest.bufs.Put(&buf)
	}
	a.ss, a.poison = nil, nil
}

// newAppender wraps app; its buffer comes from l's pool.
func (l *latest) newAppender(app storage.Appender) *appender {
	a := &appender{app: app, latest: l}
	if b, ok := l.bufs.Get().(*[]sample); ok {
		a.ss = *b
	}
	return a
}
