package monitor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"github.com/opsuite/opsuite/services/monitor/internal/direct"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// columnar builds a batch of n series (3 labels each) with one sample at ts;
// gen, when not zero, makes the series new ones (their host and pod values
// carry it).
func columnar(n int, ts int64, gen int) *monitorv1.SampleBatch {
	b := &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "bench_metric", "host", "region", "pod"}}
	b.Symbols = append(b.Symbols, "eu", "us")
	base := uint32(len(b.Symbols))
	suffix := ""
	if gen != 0 {
		suffix = "-" + strconv.Itoa(gen)
	}
	for i := range n {
		b.Symbols = append(b.Symbols, "h"+strconv.Itoa(i)+suffix, "p"+strconv.Itoa(i)+suffix)
		b.Series = append(b.Series, &monitorv1.SeriesSamples{
			LabelRefs:    []uint32{1, 2, 3, base + uint32(2*i), 5, base + uint32(2*i+1), 4, 6 + uint32(i%2)},
			TimestampsMs: []int64{ts}, Values: []float64{rand.Float64()},
		})
	}
	return b
}

// rawPush is a PushMetricsRequest already encoded by the client.
type rawPush []byte

// rawCodec sends rawPush as it is and everything else with the proto codec,
// as an agent that encodes its batches itself would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawPush); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }

