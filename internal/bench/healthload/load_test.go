package healthload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/services/healthchecker"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	// loopbackPorts is how many server ports the targets are spread over.
	loopbackPorts = 100
	checkInterval = time.Second
	checkTimeout  = time.Second
	// defaultWarmup lets the first checks (spread over one interval by
	// jitter) and their pending→passing transitions settle before measuring.
	defaultWarmup = checkInterval + time.Second
	// warmupEnv overrides defaultWarmup, e.g. to measure the service once
	// every target's result history is full (historySize intervals).
	warmupEnv = "OPSUITE_HEALTHLOAD_WARMUP"
	// createWorkers bounds concurrent CreateTarget calls while loading targets.
	createWorkers = 32
	// profileEnv names a directory for CPU and heap profiles of the
	// measurement windows.
	profileEnv = "OPSUITE_HEALTHLOAD_PROFILE"
)

// loadCase is one rate of the sweep: targets checked every checkInterval,
// measured over window per benchmark iteration.
type loadCase struct {
	targets int
	window  time.Duration
}

func (lc loadCase) name() string { return fmt.Sprintf("targets=%d", lc.targets) }

// loadCases are the rates measured: the goal rate with a long window, then
// higher rates, closer together around where this 2-core machine runs out,
// with shorter windows to keep the whole run to about two minutes.
func loadCases() []loadCase {
	return []loadCase{
		{targets: 10_000, window: 10 * time.Second},
		{targets: 15_000, window: 5 * time.Second},
		{targets: 20_000, window: 5 * time.Second},
		{targets: 25_000, window: 5 * time.Second},
		{targets: 30_000, window: 5 * time.Second},
	}
}

// BenchmarkCheckerLoad runs the health-checker service with HTTP targets on
// loopback servers in another process and measures one window per iteration.
func BenchmarkCheckerLoad(b *testing.B) {
	for _, lc := range loadCases() {
		b.Run(lc.name(), func(b *testing.B) {
			srv := startLoopbackServers(b, loopbackPorts)
			m := openMeter(b, srv.pid)
			lag := &lagHistogram{}
			failures := startService(b, targetURLs(srv.addrs, lc.targets), lag.observe)
			reportWindows(b, measureWindows(b, b.N, lc.window, m, lag, failures), lc.targets)
		})
	}
}

// BenchmarkBareLoopLoad is the baseline: the same targets and rates checked
// by a bare net/http loop.
func BenchmarkBareLoopLoad(b *testing.B) {
	for _, lc := range loadCases() {
		b.Run(lc.name(), func(b *testing.B) {
			srv := startLoopbackServers(b, loopbackPorts)
			m := openMeter(b, srv.pid)
			lag := &lagHistogram{}
			loop := startBareLoop(b, targetURLs(srv.addrs, lc.targets), lag.observe)
			reportWindows(b, measureWindows(b, b.N, lc.window, m, lag, loop.failed.Load), lc.targets)
			if msg := loop.firstErr.Load(); msg != nil {
				b.Logf("first failed check: %s", *msg)
			}
		})
	}
}

// TestLoadSmoke runs both checkers briefly at a low rate, so the benchmark
// harness is exercised by plain go test.
func TestLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NATS and a server process; skipped with -short")
	}
	const targets = 200
	checkers := []struct {
		name  string
		start func(testing.TB, []string, func(time.Duration)) func() int64
	}{
		{"service", startService},
		{"bare", func(tb testing.TB, urls []string, lag func(time.Duration)) func() int64 {
			return startBareLoop(tb, urls, lag).failed.Load
		}},
	}
	for _, c := range checkers {
		t.Run(c.name, func(t *testing.T) {
			srv := startLoopbackServers(t, 4)
			m := openMeter(t, srv.pid)
			lag := &lagHistogram{}
			failures := c.start(t, targetURLs(srv.addrs, targets), lag.observe)
			w := measureWindows(t, 1, checkInterval, m, lag, failures)
			if w.failed != 0 {
				t.Errorf("%d checks failed", w.failed)
			}
			if rate := w.checksPerSecond(); rate < 0.9*targets || rate > 1.1*targets {
				t.Errorf("%.0f checks/s, want about %d", rate, targets)
			}
		})
	}
}

