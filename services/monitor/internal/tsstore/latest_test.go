package tsstore

import (
	"context"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reduceOne is the value of the series host=h of metric m by red over
// (at-window, at], and whether it has one.
func reduceOne(t *testing.T, r *Reader, red Reduction, at int64, window time.Duration, host string) (float64, bool) {
	t.Helper()
	out, err := r.Reduce(context.Background(), red, at-window.Milliseconds(), at,
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"), labels.MustNewMatcher(labels.MatchEqual, "host", host))
	if err != nil {
		t.Fatal(err)
	}
	switch len(out) {
	case 0:
		return 0, false
	case 1:
		return out[0].F, true
	}
	t.Fatalf("%d values for one series", len(out))
	return 0, false
}

func TestLatestSampleCache(t *testing.T) {
	s := openStore(t)
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	sec := func(n int) int64 { return base + int64(n)*1000 }
	m := func(host string) labels.Labels { return labels.FromStrings("__name__", "m", "host", host) }
	appendAll := func(f func(app storage.Appender) error) {
		t.Helper()
		app := s.Appender(context.Background())
		if err := f(app); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	appendAll(func(app storage.Appender) error {
		for i := range 10 {
			for _, h := range []string{"float", "stale", "hist"} {
				if _, err := app.Append(0, m(h), sec(i), float64(i)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	appendAll(func(app storage.Appender) error {
		if _, err := app.Append(0, m("stale"), sec(10), math.Float64frombits(value.StaleNaN)); err != nil {
			return err
		}
		_, err := app.AppendHistogram(0, m("hist"), sec(10), &histogram.Histogram{Count: 1, Sum: 1, Schema: 0, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}}, nil)
		return err
	})
	// A rolled-back append changes nothing.
	app := s.Appender(context.Background())
	if _, err := app.Append(0, m("float"), sec(11), 1000); err != nil {
		t.Fatal(err)
	}
	if err := app.Rollback(); err != nil {
		t.Fatal(err)
	}

	r := s.NewReader()
	cases := []struct {
		name   string
		red    Reduction
		at     int64
		window time.Duration
		host   string
		want   float64
		ok     bool
		cached bool
	}{
		{"newest sample, from the cache", LastOverTime, sec(20), 15 * time.Second, "float", 9, true, true},
		{"bare selector, from the cache", Latest, sec(12), 5 * time.Minute, "float", 9, true, true},
		{"newest sample before the window: none (no chunk there)", LastOverTime, sec(30), 15 * time.Second, "float", 0, false, false},
		{"evaluated in the past: the chunks", LastOverTime, sec(5), 3 * time.Second, "float", 5, true, false},
		{"staleness marker last: last_over_time looks past it", LastOverTime, sec(20), 15 * time.Second, "stale", 9, true, false},
		{"staleness marker last: a bare selector sees none", Latest, sec(20), 5 * time.Minute, "stale", 0, false, false},
		{"histogram last: the chunks", LastOverTime, sec(20), 15 * time.Second, "hist", 0, false, false},
	}
	for _, c := range cases {
		hits := r.CacheHits
		got, ok := reduceOne(t, r, c.red, c.at, c.window, c.host)
		if ok != c.ok || got != c.want {
			t.Errorf("%s: %v %v, want %v %v", c.name, got, ok, c.want, c.ok)
		}
		if cached := r.CacheHits > hits; cached != c.cached {
			t.Errorf("%s: from the cache %v, want %v", c.name, cached, c.cached)
		}
	}

	// A histogram poisons the series for good, even when floats follow.
	appendAll(func(app storage.Appender) error {
		_, err := app.Append(0, m("hist"), sec(12), 42)
		return err
	})
	hits := r.CacheHits
	if got, ok := reduceOne(t, r, LastOverTime, sec(20), 15*time.Second, "hist"); !ok || got != 42 {
		t.Errorf("floats after a histogram: %v %v, want 42", got, ok)
	}
	if r.CacheHits != hits {
		t.Error("a series that had a histogram was answered from the cache")
	}
}

// Readers never see a torn pair: every value is the time of its own sample
// (v = t), and in the window asked for.
func TestLatestSampleCacheUnderConcurrentAppends(t *testing.T) {
	s := openStore(t)
	const series = 64
	start := time.Now().UnixMilli()
	ls := make([]labels.Labels, series)
	for i := range ls {
		ls[i] = labels.FromStrings("__name__", "m", "host", "h"+strconv.Itoa(i))
	}
	var (
		wg        sync.WaitGroup
		committed atomic.Int64 // the newest time committed for every series
	)
	committed.Store(start - 1)
	stop := make(chan struct{})
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ts := start; ; ts++ {
			select {
			case <-stop:
				return
			default:
			}
			app := s.Appender(context.Background())
			for _, l := range ls {
				if _, err := app.Append(0, l, ts, float64(ts)); err != nil {
					errs <- err
					return
				}
			}
			if err := app.Commit(); err != nil {
				errs <- err
				return
			}
			committed.Store(ts)
		}
	}()
	r := s.NewReader()
	deadline := time.Now().Add(time.Second)
	reads := 0
	for time.Now().Before(deadline) {
		// At the newest committed time (the cache answers, unless a commit
		// lands meanwhile), or before it (the chunks answer).
		maxt := committed.Load() - int64(reads%3)
		out, err := r.Reduce(context.Background(), LastOverTime, maxt-1000, maxt, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out {
			if v.F > float64(maxt) || v.F <= float64(maxt-1000) {
				t.Fatalf("value %v outside (%d, %d]: a torn read", v.F, maxt-1000, maxt)
			}
		}
		reads++
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if r.CacheHits == 0 {
		t.Fatal("no read came from the cache")
	}
	t.Logf("%d reads, %d series from the cache", reads, r.CacheHits)
}

// Pages of series long gone are dropped as new pages are made.
func TestLatestSweepsOldPages(t *testing.T) {
	var l latest
	old := []sample{{ref: 1, t: 1000, v: 1}}
	l.record(old, nil)
	now := int64(1000) + sweepAge + 1
	for i := 1; i <= sweepEvery; i++ {
		l.record([]sample{{ref: storage.SeriesRef(i * pageSize), t: now, v: 2}}, nil)
	}
	if _, _, ok := l.get(1); ok {
		t.Fatal("a page whose newest sample is older than the sweep age was kept")
	}
	if _, v, ok := l.get(storage.SeriesRef(sweepEvery * pageSize)); !ok || v != 2 {
		t.Fatal("a live page was dropped")
	}
}
