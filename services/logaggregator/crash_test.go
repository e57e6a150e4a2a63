package logaggregator_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/services/logaggregator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// crashChildEnv makes the test binary run an aggregator with its embedded
// NATS on the directory it names, as `opsuite up` does, until killed.
const crashChildEnv = "LOGAGGREGATOR_CRASH_CHILD_DIR"

func runCrashChild(dir string) error {
	ns, err := natsembed.Start(natsembed.Config{DataDir: filepath.Join(dir, "nats")}, nil)
	if err != nil {
		return err
	}
	nc, err := ns.Connect("child")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	svc, err := logaggregator.New(logaggregator.Config{DataDir: filepath.Join(dir, "logs")}, logaggregator.Deps{JetStream: js})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- svc.Run(context.Background()) }()
	select {
	case <-svc.Ready():
	case err := <-errc:
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	tmp := filepath.Join(dir, "addr.tmp")
	if err := os.WriteFile(tmp, []byte(lis.Addr().String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "addr")); err != nil {
		return err
	}
	return gs.Serve(lis)
}

type child struct {
	cmd  *exec.Cmd
	conn *grpc.ClientConn
	c    lav1.LogAggregatorServiceClient
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	_ = os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	var addr []byte
	for {
		b, err := os.ReadFile(filepath.Join(dir, "addr"))
		if err == nil {
			addr = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child aggregator did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient(string(addr), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &child{cmd: cmd, conn: conn, c: lav1.NewLogAggregatorServiceClient(conn)}
}

func crashBatch(w, n int) *lav1.LogBatch {
	const per = 200
	entries := make([]*lav1.LogEntry, per)
	for i := range entries {
		entries[i] = &lav1.LogEntry{Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: fmt.Sprintf("w%d-b%d-r%d request served in 12ms", w, n, i)}
	}
	return &lav1.LogBatch{BatchId: fmt.Sprintf("w%d-b%d", w, n), Streams: []*lav1.LogStream{{Source: "crash", Entries: entries}}}
}

// TestSIGKILLDuringIngestionLosesAndDuplicatesNothing kills the aggregator
// (and its embedded NATS) with SIGKILL while two writers ingest, restarts
// it on the same data, and checks every acknowledged line is there exactly
// once; writers then retry what was not acknowledged, with the same batch
// ids, and every line is there exactly once.
func TestSIGKILLDuringIngestionLosesAndDuplicatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	ch := startChild(t, dir)
	const writers, maxBatches = 2, 150
	var mu sync.Mutex
	acked := map[string]bool{}
	var attempted [writers]int
	var wg sync.WaitGroup
	killAfter := make(chan struct{})
	var once sync.Once
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range maxBatches {
				attempted[w] = n + 1
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := ch.c.Ingest(ctx, &lav1.IngestRequest{Batch: crashBatch(w, n)})
				cancel()
				if err != nil {
					return // the aggregator is gone
				}
				if resp.GetAccepted() != 200 {
					t.Errorf("batch %d/%d: %v", w, n, resp)
					return
				}
				mu.Lock()
				acked[fmt.Sprintf("w%d-b%d", w, n)] = true
				if len(acked) >= 40 {
					once.Do(func() { close(killAfter) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-killAfter:
	case <-time.After(30 * time.Second):
		t.Fatal("writers too slow")
	}
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = ch.cmd.Wait()
	wg.Wait()
	t.Logf("killed with %d batches acknowledged (attempted %v)", len(acked), attempted)

	ch2 := startChild(t, dir)
	counts := countLines(t, ch2.c)
	for id := range acked {
		for i := range 200 {
			line := fmt.Sprintf("%s-r%d request served in 12ms", id, i)
			if counts[line] != 1 {
				t.Fatalf("acknowledged line %q stored %d times", line, counts[line])
			}
		}
	}
	for line, n := range counts {
		if n != 1 {
			t.Fatalf("line %q stored %d times", line, n)
		}
	}
	// Retry every batch not acknowledged: duplicates are recognised by id.
	total := 0
	for w := range writers {
		for n := range attempted[w] {
			total += 200
			if acked[fmt.Sprintf("w%d-b%d", w, n)] {
				continue
			}
			if _, err := ch2.c.Ingest(t.Context(), &lav1.IngestRequest{Batch: crashBatch(w, n)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		counts = countLines(t, ch2.c)
		if len(counts) == total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(counts) != total {
		t.Fatalf("%d distinct lines after retries, want %d", len(counts), total)
	}
	for line, n := range counts {
		if n != 1 {
			t.Fatalf("after retries line %q stored %d times", line, n)
		}
	}
}

// countLines pages through every record of source crash.
func countLines(t *testing.T, c lav1.LogAggregatorServiceClient) map[string]int {
	t.Helper()
	counts := map[string]int{}
	req := &lav1.QueryLogsRequest{Sources: []string{"crash"}, PageSize: 10000, Since: dur(time.Hour)}
	for {
		var resp *lav1.QueryLogsResponse
		var err error
		for range 50 {
			resp, err = c.QueryLogs(t.Context(), req)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			counts[r.GetMessage()]++
		}
		if resp.GetNextPageToken() == "" {
			return counts
		}
		req.PageToken = resp.GetNextPageToken()
	}
}
