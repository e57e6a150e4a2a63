package monitor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/types/known/durationpb"
)

// columnar builds a batch of n series (3 labels each) with one sample at ts.
func columnar(n int, ts int64) *monitorv1.SampleBatch {
	b := &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "bench_metric", "host", "region", "pod"}}
	b.Symbols = append(b.Symbols, "eu", "us")
	base := uint32(len(b.Symbols))
	for i := range n {
		b.Symbols = append(b.Symbols, "h"+strconv.Itoa(i), "p"+strconv.Itoa(i))
		b.Series = append(b.Series, &monitorv1.SeriesSamples{
			LabelRefs:    []uint32{1, 2, 3, base + uint32(2*i), 5, base + uint32(2*i+1), 4, 6 + uint32(i%2)},
			TimestampsMs: []int64{ts}, Values: []float64{rand.Float64()},
		})
	}
	return b
}

// BenchmarkIngest compares PushMetrics over gRPC (bufconn, columnar batch)
// with direct appends to the TSDB, per sample.
func BenchmarkIngest(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("grpc/series=%d", n), func(b *testing.B) {
			e := newEnv(b)
			c := e.start(b, monitor.Config{}).client
			ts := time.Now().UnixMilli()
			batch := columnar(n, ts)
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
			halves := [2]*monitorv1.SampleBatch{columnar(n/2, ts), columnar(n/2, ts)}
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

// BenchmarkRuleEval measures one evaluation of a threshold rule's PromQL
// over 1k and 10k series.
func BenchmarkRuleEval(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			db, err := tsstore.Open(tsstore.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			now := time.Now()
			for k := range 10 {
				series := make([]ingest.Series, n)
				for j := range n {
					series[j] = ingest.Series{Labels: labels.FromStrings("__name__", "load", "host", "h"+strconv.Itoa(j), "app", "shop"),
						T: []int64{now.Add(time.Duration(k-10) * time.Second).UnixMilli()}, V: []float64{float64(j % 100)}}
				}
				if _, err := ingest.Append(db.Appender(context.Background()), series, nil); err != nil {
					b.Fatal(err)
				}
			}
			expr := `last_over_time(load{app="shop"}[15s]) > 90`
			var ds []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				q, err := db.Engine().NewInstantQuery(context.Background(), db.Queryable(), nil, expr, now)
				if err != nil {
					b.Fatal(err)
				}
				if r := q.Exec(context.Background()); r.Err != nil {
					b.Fatal(r.Err)
				}
				q.Close()
				ds = append(ds, time.Since(start))
			}
			percentiles(b, ds)
		})
	}
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
