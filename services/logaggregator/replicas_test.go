package logaggregator_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/logaggregator"
	"github.com/opsuite/opsuite/services/logaggregator/internal/signature"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// replicaCfg is a replica's configuration with short intervals.
func replicaCfg(id string) logaggregator.Config {
	return logaggregator.Config{
		ReplicaID: id, RetentionInterval: 100 * time.Millisecond, DuplicateWindow: 300 * time.Millisecond,
		ClaimTimeout: 500 * time.Millisecond,
	}
}

// signatureEvents counts the signature.new events in the events stream by
// signature id, as a durable consumer would receive them.
func signatureEvents(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), eventbus.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{logaggregator.EventSignatureNew},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for left := info.NumPending; left > 0; left-- {
		m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var ev eventsv1.ErrorSignatureNew
		if err := proto.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		out[ev.GetSignature().GetId()]++
	}
	return out
}

// exactlyOnce checks that a query of source on c returns every message of
// want once and nothing else.
func exactlyOnce(t *testing.T, c lav1.LogAggregatorServiceClient, source string, want map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.QueryLogs(t.Context(), &lav1.QueryLogsRequest{Sources: []string{source}, Since: dur(time.Hour), PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, r := range resp.GetRecords() {
			seen[r.GetMessage()]++
		}
		bad := ""
		for m, n := range seen {
			if n != 1 || !want[m] {
				bad = fmt.Sprintf("%q %d times", m, n)
			}
		}
		if len(seen) == len(want) && bad == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d distinct of %d records, %s", source, len(seen), len(want), bad)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasShareOneStream runs two replicas on one NATS: records
// ingested through either are indexed once by each, a deploy event ties new
// signatures to its revision on both, each new signature is announced
// once, deletions and retention policies reach both, a tail on one sees
// what the other ingested, and the stream is not purged past what a stopped
// replica indexed, so it catches up on restart.
func TestReplicasShareOneStream(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, replicaCfg("la-a"))
	eb := *e
	eb.dataDir = t.TempDir()
	b := eb.start(t, replicaCfg("la-b"))

	// Every publication of signature.new, as a plain subscriber sees it
	// (the events stream would drop a second one within its window).
	var pubMu sync.Mutex
	published := map[string]int{}
	psub, err := e.srv.Conn.Subscribe(logaggregator.EventSignatureNew, func(m *nats.Msg) {
		pubMu.Lock()
		published[m.Header.Get(eventbus.HeaderSubject)]++
		pubMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = psub.Unsubscribe() }()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	tail, err := b.client.TailLogs(ctx, &lav1.TailLogsRequest{Sources: []string{"rep"}})
	if err != nil {
		t.Fatal(err)
	}

	// Revision 7 of shop goes live; its control message is in the stream
	// before the records below.
	stream, err := e.js.Stream(t.Context(), logaggregator.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	before := stream.CachedInfo().State.LastSeq
	r := &deployerv1.Rollout{Id: "ro-7", Application: "shop", Environment: "prod", FromRevision: 6, ToRevision: 7,
		Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED}
	publishRollout(t, e.bus, "opsuite.deploy.rollout.completed", r, "ro-7-done")
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := stream.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.LastSeq == before+1 {
			break
		}
		if info.State.LastSeq > before+1 || time.Now().After(deadline) {
			t.Fatalf("stream went from %d to %d messages after one deploy event", before, info.State.LastSeq)
		}
		time.Sleep(20 * time.Millisecond)
	}

	shop := map[string]string{"app": "shop", "environment": "prod"}
	want := map[string]bool{}
	const n = 400
	for i := 0; i < n; i += 20 {
		var recs []*lav1.LogRecord
		for j := i; j < i+20; j++ {
			msg := fmt.Sprintf("line %d", j)
			level := lav1.LogLevel_LOG_LEVEL_INFO
			if j%50 == 0 {
				msg, level = fmt.Sprintf("payment %d declined by bank %d", j, j/100), lav1.LogLevel_LOG_LEVEL_ERROR
			}
			want[msg] = true
			recs = append(recs, &lav1.LogRecord{Source: "rep", Labels: shop, Level: level, Message: msg})
		}
		c := a.client
		if i/20%2 == 1 {
			c = b.client
		}
		ingest(t, c, recs...)
	}
	exactlyOnce(t, a.client, "rep", want)
	exactlyOnce(t, b.client, "rep", want)

	// The tail on b saw the records ingested through a, once each.
	tailed := map[string]int{}
	for len(tailed) < n {
		resp, err := tail.Recv()
		if err != nil {
			t.Fatalf("tail after %d records: %v", len(tailed), err)
		}
		for _, r := range resp.GetRecords() {
			tailed[r.GetMessage()]++
		}
	}
	for m, k := range tailed {
		if k != 1 || !want[m] {
			t.Fatalf("tail on b: %q %d times", m, k)
		}
	}

	// Both tie the signature to revision 7.
	sigID := signature.ID("app:shop\x00prod", signature.Template("payment 0 declined by bank 0"))
	for name, c := range map[string]lav1.LogAggregatorServiceClient{"a": a.client, "b": b.client} {
		resp, err := c.GetErrorSummary(t.Context(), &lav1.GetErrorSummaryRequest{Window: dur(time.Hour), Application: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetSignatures()) != 1 {
			t.Fatalf("%s: signatures %v", name, resp.GetSignatures())
		}
		s := resp.GetSignatures()[0]
		if s.GetId() != sigID || s.GetTotalCount() != n/50 || s.GetFirstSeenRevision() != "7" || s.GetFirstSeenRolloutId() != "ro-7" {
			t.Fatalf("%s: signature %v", name, s)
		}
	}

	// A signature whose claimer died before announcing it is announced by
	// a replica once the claim is older than ClaimTimeout.
	kv, err := e.js.KeyValue(t.Context(), logaggregator.SharedBucket)
	if err != nil {
		t.Fatal(err)
	}
	ghostID := signature.ID("app:shop\x00prod", signature.Template("ghost claim 1"))
	if _, err := kv.Create(t.Context(), "signature."+ghostID, []byte("claimed la-gone")); err != nil {
		t.Fatal(err)
	}
	ingest(t, a.client, &lav1.LogRecord{Source: "rep", Labels: shop, Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "ghost claim 1"})
	want["ghost claim 1"] = true
	deadline = time.Now().Add(10 * time.Second)
	var evs map[string]int
	for {
		evs = signatureEvents(t, e.js)
		if evs[ghostID] > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // time for a double to show
	evs = signatureEvents(t, e.js)
	if len(evs) != 2 || evs[sigID] != 1 || evs[ghostID] != 1 {
		t.Fatalf("signature.new events by signature: %v, want %s and %s once each", evs, sigID, ghostID)
	}

	// A deletion through a and a policy through b apply on both.
	now := time.Now()
	dr, err := a.client.DeleteLogs(t.Context(), &lav1.DeleteLogsRequest{Source: "gone", EndTime: ts(now.Add(time.Minute))})
	if err != nil || dr.GetDeletedCount() != 0 {
		t.Fatalf("delete nothing: %v %v", dr, err)
	}
	var gone []*lav1.LogRecord
	for i := range 10 {
		gone = append(gone, &lav1.LogRecord{Source: "gone", Message: fmt.Sprint("gone ", i), Time: ts(now.Add(-time.Duration(i) * time.Second))})
	}
	ingest(t, b.client, gone...)
	waitQuery(t, a.client, &lav1.QueryLogsRequest{Sources: []string{"gone"}, Since: dur(time.Hour)}, 10)
	dr, err = a.client.DeleteLogs(t.Context(), &lav1.DeleteLogsRequest{Source: "gone", StartTime: ts(now.Add(-4500 * time.Millisecond)), EndTime: ts(now.Add(time.Minute))})
	if err != nil || dr.GetDeletedCount() != 5 {
		t.Fatalf("delete through a: %v %v", dr, err)
	}
	waitQuery(t, b.client, &lav1.QueryLogsRequest{Sources: []string{"gone"}, Since: dur(time.Hour)}, 5)
	pol, err := b.client.UpdateRetentionPolicy(t.Context(), &lav1.UpdateRetentionPolicyRequest{
		Policy:     &lav1.RetentionPolicy{Sources: []*lav1.SourceRetention{{Source: "pipeline", Limits: &lav1.RetentionLimits{MaxAge: dur(5 * time.Minute)}}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"sources"}},
	})
	if err != nil || len(pol.GetPolicy().GetSources()) != 1 {
		t.Fatalf("policy through b: %v %v", pol, err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		got, err := a.client.GetRetentionPolicy(t.Context(), &lav1.GetRetentionPolicyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if proto.Equal(got.GetPolicy(), pol.GetPolicy()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy on a %v, on b %v", got.GetPolicy(), pol.GetPolicy())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// b stops; what a indexes meanwhile stays in the stream until b has
	// indexed it too.
	b.stop()
	stopped, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var later []*lav1.LogRecord
	for i := range 50 {
		msg := fmt.Sprint("while b is down ", i)
		want[msg] = true
		later = append(later, &lav1.LogRecord{Source: "rep", Message: msg})
		if len(later) == 10 {
			ingest(t, a.client, later...)
			later = nil
		}
	}
	exactlyOnce(t, a.client, "rep", want)
	time.Sleep(time.Second) // several purge rounds past the duplicate window
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq > stopped.State.LastSeq+1 || info.State.LastSeq < stopped.State.LastSeq+5 {
		t.Fatalf("stream holds %d..%d with b stopped at %d: purged what b has not indexed", info.State.FirstSeq, info.State.LastSeq, stopped.State.LastSeq)
	}
	b2 := eb.start(t, replicaCfg("la-b"))
	exactlyOnce(t, b2.client, "rep", want)
	// Both have indexed everything: the stream is purged.
	deadline = time.Now().Add(10 * time.Second)
	for {
		info, err := stream.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream still holds %d messages after both replicas indexed them", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if evs := signatureEvents(t, e.js); len(evs) != 2 {
		t.Fatalf("signature.new events after b caught up: %v", evs)
	}
	pubMu.Lock()
	defer pubMu.Unlock()
	if len(published) != 2 || published[sigID] != 1 || published[ghostID] != 1 {
		t.Fatalf("signature.new publications by signature: %v, want %s and %s once each", published, sigID, ghostID)
	}
}
