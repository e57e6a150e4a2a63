package router

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuantileWithinBucketResolution(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"uniform 1-10ms", func(r *rand.Rand) time.Duration {
			return time.Millisecond + time.Duration(r.Int64N(int64(9*time.Millisecond)))
		}},
		{"exponential mean 2ms", func(r *rand.Rand) time.Duration { return time.Duration(r.ExpFloat64() * float64(2*time.Millisecond)) }},
		{"sub-bucket 10µs", func(r *rand.Rand) time.Duration { return 10 * time.Microsecond }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var s revStats
			samples := make([]time.Duration, 20000)
			for i := range samples {
				samples[i] = tc.gen(rng)
				s.observe(samples[i], false)
			}
			slices.Sort(samples)
			h := s.histogram()
			for _, q := range []float64{0.5, 0.9, 0.99} {
				exact := samples[int(q*float64(len(samples)))-1]
				got := h.quantile(q)
				// One bucket is 2^(1/4) wide; below the first bound, 25µs.
				if math.Abs(float64(got-exact)) > 0.19*float64(exact)+float64(histBase) {
					t.Errorf("q%.2f = %v, exact %v", q, got, exact)
				}
			}
		})
	}
}

func TestSnapshotSub(t *testing.T) {
	var s revStats
	for range 100 {
		s.observe(time.Millisecond, false)
	}
	before := newSnapshot(1, time.Now(), s.requests.Load(), s.errors.Load(), 0, s.histogram())
	for range 10 {
		s.observe(100*time.Millisecond, true)
	}
	after := newSnapshot(1, time.Now(), s.requests.Load(), s.errors.Load(), 3, s.histogram())
	w := after.Sub(before)
	if w.Requests != 10 || w.Errors != 10 || w.ErrorRate() != 1 || w.InFlight != 3 {
		t.Errorf("window = %d requests, %d errors, rate %v, %d in flight; want 10, 10, 1, 3", w.Requests, w.Errors, w.ErrorRate(), w.InFlight)
	}
	if w.P50 < 81*time.Millisecond || w.P50 > 100*time.Millisecond || w.Mean != 100*time.Millisecond {
		t.Errorf("window p50 %v mean %v; want about 100ms (the whole snapshot's p50 is %v)", w.P50, w.Mean, after.P50)
	}
	if z := before.Sub(after); z.Requests != 0 || z.Errors != 0 {
		t.Errorf("reversed Sub = %+v, want zero counters", z)
	}
}

func TestPickFollowsWeights(t *testing.T) {
	r1, r2 := &revision{id: 1}, &revision{id: 2}
	a, b, c := newBackend("a:1", r1), newBackend("b:1", r1), newBackend("c:1", r2)
	tb := &table{routes: []route{{rev: r1, backends: []*backend{a, b}, weight: 90}, {rev: r2, backends: []*backend{c}, weight: 10}}, total: 100}
	counts := map[*backend]int{}
	const n = 100000
	for range n {
		counts[tb.pick(RoundRobin, nil)]++
	}
	if got := float64(counts[c]) / n; math.Abs(got-0.1) > 0.01 {
		t.Errorf("revision 2 got %.3f of picks, want 0.10", got)
	}
	if d := counts[a] - counts[b]; d < -1 || d > 1 {
		t.Errorf("round robin within revision 1: %d vs %d", counts[a], counts[b])
	}

	// Least in flight avoids the busy backend; exclude skips one.
	for range 3 {
		a.acquire()
	}
	for range 10 {
		if got := tb.routes[0].pick(LeastInFlight, nil); got != b {
			t.Fatalf("least in flight picked %s with 3 in flight", got.addr)
		}
	}
	if got := tb.routes[0].pick(LeastInFlight, b); got != a {
		t.Errorf("with b excluded picked %v, want a", got)
	}
	if got := tb.pick(LeastInFlight, c); got == c {
		t.Error("pick returned the excluded backend")
	}

	// An ejected backend is only picked when nothing else is left.
	b.eject(time.Minute)
	if got := tb.routes[0].pick(LeastInFlight, nil); got != a {
		t.Errorf("with b ejected picked %s, want a", got.addr)
	}
	if got := tb.routes[0].pick(LeastInFlight, a); got != b {
		t.Errorf("with a excluded and b ejected picked %v, want b as the last resort", got)
	}
}

// TestDrainNeverMissesARequest races acquires against a drain: when drain
// reports the backend idle, nothing may be in flight and no acquire may
// succeed afterwards.
func TestDrainNeverMissesARequest(t *testing.T) {
	for range 50 {
		b := newBackend("a:1", &revision{id: 1})
		var inside atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if b.acquire() {
						inside.Add(1)
						inside.Add(-1)
						b.release()
					}
				}
			})
		}
		time.Sleep(10 * time.Microsecond)
		cut, _ := b.drain(time.Second, nil)
		if cut != 0 || inside.Load() != 0 || b.acquire() {
			t.Fatalf("drain returned with cut=%d, %d inside, or a backend still accepting", cut, inside.Load())
		}
		close(stop)
		wg.Wait()
	}
}

func BenchmarkPick(b *testing.B) {
	r1, r2 := &revision{id: 1}, &revision{id: 2}
	tb := &table{routes: []route{
		{rev: r1, backends: []*backend{newBackend("a:1", r1), newBackend("b:1", r1), newBackend("c:1", r1)}, weight: 80},
		{rev: r2, backends: []*backend{newBackend("d:1", r2)}, weight: 20},
	}, total: 100}
	var p atomic.Pointer[table]
	p.Store(tb)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			be := p.Load().pick(LeastInFlight, nil)
			if be.acquire() {
				be.release()
			}
		}
	})
}
