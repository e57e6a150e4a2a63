package integration_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

// restartReplica starts r again, killed before, with its replica id, data
// dir and gRPC address.
func restartReplica(t *testing.T, natsURL, target string, r *replicaProc) {
	t.Helper()
	args := []string{"serve", "--target=" + target, "--nats-url", natsURL, "--grpc-addr", r.grpcAddr,
		"--data-dir", r.dataDir, "--replica-id", r.id, "--docker=off"}
	r.proc = startOpsuite(t, freeAddr(t), args...)
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(tokenCreds{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	r.conn = conn
}

// sourceMessages returns how often each message of source is stored on c,
// reading every page.
func sourceMessages(ctx context.Context, c lav1.LogAggregatorServiceClient, source string) (map[string]int, error) {
	out := map[string]int{}
	req := &lav1.QueryLogsRequest{Sources: []string{source}, Since: durationpb.New(time.Hour), PageSize: 10000}
	for {
		resp, err := c.QueryLogs(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, r := range resp.GetRecords() {
			out[r.GetMessage()]++
		}
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// holdsExactly reports whether got has every message of want once and
// nothing else, and if not, what differs.
func holdsExactly(got map[string]int, want map[string]bool) (bool, string) {
	if len(got) != len(want) {
		return false, fmt.Sprintf("%d distinct messages, want %d", len(got), len(want))
	}
	for m, n := range got {
		if n != 1 || !want[m] {
			return false, fmt.Sprintf("%q stored %d times (wanted: %v)", m, n, want[m])
		}
	}
	return true, ""
}

// TestLogAggregatorReplicas runs two log-aggregator processes on one NATS.
// Records ingested alternately through both are held exactly once by each;
// a deploy event ties new error signatures to its revision on both; each
// new signature is announced once; a tail on one sees what the other
// ingested. One replica is killed with SIGKILL mid-ingest, the batches it
// failed are sent again to the other with the same batch ids, and the
// killed one, restarted with its id and data dir, catches up with nothing
// lost or doubled.
func TestLogAggregatorReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	ns := startNATS(t)
	a := startReplica(t, ns.ClientURL(), "logaggregator", "la-a")
	b := startReplica(t, ns.ClientURL(), "logaggregator", "la-b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := func(r *replicaProc) lav1.LogAggregatorServiceClient {
		return lav1.NewLogAggregatorServiceClient(r.conn)
	}

	nc, js := natsClient(t, ns.ClientURL())
	// signature.new as a plain NATS subscriber sees it: every publication,
	// de-duplicated by the events stream or not.
	var evMu sync.Mutex
	sigEvents := map[string]int{}
	sub, err := nc.Subscribe("opsuite.logaggregator.signature.new", func(m *nats.Msg) {
		evMu.Lock()
		sigEvents[m.Header.Get("ce-subject")]++
		evMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Revision 7 of shop goes live in prod, announced as the deployer does.
	bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/deployer"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ro := &deployerv1.Rollout{Id: "ro-7", Application: "shop", Environment: "prod", FromRevision: 6, ToRevision: 7,
		Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED}
	if _, err := bus.Publish(ctx, eventbus.Event{Type: "opsuite.deploy.rollout.completed", ID: "ro-7-done", Subject: "shop",
		Data: &eventsv1.RolloutCompleted{Rollout: ro}}); err != nil {
		t.Fatal(err)
	}
	// The replica that received it wrote the revision to the log stream;
	// records ingested after that are tied to it on every replica.
	logs, err := js.Stream(ctx, "OPSUITE_LOGS")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the revision in the log stream", func() bool {
		_, err := logs.GetLastMsgForSubject(ctx, "opsuite.logwal.control")
		return err == nil
	})

	// A tail on b, of records ingested through a.
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	tail, err := client(b).TailLogs(tctx, &lav1.TailLogsRequest{Sources: []string{"it/tail"}})
	if err != nil {
		t.Fatal(err)
	}
	tailWant := map[string]bool{}
	var tailRecs []*lav1.LogRecord
	for i := range 100 {
		msg := fmt.Sprint("tailed ", i)
		tailWant[msg] = true
		tailRecs = append(tailRecs, &lav1.LogRecord{Source: "it/tail", Message: msg})
	}
	if _, err := client(a).Ingest(ctx, &lav1.IngestRequest{Batch: &lav1.LogBatch{Records: tailRecs}}); err != nil {
		t.Fatal(err)
	}
	tailed := map[string]int{}
	for len(tailed) < len(tailWant) {
		resp, err := tail.Recv()
		if err != nil {
			t.Fatalf("tail on b after %d records: %v", len(tailed), err)
		}
		if resp.GetDropped() > 0 {
			t.Fatalf("tail on b dropped %d records", resp.GetDropped())
		}
		for _, r := range resp.GetRecords() {
			tailed[r.GetMessage()]++
		}
	}
	if ok, diff := holdsExactly(tailed, tailWant); !ok {
		t.Fatalf("tail on b: %s", diff)
	}
	tcancel()

	// Batches of records, some of them errors of three kinds. Batch k of a
	// phase holds records offset+k*size onwards; batch ids are unique
	// across phases.
	const source = "it/rep"
	shop := map[string]string{"app": "shop", "environment": "prod"}
	want := map[string]bool{}
	batch := func(offset, k, size int) *lav1.LogBatch {
		first := offset + k*size
		b := &lav1.LogBatch{BatchId: fmt.Sprintf("batch-%d", first)}
		for i := first; i < first+size; i++ {
			msg := fmt.Sprintf("line %d", i)
			level := lav1.LogLevel_LOG_LEVEL_INFO
			if i%997 == 0 {
				level = lav1.LogLevel_LOG_LEVEL_ERROR
				msg = fmt.Sprintf("payment %d declined by %s", i, []string{"bank", "card network", "fraud check"}[i%3])
			}
			want[msg] = true
			b.Records = append(b.Records, &lav1.LogRecord{Source: source, Labels: shop, Level: level, Message: msg})
		}
		return b
	}
	holdAll := func(r *replicaProc) func() bool {
		return func() bool {
			got, err := sourceMessages(ctx, client(r), source)
			ok, _ := holdsExactly(got, want)
			return err == nil && ok
		}
	}
	const n, size = 10000, 250
	start := time.Now()
	for k := range n / size {
		r := a
		if k%2 == 1 {
			r = b
		}
		if _, err := client(r).Ingest(ctx, &lav1.IngestRequest{Batch: batch(0, k, size)}); err != nil {
			t.Fatalf("ingest batch %d through %s: %v", k, r.id, err)
		}
	}
	ingested := time.Since(start)
	eventually(t, time.Minute, "la-a to hold every record once", holdAll(a))
	eventually(t, time.Minute, "la-b to hold every record once", holdAll(b))
	t.Logf("%d records in batches of %d alternately through both replicas in %s; both hold each once %s after the first batch",
		n, size, ingested.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Both tie the error signatures to revision 7.
	sigIDs := map[string]bool{}
	for _, r := range []*replicaProc{a, b} {
		resp, err := client(r).GetErrorSummary(ctx, &lav1.GetErrorSummaryRequest{Window: durationpb.New(time.Hour), Application: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetSignatures()) != 3 {
			t.Fatalf("%s: %d signatures, want 3: %v", r.id, len(resp.GetSignatures()), resp.GetSignatures())
		}
		for _, s := range resp.GetSignatures() {
			if s.GetFirstSeenRevision() != "7" || s.GetFirstSeenRolloutId() != "ro-7" {
				t.Errorf("%s: signature %q first seen in revision %q (rollout %q), want 7 (ro-7)", r.id, s.GetTemplate(), s.GetFirstSeenRevision(), s.GetFirstSeenRolloutId())
			}
			sigIDs[s.GetId()] = true
		}
	}
	if len(sigIDs) != 3 {
		t.Fatalf("signature ids differ between the replicas: %v", sigIDs)
	}
	time.Sleep(2 * time.Second) // time for a second announcement to show
	evMu.Lock()
	if len(sigEvents) != 3 {
		t.Errorf("signature.new events for %d signatures, want 3: %v", len(sigEvents), sigEvents)
	}
	for id := range sigIDs {
		if sigEvents[id] != 1 {
			t.Errorf("signature %s announced %d times, want once", id, sigEvents[id])
		}
	}
	evMu.Unlock()

	// Phase two: both ingest at once; a is killed with SIGKILL half way
	// through its share, with a request in flight or about to be. The
	// batches a did not answer are sent again to b with their batch ids,
	// as a client retrying a lost answer does (a may have stored them).
	var two []*lav1.LogBatch
	for k := range n / size {
		two = append(two, batch(n, k, size))
	}
	// Ingest is fast (a batch in a few ms): past half its share, la-a's
	// client paces its batches so the kill lands before it is done.
	var aDone atomic.Int32
	halfway := make(chan struct{})
	failed := make(chan *lav1.LogBatch, len(two))
	var wg sync.WaitGroup
	for i, r := range []*replicaProc{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := i; k < len(two); k += 2 {
				if r == a && int(aDone.Load()) >= len(two)/4 {
					time.Sleep(25 * time.Millisecond)
				}
				if _, err := client(r).Ingest(ctx, &lav1.IngestRequest{Batch: two[k]}); err != nil {
					if r == b {
						t.Errorf("ingest batch %d through la-b: %v", k, err)
					}
					failed <- two[k]
					continue
				}
				if r == a && int(aDone.Add(1)) == len(two)/4 {
					close(halfway)
				}
			}
		}()
	}
	phaseTwo := time.Now()
	select {
	case <-halfway:
	case <-time.After(time.Minute):
		t.Fatal("la-a did not store half its batches within a minute")
	}
	a.kill()
	killed := time.Now()
	wg.Wait()
	close(failed)
	resent := 0
	for bt := range failed {
		resent++
		if _, err := client(b).Ingest(ctx, &lav1.IngestRequest{Batch: bt}); err != nil {
			t.Fatalf("ingest %s again through la-b: %v", bt.GetBatchId(), err)
		}
	}
	if resent == 0 {
		t.Fatal("la-a answered every batch: it was not killed mid-ingest")
	}
	eventually(t, time.Minute, "la-b to hold every record once", holdAll(b))
	// More while a is down, then a comes back with its id and data dir.
	for k := range 8 {
		if _, err := client(b).Ingest(ctx, &lav1.IngestRequest{Batch: batch(2*n, k, size)}); err != nil {
			t.Fatal(err)
		}
	}
	restart := time.Now()
	restartReplica(t, ns.ClientURL(), "logaggregator", a)
	ready := time.Since(restart)
	eventually(t, time.Minute, "restarted la-a to hold every record once", holdAll(a))
	caughtUp := time.Since(restart)
	t.Logf("la-a killed %s into phase two after storing %d batches; %d batches it did not answer resent through la-b with their ids; "+
		"la-a down %s; restarted, ready %s after its start and holding all %d records exactly once after %s (catch-up)",
		killed.Sub(phaseTwo).Round(time.Millisecond), aDone.Load(), resent, restart.Sub(killed).Round(time.Millisecond),
		ready.Round(time.Millisecond), len(want), caughtUp.Round(time.Millisecond))
	got, err := sourceMessages(ctx, client(b), source)
	if ok, diff := holdsExactly(got, want); err != nil || !ok {
		t.Fatalf("la-b after la-a's return: %v %s", err, diff)
	}
	time.Sleep(time.Second)
	evMu.Lock()
	defer evMu.Unlock()
	// Phases two and three add no new kind of error.
	if len(sigEvents) != 3 {
		t.Errorf("signature.new events for %d signatures after the restart, want 3: %v", len(sigEvents), sigEvents)
	}
	for id, k := range sigEvents {
		if k != 1 {
			t.Errorf("signature %s announced %d times after the restart, want once", id, k)
		}
	}
}
