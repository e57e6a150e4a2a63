package logship_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/logship"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/logaggregator"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// aggregator runs a real log-aggregator on a fixed loopback address so it
// can be stopped and started again where clients expect it.
type aggregator struct {
	t       *testing.T
	nats    *natstest.Server
	dataDir string
	addr    string
	stop    func()
}

func newAggregator(t *testing.T) *aggregator {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	a := &aggregator{t: t, nats: natstest.Start(t, ""), dataDir: t.TempDir(), addr: addr}
	a.start()
	t.Cleanup(func() { a.down() })
	return a
}

func (a *aggregator) start() {
	t := a.t
	svc, err := logaggregator.New(logaggregator.Config{DataDir: a.dataDir, CommitInterval: 20 * time.Millisecond}, logaggregator.Deps{JetStream: a.nats.JetStream})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := svc.Run(ctx); err != nil {
			t.Errorf("aggregator: %v", err)
		}
	}()
	<-svc.Ready()
	var lis net.Listener
	for range 50 { // the port may linger briefly after a stop
		if lis, err = net.Listen("tcp", a.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = gs.Serve(lis)
	}()
	a.stop = func() {
		svc.Drain()
		gs.Stop()
		cancel()
		wg.Wait()
	}
}

func (a *aggregator) down() {
	if a.stop != nil {
		a.stop()
		a.stop = nil
	}
}

func (a *aggregator) client(t *testing.T) lav1.LogAggregatorServiceClient {
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.5, MaxDelay: 300 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return lav1.NewLogAggregatorServiceClient(conn)
}

