package healthload

import (
	"math"
	"sync/atomic"
	"testing"
	"time"
)

// Bucket layout of lagHistogram: 1 µs wide below 2 ms, 100 µs wide below
// 200 ms, 10 ms wide below 20 s; anything longer lands in the last bucket.
const (
	fineLimit   = 2000       // µs
	midLimit    = 200_000    // µs
	coarseLimit = 20_000_000 // µs
	midStep     = 100        // µs
	coarseStep  = 10_000     // µs
	midStart    = fineLimit
	coarseStart = midStart + (midLimit-fineLimit)/midStep
	lagBuckets  = coarseStart + (coarseLimit-midLimit)/coarseStep + 1
)

// lagHistogram counts schedule lags while active; it is cheap and safe to
// call from every check goroutine at once.
type lagHistogram struct {
	active atomic.Bool
	max    atomic.Int64 // µs
	counts [lagBuckets]atomic.Int64
}

func lagBucket(us int64) int {
	switch {
	case us < 0:
		return 0
	case us < fineLimit:
		return int(us)
	case us < midLimit:
		return midStart + int((us-fineLimit)/midStep)
	case us < coarseLimit:
		return coarseStart + int((us-midLimit)/coarseStep)
	}
	return lagBuckets - 1
}

// bucketUpper is the exclusive upper bound of bucket i in µs.
func bucketUpper(i int) int64 {
	switch {
	case i < midStart:
		return int64(i) + 1
	case i < coarseStart:
		return fineLimit + int64(i-midStart+1)*midStep
	case i < lagBuckets-1:
		return midLimit + int64(i-coarseStart+1)*coarseStep
	}
	return math.MaxInt64
}

// observe records one check's lag if the histogram is active.
func (h *lagHistogram) observe(d time.Duration) {
	if !h.active.Load() {
		return
	}
	us := d.Microseconds()
	h.counts[lagBucket(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

func (h *lagHistogram) count() int64 {
	var n int64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// quantile returns the upper bound of the bucket holding quantile q, capped
// at the largest lag seen.
func (h *lagHistogram) quantile(q float64) time.Duration {
	total := h.count()
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= max(rank, 1) {
			return time.Duration(min(bucketUpper(i), h.max.Load())) * time.Microsecond
		}
	}
	return time.Duration(h.max.Load()) * time.Microsecond
}

func TestLagHistogram(t *testing.T) {
	var h lagHistogram
	h.observe(time.Second) // inactive: not counted
	h.active.Store(true)
	for i := range 1000 {
		h.observe(time.Duration(i) * 10 * time.Microsecond) // 0 .. 9.99 ms
	}
	h.observe(3 * time.Second)
	h.observe(-time.Millisecond)
	h.observe(time.Hour)
	tests := []struct {
		q        float64
		min, max time.Duration
	}{
		{0.5, 4900 * time.Microsecond, 5100 * time.Microsecond},
		{0.99, 9800 * time.Microsecond, 10 * time.Millisecond},
		{1, time.Hour, time.Hour},
	}
	for _, tt := range tests {
		if got := h.quantile(tt.q); got < tt.min || got > tt.max {
			t.Errorf("quantile(%v) = %v, want %v..%v", tt.q, got, tt.min, tt.max)
		}
	}
	if got := h.count(); got != 1003 {
		t.Errorf("count = %d, want 1003", got)
	}
	for _, us := range []int64{0, 1999, 2000, 199_999, 200_000, coarseLimit - 1} {
		if i := lagBucket(us); bucketUpper(i) <= us || (i > 0 && bucketUpper(i-1) > us) {
			t.Errorf("lag %dµs in bucket %d with bounds (%d, %d]", us, i, bucketUpper(i-1), bucketUpper(i))
		}
	}
}
