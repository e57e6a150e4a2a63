package router_test

import (
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/router"
)

// The router's overhead: the same loopback backend measured directly and
// through a router in front of it, in the same run. Clients keep their
// connections alive; every benchmark reports req/s and the p50/p99
// latency of its requests next to ns/op.
//
//	go test -run '^$' -bench . -benchtime 2s ./services/deployer/internal/router/

func BenchmarkDirect(b *testing.B)    { benchTarget(b, benchBackend(b)) }
func BenchmarkViaRouter(b *testing.B) { benchTarget(b, benchRouter(b, benchBackend(b))) }

func benchTarget(b *testing.B, url string) {
	b.Run("sequential", func(b *testing.B) {
		c := benchClient(b)
		lat := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			start := time.Now()
			benchGet(b, c, url)
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("parallel", func(b *testing.B) {
		c := benchClient(b)
		var mu sync.Mutex
		var all []time.Duration
		b.RunParallel(func(pb *testing.PB) {
			lat := make([]time.Duration, 0, 1<<14)
			for pb.Next() {
				start := time.Now()
				benchGet(b, c, url)
				lat = append(lat, time.Since(start))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
		reportLatency(b, all)
	})
}

// BenchmarkLoad is a small bounded load generator: loadWorkers clients in
// a closed loop, loadPerWorker requests each per iteration, to the backend
// directly and through the router.
func BenchmarkLoad(b *testing.B) {
	const loadWorkers, loadPerWorker = 8, 250
	backend := benchBackend(b)
	for _, tc := range []struct {
		name string
		url  func() string
	}{
		{"direct", func() string { return backend }},
		{"router", func() string { return benchRouter(b, backend) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			url := tc.url()
			c := benchClient(b)
			var all []time.Duration
			for b.Loop() {
				var mu sync.Mutex
				var wg sync.WaitGroup
				for range loadWorkers {
					wg.Go(func() {
						lat := make([]time.Duration, 0, loadPerWorker)
						for range loadPerWorker {
							start := time.Now()
							benchGet(b, c, url)
							lat = append(lat, time.Since(start))
						}
						mu.Lock()
						all = append(all, lat...)
						mu.Unlock()
					})
				}
				wg.Wait()
			}
			reportLatency(b, all)
			// One iteration is a whole batch; time per request compares.
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(len(all)), "ns/op")
		})
	}
}

// reportLatency adds req/s and the p50/p99 of the requests measured.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[int(f*float64(len(lat)-1))]) / float64(time.Microsecond)
	}
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(q(0.50), "p50-us")
	b.ReportMetric(q(0.99), "p99-us")
}

var benchBody = []byte("hello from the backend\n")

// benchBackend serves a small fixed body on loopback.
func benchBackend(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(benchBody)
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	b.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return "http://" + l.Addr().String() + "/"
}

// benchRouter puts a router with one revision, the given backend, in front.
func benchRouter(b *testing.B, backendURL string) string {
	b.Helper()
	r := newRouter(b, router.Config{App: "bench"}, nil)
	host := backendURL[len("http://") : len(backendURL)-1]
	if err := r.SetBackends(1, []string{host}); err != nil {
		b.Fatal(err)
	}
	return r.url + "/"
}

var benchFailures atomic.Int64

func benchClient(b *testing.B) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(func() {
		tr.CloseIdleConnections()
		if n := benchFailures.Swap(0); n > 0 {
			b.Errorf("%d requests failed", n)
		}
	})
	return &http.Client{Transport: tr}
}

func benchGet(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		benchFailures.Add(1)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		benchFailures.Add(1)
	}
}