// BenchmarkIngest measures PushMetrics over gRPC (bufconn, columnar batch,
// one sample per series per batch), per sample, beside direct appends to
// the TSDB:
//
//   - grpc/existing: pushes to series the store has (the steady state of an
//     agent); the batches are built and encoded before the timer (their
//     cost is reported as client-encode-ms per batch), so the timing is the
//     gRPC call: transport, server decode, validation, appends, commit;
//   - grpc/new: every batch brings series never seen (series creation);
//   - grpc-marshal/existing: as grpc/existing with the client's
//     proto.Marshal of the SampleBatch message inside the timing;
//   - grpc-2clients: two clients each pushing half of the series;
//   - direct: appends by labels to the same TSDB, no gRPC, no decoding.
func BenchmarkIngest(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("grpc/existing/series=%d", n), func(b *testing.B) { benchRawPush(b, n, false) })
		if n <= 10_000 {
			// At 100k, twenty batches of new series would hold 2M series.
			b.Run(fmt.Sprintf("grpc/new/series=%d", n), func(b *testing.B) { benchRawPush(b, n, true) })
		}
		b.Run(fmt.Sprintf("grpc-marshal/existing/series=%d", n), func(b *testing.B) {
			e := newEnv(b)
			c := e.start(b, monitor.Config{}).client
			ts := time.Now().UnixMilli()
			batch := columnar(n, ts, 0)
			// Create the series once, as a long-running agent would have.
			if _, err := c.PushMetrics(context.Background(), &monitorv1.PushMetricsRequest{Batch: batch}); err != nil {
				b.Fatal(err)
			}
			req := &monitorv1.PushMetricsRequest{Batch: batch}
			b.ResetTimer()
			for i := 1; b.Loop(); i++ {
				for _, s := range batch.Series {
					s.TimestampsMs[0] = ts + int64(i)
				}
				if _, err := c.PushMetrics(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
		// Two agents pushing half of the series each, concurrently, over
		// their own streams.
		b.Run(fmt.Sprintf("grpc-2clients/series=%d", n), func(b *testing.B) {
			e := newEnv(b)
			c := e.start(b, monitor.Config{}).client
			ts := time.Now().UnixMilli()
			halves := [2]*monitorv1.SampleBatch{columnar(n/2, ts, 0), columnar(n/2, ts, 0)}
			halves[1].Symbols[2] = "bench_metric_b"
			for _, h := range halves {
				if _, err := c.PushMetrics(context.Background(), &monitorv1.PushMetricsRequest{Batch: h}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 1; b.Loop(); i++ {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for k, h := range halves {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for _, s := range h.Series {
							s.TimestampsMs[0] = ts + int64(i)
						}
						_, errs[k] = c.PushMetrics(context.Background(), &monitorv1.PushMetricsRequest{Batch: h})
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
		b.Run(fmt.Sprintf("direct/series=%d", n), func(b *testing.B) {
			db, err := tsstore.Open(tsstore.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ls := make([]labels.Labels, n)
			for i := range n {
				ls[i] = labels.FromStrings("__name__", "bench_metric", "host", "h"+strconv.Itoa(i), "pod", "p"+strconv.Itoa(i), "region", []string{"eu", "us"}[i%2])
			}
			ts := time.Now().UnixMilli()
			series := make([]ingest.Series, n)
			for j := range n {
				series[j] = ingest.Series{Labels: ls[j], T: []int64{ts}, V: []float64{rand.Float64()}}
			}
			if _, err := ingest.Append(db.Appender(context.Background()), series, nil); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 1; b.Loop(); i++ {
				for j := range series {
					series[j].T[0] = ts + int64(i)
				}
				if _, err := ingest.Append(db.Appender(context.Background()), series, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

// benchRawPush pushes b.N batches of n series encoded before the timer.
func benchRawPush(b *testing.B, n int, newSeries bool) {
	e := newEnv(b)
	inst := e.start(b, monitor.Config{})
	ts := time.Now().UnixMilli()
	if !newSeries {
		if _, err := inst.client.PushMetrics(context.Background(), &monitorv1.PushMetricsRequest{Batch: columnar(n, ts, 0)}); err != nil {
			b.Fatal(err)
		}
	}
	encStart := time.Now()
	batches := make([]rawPush, b.N)
	for i := range batches {
		gen := 0
		if newSeries {
			gen = i + 1
		}
		raw, err := proto.Marshal(&monitorv1.PushMetricsRequest{Batch: columnar(n, ts+int64(i)+1, gen)})
		if err != nil {
			b.Fatal(err)
		}
		batches[i] = raw
	}
	encode := time.Since(encStart)
	var resp monitorv1.PushMetricsResponse
	b.ResetTimer()
	for i := range b.N {
		if err := inst.conn.Invoke(context.Background(), monitorv1.MonitorService_PushMetrics_FullMethodName, batches[i], &resp,
			grpc.ForceCodecV2(rawCodec{})); err != nil {
			b.Fatal(err)
		}
		if resp.GetAccepted() != uint64(n) {
			b.Fatalf("accepted %d of %d: %v", resp.GetAccepted(), n, resp.GetRejections())
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(encode.Microseconds())/1000/float64(b.N), "client-encode-ms")
}

// loadSeries is n series of the metric load (app="shop") with ten samples,
// one a second up to one second before now; value j%100 for series j, so
// 9% of them are above 90.
func loadSeries(n int, now time.Time) [][]ingest.Series {
	out := make([][]ingest.Series, 10)
	ls := make([]labels.Labels, n)
	for j := range n {
		ls[j] = labels.FromStrings("__name__", "load", "host", "h"+strconv.Itoa(j), "app", "shop")
	}
	for k := range out {
		series := make([]ingest.Series, n)
		for j := range n {
			series[j] = ingest.Series{Labels: ls[j], T: []int64{now.Add(time.Duration(k-10) * time.Second).UnixMilli()}, V: []float64{float64(j % 100)}}
		}
		out[k] = series
	}
	return out
}

// ruleExpr is what a threshold rule on load above 90 with a 15s window
// compiles to.
const ruleExpr = `last_over_time(load{app="shop"}[15s]) > 90`

// BenchmarkRuleEval measures one evaluation of a threshold rule over 1k,
// 10k and 100k series, three ways on the same data in the same run:
//
//   - engine: the rule's PromQL with the Prometheus engine (how every rule
//     was evaluated before; the baseline);
//   - direct: the rule's direct plan, reading the TSDB head into reused
//     buffers (how threshold rules and PromQL alerts of that shape are
//     evaluated now);
//   - rule: the whole evaluation of a group holding the threshold rule in
//     a running monitor, alert state machine included, with the rule's 9%
//     of series firing (steady state: no transitions);
//   - control: arithmetic taking as long as direct's median, to tell the
//     machine's tail (other processes, the scheduler) from the code's.
//
// Run it with -benchtime=300x or more: with fewer evaluations the p99 is
// the slowest one. Beside the percentiles it reports the share of
// evaluations a garbage collection cycle overlapped and the p50/p99 of the
// others, which tells the collector's part of the tail from the rest.
func BenchmarkRuleEval(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		now := time.Now()
		data := loadSeries(n, now)
		db, err := tsstore.Open(tsstore.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		for _, series := range data {
			if _, err := ingest.Append(db.Appender(context.Background()), series, nil); err != nil {
				b.Fatal(err)
			}
		}
		want := n * 9 / 100
		var directP50 time.Duration
		b.Run(fmt.Sprintf("engine/series=%d", n), func(b *testing.B) {
			lat := newLatencies()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				t0 := lat.start()
				q, err := db.Engine().NewInstantQuery(context.Background(), db.Queryable(), nil, ruleExpr, now)
				if err != nil {
					b.Fatal(err)
				}
				r := q.Exec(context.Background())
				if r.Err != nil {
					b.Fatal(r.Err)
				}
				got := len(r.Value.(promql.Vector))
				q.Close()
				lat.done(t0)
				if got != want {
					b.Fatalf("%d series, want %d", got, want)
				}
			}
			b.StopTimer()
			lat.report(b)
		})
		b.Run(fmt.Sprintf("direct/series=%d", n), func(b *testing.B) {
			e, err := db.Parser().ParseExpr(ruleExpr)
			if err != nil {
				b.Fatal(err)
			}
			plan := direct.Compile(e, tsstore.LookbackDelta)
			if plan == nil {
				b.Fatal("no direct plan")
			}
			r := db.NewReader()
			var vec promql.Vector
			lat := newLatencies()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				t0 := lat.start()
				vec, err = plan.Eval(context.Background(), r, now, vec)
				if err != nil {
					b.Fatal(err)
				}
				lat.done(t0)
				if len(vec) != want {
					b.Fatalf("%d series, want %d", len(vec), want)
				}
			}
			b.StopTimer()
			lat.report(b)
			slices.Sort(lat.all)
			directP50 = lat.all[len(lat.all)/2]
		})
		// A loop of pure arithmetic (no memory, no locks, no system calls)
		// sized to take the direct evaluation's median: its tail is the
		// machine's (other processes, the scheduler), not the code's.
		b.Run(fmt.Sprintf("control/series=%d", n), func(b *testing.B) {
			if directP50 == 0 {
				b.Skip("no direct median to match")
			}
			const probe = 1 << 20
			t0 := time.Now()
			spin(probe)
			iters := int(float64(probe) * float64(directP50) / float64(time.Since(t0)))
			lat := newLatencies()
			b.ResetTimer()
			for b.Loop() {
				t0 := lat.start()
				spin(iters)
				lat.done(t0)
			}
			b.StopTimer()
			lat.report(b)
		})
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("rule/series=%d", n), func(b *testing.B) {
			e := newEnv(b)
			inst := e.start(b, monitor.Config{})
			ctx := context.Background()
			high := 90.0
			// An hour's interval and window: the group's own loop evaluates
			// once at the start, then not during the benchmark.
			if _, err := inst.client.CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
				Name: "bench", Interval: durationpb.New(time.Hour),
				Rules: []*monitorv1.Rule{{Name: "load-high", Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{
					Metric: "load", High: &high, Matchers: []*monitorv1.LabelMatcher{{Name: "app", Value: "shop"}}}}}},
			}}); err != nil {
				b.Fatal(err)
			}
			for _, series := range data {
				if err := inst.svc.AppendSeries(ctx, series); err != nil {
					b.Fatal(err)
				}
			}
			ge, err := inst.svc.NewGroupEval("bench")
			if err != nil {
				b.Fatal(err)
			}
			if d := ge.Direct(); len(d) != 1 || !d[0] {
				b.Fatalf("direct plans %v, want the rule's", d)
			}
			// The first evaluation raises the alerts (state written to KV,
			// events published); the timed ones find them firing.
			ge.Eval(ctx, now)
			list, err := inst.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{PageSize: 1000})
			if err != nil || len(list.GetAlerts()) != min(want, 1000) {
				b.Fatalf("%d alerts listed (%v), want %d", len(list.GetAlerts()), err, min(want, 1000))
			}
			lat := newLatencies()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				t0 := lat.start()
				ge.Eval(ctx, now)
				lat.done(t0)
			}
			b.StopTimer()
			lat.report(b)
		})
	}
}

// BenchmarkRuleEvalDuringIngest measures the rule of BenchmarkRuleEval at
// 1k series as the monitor's rule evaluation runs it (path=direct) and with
// the PromQL engine (path=engine), alone and while a client pushes
// 10k-series batches to the same monitor without pause: what ingestion
// (its CPU, its locks in the store, its garbage) adds to the evaluation's
// tail.
func BenchmarkRuleEvalDuringIngest(b *testing.B) {
	for _, path := range []string{"engine", "direct"} {
		for _, ingesting := range []bool{false, true} {
			b.Run(fmt.Sprintf("path=%s/ingesting=%v", path, ingesting), func(b *testing.B) {
				e := newEnv(b)
				inst := e.start(b, monitor.Config{})
				c := inst.client
				ctx := context.Background()
				now := time.Now()
				load := &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "load", "host", "app", "shop"}}
				for j := range 1000 {
					load.Symbols = append(load.Symbols, "h"+strconv.Itoa(j))
					ser := &monitorv1.SeriesSamples{LabelRefs: []uint32{1, 2, 4, 5, 3, uint32(len(load.Symbols) - 1)}}
					for k := range 10 {
						ser.TimestampsMs = append(ser.TimestampsMs, now.Add(time.Duration(k-10)*time.Second).UnixMilli())
						ser.Values = append(ser.Values, float64(j%100))
					}
					load.Series = append(load.Series, ser)
				}
				if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Batch: load}); err != nil {
					b.Fatal(err)
				}
				re, err := inst.svc.NewRuleEval(ruleExpr)
				if err != nil || !re.Direct() {
					b.Fatalf("no direct plan: %v", err)
				}
				eval := func() (promql.Vector, error) { return re.Eval(ctx, now) }
				if path == "engine" {
					eval = func() (promql.Vector, error) { return inst.svc.EvalRuleExpr(ctx, ruleExpr, now) }
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				if ingesting {
					batch := columnar(10_000, now.UnixMilli(), 0)
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := int64(0); ; i++ {
							select {
							case <-stop:
								return
							default:
							}
							for _, s := range batch.Series {
								s.TimestampsMs[0] = now.UnixMilli() + i
							}
							if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Batch: batch}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				lat := newLatencies()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					t0 := lat.start()
					vec, err := eval()
					if err != nil {
						b.Fatal(err)
					}
					lat.done(t0)
					if len(vec) != 90 {
						b.Fatalf("%d series, want 90", len(vec))
					}
				}
				b.StopTimer()
				close(stop)
				wg.Wait()
				lat.report(b)
			})
		}
	}
}

// latencies records how long operations took and whether a garbage
// collection cycle overlapped each.
type latencies struct {
	all, noGC []time.Duration
	gc        []metrics.Sample
	cycles    uint64
}

func newLatencies() *latencies {
	return &latencies{gc: []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}}
}

// start notes the collector's cycle count before an operation.
func (l *latencies) start() time.Time {
	metrics.Read(l.gc)
	l.cycles = l.gc[0].Value.Uint64()
	return time.Now()
}

// done records the operation started at t0.
func (l *latencies) done(t0 time.Time) {
	d := time.Since(t0)
	l.all = append(l.all, d)
	if metrics.Read(l.gc); l.gc[0].Value.Uint64() == l.cycles {
		l.noGC = append(l.noGC, d)
	}
}

// report gives p50/p99 of all operations, the share a collection cycle
// overlapped, and p50/p99 of the others.
func (l *latencies) report(b *testing.B) {
	percentiles(b, l.all)
	if len(l.all) == 0 || len(l.noGC) == 0 {
		return
	}
	b.ReportMetric(100*float64(len(l.all)-len(l.noGC))/float64(len(l.all)), "gc-overlap-%")
	slices.Sort(l.noGC)
	b.ReportMetric(float64(l.noGC[len(l.noGC)/2].Microseconds())/1000, "nogc-p50-ms")
	b.ReportMetric(float64(l.noGC[min(len(l.noGC)-1, len(l.noGC)*99/100)].Microseconds())/1000, "nogc-p99-ms")
}

// spinSink keeps spin's result alive.
var spinSink uint64

// spin does n rounds of integer arithmetic.
func spin(n int) {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	spinSink += x
}

// percentiles reports the median and p99 of ds in milliseconds.
func percentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[min(len(ds)-1, len(ds)*99/100)].Microseconds())/1000, "p99-ms")
}