// targetURLs spreads n targets round-robin over the server addresses.
func targetURLs(addrs []string, n int) []string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("http://%s/health/%d", addrs[i%len(addrs)], i)
	}
	return urls
}

// startService runs the health-checker on an embedded NATS in a temporary
// directory, creates one HTTP target per URL through CreateTarget, and
// returns a counter of failed checks. Everything stops when tb ends.
func startService(tb testing.TB, urls []string, lag func(time.Duration)) (failures func() int64) {
	tb.Helper()
	prepareCase(tb)
	ns, err := natsembed.Start(natsembed.Config{DataDir: tb.TempDir()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Shutdown)
	nc, err := ns.Connect("bench")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "bench"}, nil)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc, err := healthchecker.New(healthchecker.Config{MaxConcurrentChecks: 1024}, healthchecker.Deps{
		Registerer:  reg,
		JetStream:   js,
		Events:      bus,
		ScheduleLag: lag,
	})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = svc.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			tb.Errorf("health-checker run: %v", runErr)
		}
	})
	select {
	case <-svc.Ready():
	case <-done:
		tb.Fatalf("health-checker stopped before ready: %v", runErr)
	case <-time.After(30 * time.Second):
		tb.Fatal("health-checker not ready within 30s")
	}

	began := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(createWorkers)
	for i, u := range urls {
		g.Go(func() error {
			_, err := svc.CreateTarget(gctx, &hcv1.CreateTargetRequest{Target: &hcv1.Target{
				Name:     fmt.Sprintf("t-%05d", i),
				Interval: durationpb.New(checkInterval),
				Timeout:  durationpb.New(checkTimeout),
				Check:    &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: u}},
			}})
			if err != nil {
				return fmt.Errorf("create target %d: %w", i, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("created %d targets in %s", len(urls), time.Since(began).Round(time.Millisecond))
	return func() int64 { return failedChecks(tb, reg) }
}

// failedChecks sums the service's checks_total over outcomes other than pass.
func failedChecks(tb testing.TB, g prometheus.Gatherer) int64 {
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "opsuite_healthchecker_checks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() != hcv1.CheckOutcome_CHECK_OUTCOME_PASS.String() {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int64(n)
}

// startBareLoop runs the baseline checker over urls until tb ends.
func startBareLoop(tb testing.TB, urls []string, lag func(time.Duration)) *bareLoop {
	tb.Helper()
	prepareCase(tb)
	loop := newBareLoop(checkInterval, checkTimeout, lag)
	ctx, cancel := context.WithCancel(context.Background())
	loop.start(ctx, urls)
	tb.Cleanup(func() {
		cancel()
		loop.wait()
	})
	return loop
}

// prepareCase raises the open-file limit and returns to the OS what
// earlier cases left, so the resident size measured next belongs to the case
// at hand.
func prepareCase(tb testing.TB) {
	if n, err := raiseFileLimit(); err != nil {
		tb.Fatal(err)
	} else if n < 4096 {
		tb.Logf("open-file limit is %d; high rates may fail for want of descriptors", n)
	}
	runtime.GC()
	debug.FreeOSMemory()
}

// windows is what measureWindows saw.
type windows struct {
	wall, cpu, serverCPU time.Duration
	otherCPU             time.Duration // everything else on the machine
	checks, failed       int64
	allocB, allocN       uint64 // Go heap bytes and objects allocated
	fds                  int
	p50, p99, max        time.Duration
	rss                  int64
	heap                 uint64
}

func (w windows) checksPerSecond() float64 { return float64(w.checks) / w.wall.Seconds() }

// measureWindows waits out the warm-up, then measures n windows of length
// window: checks started and their lag, CPU of this process and of the
// server process, failed checks; and, at the end, resident and live heap
// size.
func measureWindows(tb testing.TB, n int, window time.Duration, m *meter, lag *lagHistogram, failures func() int64) windows {
	tb.Helper()
	time.Sleep(warmup(tb))
	defer startProfile(tb)()
	var (
		w   windows
		err error
	)
	for range n {
		f0 := failures()
		u0, err0 := m.sample()
		lag.active.Store(true)
		time.Sleep(window)
		lag.active.Store(false)
		u1, err1 := m.sample()
		if err := errors.Join(err0, err1); err != nil {
			tb.Fatal(err)
		}
		w.failed += failures() - f0
		w.wall += u1.wall.Sub(u0.wall)
		w.cpu += u1.cpu - u0.cpu
		w.serverCPU += u1.serverCPU - u0.serverCPU
		w.allocB += u1.allocB - u0.allocB
		w.allocN += u1.allocN - u0.allocN
		w.otherCPU += (u1.hostBusy - u0.hostBusy) - (u1.cpu - u0.cpu) - (u1.serverCPU - u0.serverCPU)
	}
	if w.fds, err = m.openFiles(); err != nil {
		tb.Fatal(err)
	}
	w.checks = lag.count()
	w.p50, w.p99 = lag.quantile(0.50), lag.quantile(0.99)
	w.max = time.Duration(lag.max.Load()) * time.Microsecond
	if w.rss, err = m.residentBytes(); err != nil {
		tb.Fatal(err)
	}
	w.heap = liveHeapBytes()
	return w
}

// warmup is $OPSUITE_HEALTHLOAD_WARMUP or defaultWarmup.
func warmup(tb testing.TB) time.Duration {
	v := os.Getenv(warmupEnv)
	if v == "" {
		return defaultWarmup
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		tb.Fatalf("%s=%q: want a duration such as 100s", warmupEnv, v)
	}
	return d
}

// reportWindows reports w as the benchmark's metrics; targets is how many
// targets were checked, each once per checkInterval.
func reportWindows(b *testing.B, w windows, targets int) {
	const mb = 1 << 20
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	secs := w.wall.Seconds()
	b.ReportMetric(0, "ns/op") // a fixed window per iteration: time per op says nothing
	b.ReportMetric(w.checksPerSecond(), "checks/s")
	b.ReportMetric(100*w.checksPerSecond()/(float64(targets)/checkInterval.Seconds()), "sched-%")
	b.ReportMetric(w.cpu.Seconds()/secs, "cpu-cores")
	b.ReportMetric(ms(w.p50), "p50-lag-ms")
	b.ReportMetric(ms(w.p99), "p99-lag-ms")
	b.ReportMetric(ms(w.max), "max-lag-ms")
	b.ReportMetric(float64(w.rss)/mb, "rss-MB")
	b.ReportMetric(float64(w.heap)/mb, "heap-MB")
	if w.checks > 0 {
		b.ReportMetric(float64(w.allocB)/float64(w.checks), "B/check")
		b.ReportMetric(float64(w.allocN)/float64(w.checks), "allocs/check")
	}
	b.ReportMetric(float64(w.failed), "failed")
	b.ReportMetric(float64(w.fds), "fds")
	b.ReportMetric(w.serverCPU.Seconds()/secs, "srv-cores")
	// CPU used by anything else on the machine: more than a little means the
	// numbers above were measured on a busy host.
	b.ReportMetric(max(w.otherCPU.Seconds()/secs, 0), "other-cores")
}

// startProfile writes a CPU profile of the measurement windows, and a heap
// profile as of their end, to the directory named by
// $OPSUITE_HEALTHLOAD_PROFILE, if set.
func startProfile(tb testing.TB) (stop func()) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}
	}
	base := filepath.Join(dir, strings.NewReplacer("/", "_", "=", "-").Replace(tb.Name()))
	create := func(name string) *os.File {
		f, err := os.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		return f
	}
	cpu := create(base + ".cpu.pprof")
	if err := pprof.StartCPUProfile(cpu); err != nil {
		tb.Logf("no CPU profile of the window: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		heap := create(base + ".heap.pprof")
		err := errors.Join(cpu.Close(), pprof.WriteHeapProfile(heap), heap.Close())
		if err != nil {
			tb.Error(err)
		}
	}
}
