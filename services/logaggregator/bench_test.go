package logaggregator_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/logaggregator"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const benchBatch = 1000

// benchLine is a ~150-byte line; i makes it unique.
func benchLine(i int) string {
	return fmt.Sprintf("%-150s", fmt.Sprintf("GET /api/v1/items/%d 200 1532 bytes in 12ms user=7f3a9b2c-1d2e-4f5a ua=curl/8.5 trace=%08x", i, i*7919))
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func maxRSSMB() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024
}

// BenchmarkIngest: durable ingestion of ~150-byte lines over gRPC (loopback
// TCP, batches of 1000, 4 concurrent clients; acknowledged once in
// JetStream), then until indexed; beside raw appends of the same lines to
// the index store (group commits of 65536, fsync each) in the same run.
// cpu_cores counts the whole process (client, gRPC, NATS, indexer).
func BenchmarkIngest(b *testing.B) {
	b.Run("grpc_durable", func(b *testing.B) {
		srv := natstest.Start(b, "")
		svc, err := logaggregator.New(logaggregator.Config{DataDir: b.TempDir()}, logaggregator.Deps{JetStream: srv.JetStream})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = svc.Run(ctx) }()
		defer func() { cancel(); wg.Wait() }()
		<-svc.Ready()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		gs := grpc.NewServer()
		svc.Register(gs)
		go func() { _ = gs.Serve(lis) }()
		defer gs.Stop()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		c := lav1.NewLogAggregatorServiceClient(conn)
		batches := make([]*lav1.LogBatch, 64)
		for i := range batches {
			entries := make([]*lav1.LogEntry, benchBatch)
			for j := range entries {
				entries[j] = &lav1.LogEntry{Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: benchLine(i*benchBatch + j)}
			}
			batches[i] = &lav1.LogBatch{Streams: []*lav1.LogStream{{Source: "bench/app", Labels: map[string]string{"app": "bench"}, Entries: entries}}}
		}
		var next atomic.Int64
		cpu0 := cpuSeconds()
		b.ResetTimer()
		start := time.Now()
		var cw sync.WaitGroup
		for w := range 4 {
			cw.Add(1)
			go func() {
				defer cw.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(b.N) {
						return
					}
					if _, err := c.Ingest(ctx, &lav1.IngestRequest{Batch: batches[(int(i)+w)%len(batches)]}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		cw.Wait()
		acked := time.Since(start)
		total := uint64(b.N) * benchBatch
		for {
			r, err := c.ListSources(ctx, &lav1.ListSourcesRequest{Source: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			if len(r.GetSources()) > 0 && r.GetSources()[0].GetRecordCount() >= total {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		indexed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(total)/acked.Seconds(), "acked_lines/s")
		b.ReportMetric(float64(total)/indexed.Seconds(), "indexed_lines/s")
		cpu := cpuSeconds() - cpu0
		b.ReportMetric(cpu/indexed.Seconds(), "cpu_cores")
		b.ReportMetric(float64(total)/cpu, "lines_per_cpu_s")
		b.ReportMetric(maxRSSMB(), "maxrss_MB")
	})
	b.Run("baseline_store_append", func(b *testing.B) {
		st, err := store.Open(filepath.Join(b.TempDir(), "index.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		recs := make([]record.Record, 0, 1<<16)
		seq := uint64(0)
		now := time.Now().UnixNano()
		labels := record.Labels{{Name: "app", Value: "bench"}}
		lines := make([]string, 1<<16)
		for i := range lines {
			lines[i] = benchLine(i)
		}
		cpu0 := cpuSeconds()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N * benchBatch {
			recs = append(recs, record.Record{Seq: record.Seq(seq+1, len(recs)), Time: now + int64(i), ReceiveTime: now,
				Level: lav1.LogLevel_LOG_LEVEL_INFO, Source: "bench/app", Labels: labels, Message: lines[i%len(lines)]})
			if len(recs) == cap(recs) {
				seq++
				if _, err := st.Commit(recs, seq); err != nil {
					b.Fatal(err)
				}
				recs = recs[:0]
			}
		}
		seq++
		if _, err := st.Commit(recs, seq); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N*benchBatch)/time.Since(start).Seconds(), "lines/s")
		b.ReportMetric(float64(b.N*benchBatch)/(cpuSeconds()-cpu0), "lines_per_cpu_s")
	})
}
