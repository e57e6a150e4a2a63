package router

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// Latency buckets: four per doubling from 25µs, so a quantile read from
// them is within 19% of the true value, up to about 90s; slower requests
// land in one overflow bucket.
const (
	histBase       = 25 * time.Microsecond
	histPerDouble  = 4
	histBuckets    = 88
	histOverflowAt = histBuckets
)

// histBounds[i] is the upper bound (inclusive) of bucket i in nanoseconds.
var histBounds = func() [histBuckets]int64 {
	var b [histBuckets]int64
	for i := range b {
		b[i] = int64(math.Round(float64(histBase) * math.Pow(2, float64(i)/histPerDouble)))
	}
	return b
}()

func bucketOf(d time.Duration) int {
	i, _ := slices.BinarySearch(histBounds[:], int64(d))
	return i
}

// histogram is a copy of latency counts: one per bucket plus overflow.
type histogram struct {
	counts [histBuckets + 1]uint64
	sum    time.Duration
}

func (h *histogram) total() uint64 {
	var n uint64
	for _, c := range h.counts {
		n += c
	}
	return n
}

// quantile interpolates linearly within the bucket holding rank q.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.total()
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var seen float64
	for i, c := range h.counts {
		if c == 0 || seen+float64(c) < rank {
			seen += float64(c)
			continue
		}
		if i == histOverflowAt {
			return time.Duration(histBounds[histBuckets-1])
		}
		lower := int64(0)
		if i > 0 {
			lower = histBounds[i-1]
		}
		frac := (rank - seen) / float64(c)
		return time.Duration(float64(lower) + frac*float64(histBounds[i]-lower))
	}
	return time.Duration(histBounds[histBuckets-1])
}

// revStats are a revision's live counters, updated by every request.
type revStats struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	sumNanos atomic.Int64
	counts   [histBuckets + 1]atomic.Uint64
}

func (s *revStats) observe(d time.Duration, failed bool) {
	s.requests.Add(1)
	if failed {
		s.errors.Add(1)
	}
	s.sumNanos.Add(int64(d))
	s.counts[bucketOf(d)].Add(1)
}

func (s *revStats) histogram() histogram {
	var h histogram
	for i := range s.counts {
		h.counts[i] = s.counts[i].Load()
	}
	h.sum = time.Duration(s.sumNanos.Load())
	return h
}

// Snapshot is one revision's counters at a moment. Counters only grow, so
// later.Sub(earlier) describes the window between two snapshots: that is
// what canary analysis compares.
type Snapshot struct {
	Revision int64
	At       time.Time
	// Requests is how many requests a backend of the revision answered
	// (the last one tried, when a request was retried).
	Requests uint64
	// Errors counts the requests among them that got a 5xx from the
	// backend, a 502/504 from the router, or a response cut off mid-body.
	Errors uint64
	// InFlight is a gauge at At; Sub keeps the later value.
	InFlight int64
	// Latency from the router receiving a request to the end of the
	// response, over the snapshot's requests (or the window's, after Sub).
	Mean, P50, P90, P99 time.Duration

	latency histogram
}

func newSnapshot(rev int64, at time.Time, requests, errors uint64, inFlight int64, h histogram) Snapshot {
	s := Snapshot{Revision: rev, At: at, Requests: requests, Errors: errors, InFlight: inFlight, latency: h}
	if n := h.total(); n > 0 {
		s.Mean = h.sum / time.Duration(n)
	}
	s.P50, s.P90, s.P99 = h.quantile(0.50), h.quantile(0.90), h.quantile(0.99)
	return s
}

// Sub returns the counters of the window from earlier to s, with the
// latency figures of the requests in that window only.
func (s Snapshot) Sub(earlier Snapshot) Snapshot {
	h := s.latency
	for i := range h.counts {
		h.counts[i] = sub(h.counts[i], earlier.latency.counts[i])
	}
	h.sum = max(h.sum-earlier.latency.sum, 0)
	return newSnapshot(s.Revision, s.At, sub(s.Requests, earlier.Requests), sub(s.Errors, earlier.Errors), s.InFlight, h)
}

// ErrorRate is Errors/Requests, 0 without requests.
func (s Snapshot) ErrorRate() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

// Quantile returns the latency below which a fraction q of the requests
// finished (q in [0,1]).
func (s Snapshot) Quantile(q float64) time.Duration { return s.latency.quantile(q) }

// Totals are the router's counters over every revision, for a rollout to
// report the failed requests during it (later.Sub(earlier)).
type Totals struct {
	At time.Time
	// Requests is every request the router received.
	Requests uint64
	// Failed counts requests whose client got a 5xx status or a response
	// cut off mid-body; the four counters after it break it down.
	Failed uint64
	// NoBackend: answered 503 because no backend was ready.
	NoBackend uint64
	// ProxyErrors: answered 502/504 by the router (the backend could not
	// be reached, did not answer in time, or was cut by a drain).
	ProxyErrors uint64
	// Backend5xx: the backend's own 5xx responses.
	Backend5xx uint64
	// Aborted: the response was cut off after its headers were sent.
	Aborted uint64
	// Retries counts requests sent again to another backend after the
	// connection to the first failed; they are not failures.
	Retries uint64
	// Cut counts requests ended by drain deadlines.
	Cut uint64
}

// Sub returns the counters of the window from earlier to t.
func (t Totals) Sub(earlier Totals) Totals {
	return Totals{
		At:          t.At,
		Requests:    sub(t.Requests, earlier.Requests),
		Failed:      sub(t.Failed, earlier.Failed),
		NoBackend:   sub(t.NoBackend, earlier.NoBackend),
		ProxyErrors: sub(t.ProxyErrors, earlier.ProxyErrors),
		Backend5xx:  sub(t.Backend5xx, earlier.Backend5xx),
		Aborted:     sub(t.Aborted, earlier.Aborted),
		Retries:     sub(t.Retries, earlier.Retries),
		Cut:         sub(t.Cut, earlier.Cut),
	}
}

// totals are the live counters behind Totals.
type totals struct {
	requests, noBackend, proxyErrors, backend5xx, aborted, retries, cut atomic.Uint64
}

func (t *totals) load(at time.Time) Totals {
	out := Totals{
		At:          at,
		Requests:    t.requests.Load(),
		NoBackend:   t.noBackend.Load(),
		ProxyErrors: t.proxyErrors.Load(),
		Backend5xx:  t.backend5xx.Load(),
		Aborted:     t.aborted.Load(),
		Retries:     t.retries.Load(),
		Cut:         t.cut.Load(),
	}
	out.Failed = out.NoBackend + out.ProxyErrors + out.Backend5xx + out.Aborted
	return out
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