// BenchmarkCrossingToFiringEvent measures, beyond the rule's `for`, the time
// from pushing a sample that crosses a threshold to the firing event on
// NATS. The group interval is the default 15s: the push wakes the group.
func BenchmarkCrossingToFiringEvent(b *testing.B) {
	e := newEnv(b)
	c := e.start(b, monitor.Config{}).client
	ctx := context.Background()
	events := make(chan string, 16)
	sub, err := e.nc.Subscribe("opsuite.monitor.alert.>", func(m *nats.Msg) { events <- m.Subject })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	const forDur = 500 * time.Millisecond
	high := 90.0
	if _, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "hot", For: durationpb.New(forDur),
		Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{Metric: "temp", High: &high}}}}); err != nil {
		b.Fatal(err)
	}
	push := func(v float64) {
		if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "temp", Value: v}}}); err != nil {
			b.Fatal(err)
		}
	}
	wait := func(subject string) time.Time {
		for {
			select {
			case s := <-events:
				if s == subject {
					return time.Now()
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("no %s event", subject)
			}
		}
	}
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		push(95)
		fired := wait(monitor.EventAlertFiring)
		lat = append(lat, fired.Sub(t0)-forDur)
		push(10)
		wait(monitor.EventAlertResolved)
		time.Sleep(minWakeGap)
	}
	percentiles(b, lat)
}

// minWakeGap keeps iterations apart by more than the push-triggered
// evaluation spacing.
const minWakeGap = 150 * time.Millisecond