// lines returns how often each message of source is stored.
func lines(t *testing.T, c lav1.LogAggregatorServiceClient, source string) map[string]int {
	t.Helper()
	out := map[string]int{}
	req := &lav1.QueryLogsRequest{Sources: []string{source}, PageSize: 10000, Since: durationpb.New(time.Hour)}
	for {
		resp, err := c.QueryLogs(t.Context(), req, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			out[r.GetMessage()]++
		}
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func waitLines(t *testing.T, c lav1.LogAggregatorServiceClient, source string, want int, within time.Duration) map[string]int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := lines(t, c, source)
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runShipper(t *testing.T, s *logship.Shipper) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func TestHandlerShipsAndTees(t *testing.T) {
	agg := newAggregator(t)
	c := agg.client(t)
	s, err := logship.New(logship.Config{Source: "deployer", Labels: map[string]string{"instance": "i1"}, SpoolDir: t.TempDir(), Level: slog.LevelDebug}, c)
	if err != nil {
		t.Fatal(err)
	}
	runShipper(t, s)
	var stderr bytes.Buffer
	log := slog.New(s.Handler(slog.NewTextHandler(&stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Debug("debug only shipped")
	log.With("app", "shop").WithGroup("http").Error("request failed", "status", 503, slog.Group("peer", "addr", "10.0.0.1"))
	log.Log(context.Background(), slog.LevelError+4, "fatal thing")
	log.Info(strings.Repeat("x", 70000))

	got := waitLines(t, c, "deployer", 4, 5*time.Second)
	if len(got) != 4 {
		t.Fatalf("shipped %d lines: %v", len(got), got)
	}
	resp, err := c.QueryLogs(t.Context(), &lav1.QueryLogsRequest{Sources: []string{"deployer"}, Contains: "request failed"})
	if err != nil || len(resp.GetRecords()) != 1 {
		t.Fatalf("query: %v %v", resp, err)
	}
	r := resp.GetRecords()[0]
	md := r.GetMetadata()
	if r.GetLevel() != lav1.LogLevel_LOG_LEVEL_ERROR || md["app"] != "shop" || md["http.status"] != "503" || md["http.peer.addr"] != "10.0.0.1" || r.GetLabels()["instance"] != "i1" {
		t.Fatalf("record %v", r)
	}
	fatal, _ := c.QueryLogs(t.Context(), &lav1.QueryLogsRequest{Sources: []string{"deployer"}, Levels: []lav1.LogLevel{lav1.LogLevel_LOG_LEVEL_FATAL}})
	if len(fatal.GetRecords()) != 1 {
		t.Fatalf("fatal: %v", fatal)
	}
	long, _ := c.QueryLogs(t.Context(), &lav1.QueryLogsRequest{Sources: []string{"deployer"}, Regex: "^x+$"})
	if len(long.GetRecords()) != 1 || !long.GetRecords()[0].GetTruncated() || long.GetRecords()[0].GetOriginalSize() != 70000 {
		t.Fatalf("long line: %v", long)
	}
	// The tee saw what its own level allows.
	out := stderr.String()
	if strings.Contains(out, "debug only") || !strings.Contains(out, "request failed") || !strings.Contains(out, "http.status=503") {
		t.Fatalf("stderr handler output:\n%s", out)
	}
}

// TestAggregatorDownTenSecondsLosesNothing: a service logs steadily while
// the aggregator is down for 10 s; logging never blocks, and once it is back
// every line is stored exactly once.
func TestAggregatorDownTenSecondsLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s outage")
	}
	agg := newAggregator(t)
	c := agg.client(t)
	s, err := logship.New(logship.Config{Source: "healthchecker", SpoolDir: t.TempDir(), FlushInterval: 50 * time.Millisecond, SendTimeout: time.Second}, c)
	if err != nil {
		t.Fatal(err)
	}
	runShipper(t, s)
	log := slog.New(s.Handler(nil))
	n := 0
	logFor := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			for range 20 {
				start := time.Now()
				log.Info(fmt.Sprintf("line %d", n), "n", n)
				if took := time.Since(start); took > 50*time.Millisecond {
					t.Errorf("logging blocked for %v", took)
				}
				n++
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	logFor(500 * time.Millisecond)
	agg.down()
	logFor(10 * time.Second)
	if st := s.Stats(); st.Spooled == 0 {
		t.Fatalf("nothing spooled while the aggregator was down: %+v", st)
	}
	agg.start()
	logFor(500 * time.Millisecond)
	got := waitLines(t, c, "healthchecker", n, 20*time.Second)
	for i := range n {
		if got[fmt.Sprintf("line %d", i)] != 1 {
			t.Fatalf("line %d stored %d times (%d lines logged, %d distinct stored, stats %+v)", i, got[fmt.Sprintf("line %d", i)], n, len(got), s.Stats())
		}
	}
	if st := s.Stats(); st.Dropped != 0 || st.Sent != uint64(n) {
		t.Fatalf("stats %+v, logged %d", st, n)
	}
}

// TestSpoolSurvivesShipperRestart: batches spooled by a stopped shipper are
// delivered by the next one on the same directory, once.
func TestSpoolSurvivesShipperRestart(t *testing.T) {
	agg := newAggregator(t)
	c := agg.client(t)
	dir := t.TempDir()
	agg.down()
	s1, err := logship.New(logship.Config{Source: "monitor", SpoolDir: dir, SendTimeout: 200 * time.Millisecond}, c)
	if err != nil {
		t.Fatal(err)
	}
	stop := runShipper(t, s1)
	log := slog.New(s1.Handler(nil))
	for i := range 300 {
		log.Warn(fmt.Sprintf("pending %d", i))
	}
	stop() // writes the queue to the spool
	if st := s1.Stats(); st.Spooled != 300 {
		t.Fatalf("spooled %+v", st)
	}
	agg.start()
	s2, err := logship.New(logship.Config{Source: "monitor", SpoolDir: dir}, c)
	if err != nil {
		t.Fatal(err)
	}
	runShipper(t, s2)
	got := waitLines(t, c, "monitor", 300, 10*time.Second)
	for i := range 300 {
		if got[fmt.Sprintf("pending %d", i)] != 1 {
			t.Fatalf("line %d stored %d times", i, got[fmt.Sprintf("pending %d", i)])
		}
	}
}

// TestBoundedWhenNothingRuns: without Run, or with a full spool, records
// are dropped and counted rather than block the caller.
func TestBoundedWhenNothingRuns(t *testing.T) {
	s, err := logship.New(logship.Config{Source: "x", SpoolDir: t.TempDir(), QueueSize: 100}, unreachable{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(s.Handler(nil))
	start := time.Now()
	for i := range 10000 {
		log.Info("line", "i", i)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("10000 records took %v", took)
	}
	if st := s.Stats(); st.Dropped != 9900 || st.Spooled != 100 {
		t.Fatalf("stats %+v", st)
	}

	s2, err := logship.New(logship.Config{Source: "x", SpoolDir: t.TempDir(), MaxSpoolBytes: 4096, BatchRecords: 10, FlushInterval: 10 * time.Millisecond}, unreachable{})
	if err != nil {
		t.Fatal(err)
	}
	stop := runShipper(t, s2)
	log2 := slog.New(s2.Handler(nil))
	for i := range 2000 {
		log2.Info("some line with a little padding", "i", i)
		if i%100 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	stop()
	st := s2.Stats()
	if st.Dropped == 0 || st.Spooled == 0 || st.Dropped+st.Spooled != 2000 {
		t.Fatalf("bounded spool stats %+v", st)
	}
}

type unreachable struct{}

func (unreachable) Ingest(context.Context, *lav1.IngestRequest, ...grpc.CallOption) (*lav1.IngestResponse, error) {
	return nil, fmt.Errorf("connection refused")
}
