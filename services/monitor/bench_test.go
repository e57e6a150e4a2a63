package monitor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/prometheus/model/labels"
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
	for _, n := range []int{1_000, 10_000} {
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
			b.ResetTimer()
			for b.Loop() {
				q, err := db.Engine().NewInstantQuery(context.Background(), db.Queryable(), nil, expr, now)
				if err != nil {
					b.Fatal(err)
				}
				if r := q.Exec(context.Background()); r.Err != nil {
					b.Fatal(r.Err)
				}
				q.Close()
			}
		})
	}
}
