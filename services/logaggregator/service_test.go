package logaggregator_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/logaggregator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// env is one NATS server and data dir shared by successive service runs.
type env struct {
	srv     *natstest.Server
	js      jetstream.JetStream
	bus     *eventbus.Bus
	dataDir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t, "")
	bus, err := eventbus.New(t.Context(), srv.Conn, eventbus.Config{Source: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, js: srv.JetStream, bus: bus, dataDir: t.TempDir()}
}

type instance struct {
	svc    *logaggregator.Service
	client lav1.LogAggregatorServiceClient
	stop   func()
}

func (e *env) start(t *testing.T, cfg logaggregator.Config) *instance {
	t.Helper()
	cfg.DataDir = e.dataDir
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = 20 * time.Millisecond
	}
	svc, err := logaggregator.New(cfg, logaggregator.Deps{JetStream: e.js, Events: e.bus, Deploys: e.bus})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := svc.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-svc.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("service not ready")
	}
	srv := grpctest.Serve(t, svc.Register, grpctest.Options{})
	conn := srv.Conn
	var once sync.Once
	stop := func() {
		once.Do(func() {
			svc.Drain()
			srv.Stop()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return &instance{svc: svc, client: lav1.NewLogAggregatorServiceClient(conn), stop: stop}
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
func dur(d time.Duration) *durationpb.Duration {
	return durationpb.New(d)
}

// waitQuery polls until the query returns want records (indexing is
// asynchronous to the acknowledgement).
func waitQuery(t *testing.T, c lav1.LogAggregatorServiceClient, req *lav1.QueryLogsRequest, want int) *lav1.QueryLogsResponse {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.QueryLogs(t.Context(), req)
		if err != nil {
			t.Fatalf("query %v: %v", req, err)
		}
		if len(resp.GetRecords()) == want {
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %v: %d records, want %d", req, len(resp.GetRecords()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func messages(recs []*lav1.LogRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.GetMessage()
	}
	return out
}

func assertCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("error %v: code %s, want %s", err, status.Code(err), want)
	}
}

// fixture ingests a known set of records: 3 sources, levels, labels.
func fixture(t *testing.T, c lav1.LogAggregatorServiceClient, base time.Time) {
	t.Helper()
	batch := &lav1.LogBatch{
		BatchId: "fixture-1",
		Records: []*lav1.LogRecord{
			{Time: ts(base.Add(1 * time.Second)), Level: lav1.LogLevel_LOG_LEVEL_INFO, Source: "deployer", Message: "rollout started for shop", Labels: map[string]string{"component": "rollout"}},
			{Time: ts(base.Add(2 * time.Second)), Level: lav1.LogLevel_LOG_LEVEL_ERROR, Source: "deployer", Message: "replica shop-7 failed: exit status 2", TraceId: "4BF92F3577B34DA6A3CE929D0E0E4736"},
		},
		Streams: []*lav1.LogStream{
			{Source: "app/shop/shop-v2-1", Labels: map[string]string{"app": "shop", "environment": "prod", "revision": "2"}, Entries: []*lav1.LogEntry{
				{TimeUnixNano: base.Add(3 * time.Second).UnixNano(), Level: lav1.LogLevel_LOG_LEVEL_WARN, Message: "slow request GET /cart took 1200ms"},
				{TimeUnixNano: base.Add(4 * time.Second).UnixNano(), Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "dial tcp 10.0.0.7:5432: connection refused", Metadata: map[string]string{"db.host": "pg-primary"}},
				{TimeUnixNano: base.Add(5 * time.Second).UnixNano(), Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: "GET /healthz 200"},
			}},
			{Source: "app/shop/shop-v1-1", Labels: map[string]string{"app": "shop", "environment": "prod", "revision": "1"}, Entries: []*lav1.LogEntry{
				{TimeUnixNano: base.Add(6 * time.Second).UnixNano(), Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "dial tcp 10.0.0.9:5432: connection refused"},
			}},
		},
	}
	resp, err := c.Ingest(t.Context(), &lav1.IngestRequest{Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccepted() != 6 || resp.GetRejected() != 0 || resp.GetLastSequence() == 0 {
		t.Fatalf("ingest: %v", resp)
	}
}

func TestIngestQueryFiltersAndRestart(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{})
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	fixture(t, inst.client, base)
	all := &lav1.QueryLogsRequest{Since: dur(time.Hour)}
	waitQuery(t, inst.client, all, 6)

	cases := []struct {
		name string
		req  *lav1.QueryLogsRequest
		want []string
	}{
		{"newest first by default", &lav1.QueryLogsRequest{Sources: []string{"app/shop"}}, []string{
			"dial tcp 10.0.0.9:5432: connection refused", "GET /healthz 200", "dial tcp 10.0.0.7:5432: connection refused", "slow request GET /cart took 1200ms"}},
		{"source and min level", &lav1.QueryLogsRequest{Sources: []string{"app/shop/shop-v2-1"}, MinLevel: lav1.LogLevel_LOG_LEVEL_WARN, Order: lav1.TimeOrder_TIME_ORDER_ASCENDING}, []string{
			"slow request GET /cart took 1200ms", "dial tcp 10.0.0.7:5432: connection refused"}},
		{"levels", &lav1.QueryLogsRequest{Levels: []lav1.LogLevel{lav1.LogLevel_LOG_LEVEL_INFO}, Order: lav1.TimeOrder_TIME_ORDER_ASCENDING}, []string{
			"rollout started for shop", "GET /healthz 200"}},
		{"label matchers", &lav1.QueryLogsRequest{Matchers: []string{`app="shop"`, `revision!="2"`}}, []string{"dial tcp 10.0.0.9:5432: connection refused"}},
		{"label regex", &lav1.QueryLogsRequest{Matchers: []string{`component=~"roll.*"`}}, []string{"rollout started for shop"}},
		{"contains", &lav1.QueryLogsRequest{Contains: "connection refused", Order: lav1.TimeOrder_TIME_ORDER_ASCENDING}, []string{
			"dial tcp 10.0.0.7:5432: connection refused", "dial tcp 10.0.0.9:5432: connection refused"}},
		{"contains ignore case", &lav1.QueryLogsRequest{Contains: "GET /HEALTHZ", IgnoreCase: true}, []string{"GET /healthz 200"}},
		{"metadata searchable as text", &lav1.QueryLogsRequest{Contains: "pg-primary"}, []string{"dial tcp 10.0.0.7:5432: connection refused"}},
		{"regex", &lav1.QueryLogsRequest{Regex: `took \d+ms$`}, []string{"slow request GET /cart took 1200ms"}},
		{"trace id, any case", &lav1.QueryLogsRequest{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}, []string{"replica shop-7 failed: exit status 2"}},
		{"time range", &lav1.QueryLogsRequest{StartTime: ts(base.Add(2 * time.Second)), EndTime: ts(base.Add(4 * time.Second)), Order: lav1.TimeOrder_TIME_ORDER_ASCENDING}, []string{
			"replica shop-7 failed: exit status 2", "slow request GET /cart took 1200ms"}},
		{"since excludes older", &lav1.QueryLogsRequest{Since: dur(time.Minute)}, []string{}},
	}
	check := func(t *testing.T, c lav1.LogAggregatorServiceClient) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := c.QueryLogs(t.Context(), tc.req)
				if err != nil {
					t.Fatal(err)
				}
				got := messages(resp.GetRecords())
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf("got %q\nwant %q", got, tc.want)
				}
			})
		}
	}
	check(t, inst.client)

	// Pagination: pages of 2 cover every record once, in order.
	var paged []string
	req := &lav1.QueryLogsRequest{PageSize: 2, Since: dur(time.Hour)}
	for range 10 {
		resp, err := inst.client.QueryLogs(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, messages(resp.GetRecords())...)
		if resp.GetNextPageToken() == "" {
			break
		}
		req = proto.CloneOf(req)
		req.PageToken = resp.GetNextPageToken()
	}
	full := waitQuery(t, inst.client, all, 6)
	if fmt.Sprint(paged) != fmt.Sprint(messages(full.GetRecords())) {
		t.Fatalf("paged %q\nwant %q", paged, messages(full.GetRecords()))
	}
	// A token with a changed query is refused.
	first, err := inst.client.QueryLogs(t.Context(), &lav1.QueryLogsRequest{PageSize: 2, Since: dur(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = inst.client.QueryLogs(t.Context(), &lav1.QueryLogsRequest{PageSize: 2, Since: dur(time.Hour), Contains: "x", PageToken: first.GetNextPageToken()})
	assertCode(t, err, codes.InvalidArgument)

	// Records carry sequence, receive time and labels.
	r := full.GetRecords()[0]
	if r.GetSequence() == 0 || r.GetReceiveTime() == nil || r.GetLabels()["revision"] != "1" {
		t.Fatalf("record %v lacks sequence, receive time or labels", r)
	}

	// Restart on the same data dir and NATS: same answers, nothing twice.
	inst.stop()
	inst2 := e.start(t, logaggregator.Config{})
	check(t, inst2.client)
	waitQuery(t, inst2.client, all, 6)

	// A repeated batch id is acknowledged without being stored again.
	fixtureAgain := &lav1.LogBatch{BatchId: "fixture-1", Records: []*lav1.LogRecord{{Source: "deployer", Message: "x"}}}
	resp, err := inst2.client.Ingest(t.Context(), &lav1.IngestRequest{Batch: fixtureAgain})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetDuplicate() {
		t.Fatalf("repeated batch id not reported duplicate: %v", resp)
	}
	time.Sleep(100 * time.Millisecond)
	waitQuery(t, inst2.client, all, 6)

	// Sources with their volume.
	srcs, err := inst2.client.ListSources(t.Context(), &lav1.ListSourcesRequest{Source: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs.GetSources()) != 2 || srcs.GetSources()[0].GetSource() != "app/shop/shop-v1-1" || srcs.GetSources()[1].GetRecordCount() != 3 {
		t.Fatalf("sources: %v", srcs)
	}
}

func TestNATSIngestion(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{})
	b := &lav1.LogBatch{
		Streams: []*lav1.LogStream{{Labels: map[string]string{"app": "shop"}, Entries: []*lav1.LogEntry{
			{Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: "hello from nats"},
		}}},
		Records: []*lav1.LogRecord{{Message: "explicit source", Source: "pipeline/build/42/test"}},
	}
	data, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	// A forged or corrupt chunk (the form gRPC ingestion stores) is
	// refused whole and skipped; later messages are still indexed.
	forged := []byte{0x00, 'L', 'C', 1, 0, 0x02, 0x01, 0x01, 'x', 0x00, 0x01, 0x03, 0x00, 0x02, 'a', 0xff, 0x00}
	if _, err := e.js.Publish(t.Context(), "opsuite.logs.forged", forged); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(t.Context(), "opsuite.logs.app.shop.shop-v2-1", data); err != nil {
		t.Fatal(err)
	}
	// A body that is not a LogBatch is skipped, not fatal.
	if _, err := e.js.Publish(t.Context(), "opsuite.logs.garbage", []byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	resp := waitQuery(t, inst.client, &lav1.QueryLogsRequest{Sources: []string{"app/shop/shop-v2-1"}}, 1)
	if got := resp.GetRecords()[0]; got.GetMessage() != "hello from nats" || got.GetLabels()["app"] != "shop" {
		t.Fatalf("record %v", got)
	}
	waitQuery(t, inst.client, &lav1.QueryLogsRequest{Sources: []string{"pipeline/build"}}, 1)
	if r, err := inst.client.ListSources(t.Context(), &lav1.ListSourcesRequest{Source: "x"}); err != nil || len(r.GetSources()) != 0 {
		t.Fatalf("forged chunk stored: %v %v", r, err)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{MaxMessageBytes: 1024})
	c := inst.client
	now := time.Now()
	bad := []struct {
		name string
		req  *lav1.QueryLogsRequest
	}{
		{"invalid regex", &lav1.QueryLogsRequest{Regex: "(unclosed"}},
		{"reversed time range", &lav1.QueryLogsRequest{StartTime: ts(now), EndTime: ts(now.Add(-time.Hour))}},
		{"bad matcher", &lav1.QueryLogsRequest{Matchers: []string{"app=shop"}}},
		{"bad matcher regex", &lav1.QueryLogsRequest{Matchers: []string{`app=~"("`}}},
		{"bad level", &lav1.QueryLogsRequest{Levels: []lav1.LogLevel{42}}},
		{"bad trace id", &lav1.QueryLogsRequest{TraceId: "xyz"}},
		{"bad source", &lav1.QueryLogsRequest{Sources: []string{"a//b"}}},
		{"negative page size", &lav1.QueryLogsRequest{PageSize: -1}},
		{"garbage page token", &lav1.QueryLogsRequest{PageToken: "!!"}},
		{"negative since", &lav1.QueryLogsRequest{Since: dur(-time.Second)}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.QueryLogs(t.Context(), tc.req)
			assertCode(t, err, codes.InvalidArgument)
		})
	}
	tail, err := c.TailLogs(t.Context(), &lav1.TailLogsRequest{Regex: "[z-a]"})
	if err == nil {
		_, err = tail.Recv()
	}
	assertCode(t, err, codes.InvalidArgument)
	_, err = c.Ingest(t.Context(), &lav1.IngestRequest{})
	assertCode(t, err, codes.InvalidArgument)

	// Malformed records are counted and refused; the rest are stored; a huge
	// line is cut at the limit and marked.
	huge := make([]byte, 5000)
	for i := range huge {
		huge[i] = 'x'
	}
	resp, err := c.Ingest(t.Context(), &lav1.IngestRequest{Batch: &lav1.LogBatch{Records: []*lav1.LogRecord{
		{Source: "", Message: "no source"},
		{Source: "svc", Message: "future", Time: ts(now.Add(48 * time.Hour))},
		{Source: "svc", Message: "bad label", Labels: map[string]string{"1bad": "x"}},
		{Source: "svc", Message: "bad trace", TraceId: "nothex"},
		{Source: "svc", Message: "bad level", Level: 99},
		{Source: "svc", Message: string(huge)},
		{Source: "svc", Message: "second"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccepted() != 2 || resp.GetRejected() != 5 || resp.GetTruncated() != 1 || len(resp.GetRejections()) != 5 {
		t.Fatalf("ingest: %v", resp)
	}
	if resp.GetRejections()[0].GetField() != "records[0].source" {
		t.Fatalf("first rejection names %q", resp.GetRejections()[0].GetField())
	}
	got := waitQuery(t, c, &lav1.QueryLogsRequest{Sources: []string{"svc"}, Order: lav1.TimeOrder_TIME_ORDER_ASCENDING}, 2)
	long := got.GetRecords()[0]
	if !long.GetTruncated() || long.GetOriginalSize() != 5000 || len(long.GetMessage()) != 1024 {
		t.Fatalf("huge line: truncated=%v original=%d len=%d", long.GetTruncated(), long.GetOriginalSize(), len(long.GetMessage()))
	}
}

func TestIngestStreamLargeBatchesChunked(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{})
	stream, err := inst.client.IngestStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const batches, per = 5, 4000
	line := "GET /api/v1/items?page=17 200 1532 bytes in 12.3ms user=7f3a9b2c-1d2e-4f5a-8b9c-0d1e2f3a4b5c ua=curl/8.5.0 xxxxxx"
	for b := range batches {
		entries := make([]*lav1.LogEntry, per)
		for i := range entries {
			entries[i] = &lav1.LogEntry{Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: fmt.Sprintf("%d-%d %s", b, i, line)}
		}
		if err := stream.Send(&lav1.IngestStreamRequest{Batch: &lav1.LogBatch{
			BatchId: fmt.Sprintf("b%d", b), Streams: []*lav1.LogStream{{Source: "bulk", Entries: entries}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccepted() != batches*per || resp.GetBatches() != batches {
		t.Fatalf("stream: %v", resp)
	}
	srcs := func() uint64 {
		r, err := inst.client.ListSources(t.Context(), &lav1.ListSourcesRequest{Source: "bulk"})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetSources()) == 0 {
			return 0
		}
		return r.GetSources()[0].GetRecordCount()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srcs() != batches*per {
		if time.Now().After(deadline) {
			t.Fatalf("indexed %d records, want %d", srcs(), batches*per)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q, err := inst.client.QueryLogs(t.Context(), &lav1.QueryLogsRequest{Contains: "3-3999 GET"})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.GetRecords()) != 1 {
		t.Fatalf("phrase query: %d records", len(q.GetRecords()))
	}
}

// TestInflightBudgetBoundsWithoutDeadlock: batches larger than the budget
// of bytes being published, from concurrent clients, all complete.
func TestInflightBudgetBoundsWithoutDeadlock(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{MaxInflightBytes: 4 << 10})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			entries := make([]*lav1.LogEntry, 200)
			for i := range entries {
				entries[i] = &lav1.LogEntry{Message: fmt.Sprintf("worker %d line %d %s", w, i, strings.Repeat("x", 100))}
			}
			_, err := inst.client.Ingest(t.Context(), &lav1.IngestRequest{Batch: &lav1.LogBatch{
				Streams: []*lav1.LogStream{{Source: "budget", Entries: entries}}}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r := waitQuery(t, inst.client, &lav1.QueryLogsRequest{Sources: []string{"budget"}, PageSize: 2000}, 1600)
	if len(r.GetRecords()) != 1600 {
		t.Fatalf("%d records", len(r.GetRecords()))
	}
}
