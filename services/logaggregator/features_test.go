package logaggregator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/logaggregator"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func ingest(t *testing.T, c lav1.LogAggregatorServiceClient, recs ...*lav1.LogRecord) {
	t.Helper()
	resp, err := c.Ingest(t.Context(), &lav1.IngestRequest{Batch: &lav1.LogBatch{Records: recs}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRejected() != 0 {
		t.Fatalf("ingest rejected records: %v", resp)
	}
}

func TestTailFollowsNewRecordsWithinASecond(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{})
	c := inst.client
	ingest(t, c, &lav1.LogRecord{Source: "monitor", Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "old error"},
		&lav1.LogRecord{Source: "monitor", Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: "old info"})
	waitQuery(t, c, &lav1.QueryLogsRequest{Sources: []string{"monitor"}}, 2)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	tail, err := c.TailLogs(ctx, &lav1.TailLogsRequest{Sources: []string{"monitor"}, MinLevel: lav1.LogLevel_LOG_LEVEL_WARN, Since: dur(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	first, err := tail.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := messages(first.GetRecords()); fmt.Sprint(got) != "[old error]" {
		t.Fatalf("backfill %q", got)
	}
	for i := range 3 {
		sent := time.Now()
		ingest(t, c,
			&lav1.LogRecord{Source: "monitor", Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: "filtered out"},
			&lav1.LogRecord{Source: "deployer", Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "other source"},
			&lav1.LogRecord{Source: "monitor/rules", Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: fmt.Sprintf("new error %d", i)})
		resp, err := tail.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if lag := time.Since(sent); lag > time.Second {
			t.Fatalf("tail saw the line after %v", lag)
		}
		if got := messages(resp.GetRecords()); fmt.Sprint(got) != fmt.Sprintf("[new error %d]", i) {
			t.Fatalf("tail got %q", got)
		}
	}
	// Draining ends tails so the server can stop.
	inst.svc.Drain()
	if _, err := tail.Recv(); err == nil {
		t.Fatal("tail still open after drain")
	}
}

func publishRollout(t *testing.T, bus *eventbus.Bus, typ string, r *deployerv1.Rollout, id string) {
	t.Helper()
	ev := eventbus.Event{Type: typ, ID: id, Subject: r.GetApplication()}
	switch typ {
	case "opsuite.deploy.rollout.started":
		ev.Data = &eventsv1.RolloutStarted{Rollout: r}
	case "opsuite.deploy.rollout.completed":
		ev.Data = &eventsv1.RolloutCompleted{Rollout: r}
	}
	if _, err := bus.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
}

func TestErrorSummarySignaturesAndRevisions(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{})
	c := inst.client
	// Revision 3 of shop goes live in prod.
	r := &deployerv1.Rollout{Id: "ro-3", Application: "shop", Environment: "prod", FromRevision: 2, ToRevision: 3,
		Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED}
	publishRollout(t, e.bus, "opsuite.deploy.rollout.started", r, "ro-3-start")
	publishRollout(t, e.bus, "opsuite.deploy.rollout.completed", r, "ro-3-done")
	time.Sleep(300 * time.Millisecond) // the consumer applies them asynchronously

	sub, err := e.srv.Conn.SubscribeSync(logaggregator.EventSignatureNew)
	if err != nil {
		t.Fatal(err)
	}
	shop := map[string]string{"app": "shop", "environment": "prod"}
	now := time.Now()
	var recs []*lav1.LogRecord
	for i := range 5 {
		recs = append(recs, &lav1.LogRecord{Source: fmt.Sprintf("app/shop/shop-v3-%d", i%2), Labels: shop, Level: lav1.LogLevel_LOG_LEVEL_ERROR,
			Time: ts(now.Add(-time.Duration(5-i) * time.Second)), Message: fmt.Sprintf("user %d not found in /var/lib/shop/users-%d.db", 1000+i, i)})
	}
	recs = append(recs,
		&lav1.LogRecord{Source: "app/shop/shop-v3-0", Labels: shop, Level: lav1.LogLevel_LOG_LEVEL_FATAL, Time: ts(now.Add(-time.Second)), Message: "dial tcp 10.1.2.3:5432: connection refused"},
		&lav1.LogRecord{Source: "deployer", Level: lav1.LogLevel_LOG_LEVEL_ERROR, Time: ts(now.Add(-time.Second)), Message: "request 7f3a9b2c-1d2e-4f5a-8b9c-0d1e2f3a4b5c failed after 3 tries"},
		&lav1.LogRecord{Source: "deployer", Level: lav1.LogLevel_LOG_LEVEL_INFO, Time: ts(now.Add(-time.Second)), Message: "not an error 1"},
	)
	ingest(t, c, recs...)
	waitQuery(t, c, &lav1.QueryLogsRequest{MinLevel: lav1.LogLevel_LOG_LEVEL_ERROR}, 7)

	resp, err := c.GetErrorSummary(t.Context(), &lav1.GetErrorSummaryRequest{Window: dur(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTotalCount() != 7 || len(resp.GetSources()) != 3 {
		t.Fatalf("summary totals: %v", resp)
	}
	top := resp.GetSources()[0]
	if top.GetSource() != "app/shop/shop-v3-0" || top.GetCount() != 4 || top.GetFatalCount() != 1 || top.GetSignatureCount() != 2 {
		t.Fatalf("top source: %v", top)
	}
	if len(resp.GetSignatures()) != 3 {
		t.Fatalf("signatures: %v", resp.GetSignatures())
	}
	sig := resp.GetSignatures()[0]
	if sig.GetTemplate() != "user <num> not found in <path>" || sig.GetCount() != 5 || sig.GetTotalCount() != 5 ||
		sig.GetApplication() != "shop" || sig.GetEnvironment() != "prod" || sig.GetFirstSeenRevision() != "3" ||
		sig.GetFirstSeenRolloutId() != "ro-3" || !sig.GetNewInWindow() || len(sig.GetSources()) != 2 ||
		sig.GetSampleMessage() != "user 1004 not found in /var/lib/shop/users-4.db" {
		t.Fatalf("signature: %v", sig)
	}
	templates := map[string]bool{}
	for _, s := range resp.GetSignatures() {
		templates[s.GetTemplate()] = true
	}
	for _, want := range []string{"dial tcp <ip>:<num>: connection refused", "request <uuid> failed after <num> tries"} {
		if !templates[want] {
			t.Errorf("no signature %q in %v", want, templates)
		}
	}
	// Filter by application.
	app, err := c.GetErrorSummary(t.Context(), &lav1.GetErrorSummaryRequest{Window: dur(time.Minute), Application: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if app.GetTotalCount() != 6 || len(app.GetSignatures()) != 2 {
		t.Fatalf("application summary: %v", app)
	}
	// A new signature is announced once.
	seen := map[string]bool{}
	for range 3 {
		msg, err := sub.NextMsg(2 * time.Second)
		if err != nil {
			t.Fatalf("signature.new events: %v (got %d)", err, len(seen))
		}
		var ev eventsv1.ErrorSignatureNew
		if err := proto.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetFirstRecord().GetMessage() == "" || ev.GetSignature().GetId() == "" {
			t.Fatalf("signature.new without first record or id: %v", &ev)
		}
		seen[ev.GetSignature().GetTemplate()] = true
	}
	// Counts survive a restart; more occurrences add to the total.
	inst.stop()
	inst2 := e.start(t, logaggregator.Config{})
	ingest(t, inst2.client, &lav1.LogRecord{Source: "app/shop/shop-v3-1", Labels: shop, Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "user 42 not found in /tmp/x.db"})
	waitQuery(t, inst2.client, &lav1.QueryLogsRequest{MinLevel: lav1.LogLevel_LOG_LEVEL_ERROR}, 8)
	resp, err = inst2.client.GetErrorSummary(t.Context(), &lav1.GetErrorSummaryRequest{Window: dur(time.Minute), Application: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.GetSignatures()[0]; s.GetTotalCount() != 6 || s.GetFirstSeenRevision() != "3" {
		t.Fatalf("after restart: %v", s)
	}
	_, err = inst2.client.GetErrorSummary(t.Context(), &lav1.GetErrorSummaryRequest{Window: dur(-time.Minute)})
	assertCode(t, err, codes.InvalidArgument)
}

func TestDeleteAndRetention(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{RetentionInterval: 100 * time.Millisecond})
	c := inst.client
	now := time.Now()
	var recs []*lav1.LogRecord
	for i := range 10 {
		at := now.Add(-time.Duration(10-i) * time.Minute)
		recs = append(recs,
			&lav1.LogRecord{Source: "app/shop/a", Time: ts(at), Message: fmt.Sprintf("shop a %d", i)},
			&lav1.LogRecord{Source: "app/cart/a", Time: ts(at), Message: fmt.Sprintf("cart %d", i)},
			&lav1.LogRecord{Source: "pipeline/build/1", Time: ts(at), Message: fmt.Sprintf("build %d", i)},
		)
	}
	ingest(t, c, recs...)
	all := &lav1.QueryLogsRequest{Since: dur(time.Hour), PageSize: 1000}
	waitQuery(t, c, all, 30)

	// Delete shop's records of the middle of the range: validate first.
	del := &lav1.DeleteLogsRequest{Source: "app/shop", StartTime: ts(now.Add(-7*time.Minute - time.Second)), EndTime: ts(now.Add(-3*time.Minute - time.Second)), ValidateOnly: true}
	dr, err := c.DeleteLogs(t.Context(), del)
	if err != nil {
		t.Fatal(err)
	}
	if dr.GetDeletedCount() != 4 {
		t.Fatalf("validate only: %d", dr.GetDeletedCount())
	}
	waitQuery(t, c, all, 30)
	del.ValidateOnly = false
	if dr, err = c.DeleteLogs(t.Context(), del); err != nil || dr.GetDeletedCount() != 4 {
		t.Fatalf("delete: %v %v", dr, err)
	}
	waitQuery(t, c, all, 26)
	waitQuery(t, c, &lav1.QueryLogsRequest{Sources: []string{"app/shop"}}, 6)
	for _, bad := range []*lav1.DeleteLogsRequest{
		{},
		{Source: "app", StartTime: ts(now), EndTime: ts(now.Add(-time.Hour))},
	} {
		_, err := c.DeleteLogs(t.Context(), bad)
		assertCode(t, err, codes.InvalidArgument)
	}

	// Per-source age limit: pipelines keep 5 minutes, the rest the default.
	pol, err := c.UpdateRetentionPolicy(t.Context(), &lav1.UpdateRetentionPolicyRequest{
		Policy:     &lav1.RetentionPolicy{Sources: []*lav1.SourceRetention{{Source: "pipeline", Limits: &lav1.RetentionLimits{MaxAge: dur(5 * time.Minute)}}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"sources"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if pol.GetPolicy().GetDefaultLimits().GetMaxAge().AsDuration() != 7*24*time.Hour {
		t.Fatalf("default limits changed: %v", pol)
	}
	// Records are dropped in whole blocks: this single batch put each
	// source in one block, so the pipeline block (newest 1 minute old) stays
	// until it is all older than the limit. Age it by asking for 30s.
	_, err = c.UpdateRetentionPolicy(t.Context(), &lav1.UpdateRetentionPolicyRequest{
		Policy:     &lav1.RetentionPolicy{Sources: []*lav1.SourceRetention{{Source: "pipeline", Limits: &lav1.RetentionLimits{MaxAge: dur(time.Minute)}}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"sources"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitQuery(t, c, &lav1.QueryLogsRequest{Sources: []string{"pipeline"}}, 0)
	waitQuery(t, c, all, 16)

	// Size limit on the total: everything but the newest blocks goes.
	ingest(t, c, &lav1.LogRecord{Source: "late", Message: "newest"})
	waitQuery(t, c, all, 17)
	if _, err := c.UpdateRetentionPolicy(t.Context(), &lav1.UpdateRetentionPolicyRequest{
		Policy: &lav1.RetentionPolicy{MaxTotalBytes: 1}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"max_total_bytes"}},
	}); err != nil {
		t.Fatal(err)
	}
	waitQuery(t, c, all, 0)

	for _, bad := range []*lav1.UpdateRetentionPolicyRequest{
		{},
		{Policy: &lav1.RetentionPolicy{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"nope"}}},
		{Policy: &lav1.RetentionPolicy{DefaultLimits: &lav1.RetentionLimits{MaxAge: dur(time.Second)}}},
		{Policy: &lav1.RetentionPolicy{Sources: []*lav1.SourceRetention{{Source: "a"}, {Source: "a", Limits: &lav1.RetentionLimits{}}}}},
	} {
		_, err := c.UpdateRetentionPolicy(t.Context(), bad)
		assertCode(t, err, codes.InvalidArgument)
	}
	got, err := c.GetRetentionPolicy(t.Context(), &lav1.GetRetentionPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPolicy().GetMaxTotalBytes() != 1 || len(got.GetPolicy().GetSources()) != 1 {
		t.Fatalf("policy: %v", got)
	}
}

// TestIndexedMessagesPurgedFromStream: the write-ahead stream only holds
// what is not yet indexed (plus the duplicate window); queries and restarts
// do not need the purged messages.
func TestIndexedMessagesPurgedFromStream(t *testing.T) {
	e := newEnv(t)
	cfg := logaggregator.Config{DuplicateWindow: 300 * time.Millisecond, RetentionInterval: 100 * time.Millisecond}
	inst := e.start(t, cfg)
	for i := range 5 {
		ingest(t, inst.client, &lav1.LogRecord{Source: "purge", Message: fmt.Sprint("line ", i)})
	}
	waitQuery(t, inst.client, &lav1.QueryLogsRequest{Sources: []string{"purge"}}, 5)
	stream, err := e.js.Stream(t.Context(), logaggregator.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := stream.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 && info.State.LastSeq >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream still holds %d messages", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	inst.stop()
	inst2 := e.start(t, cfg)
	ingest(t, inst2.client, &lav1.LogRecord{Source: "purge", Message: "after restart"})
	waitQuery(t, inst2.client, &lav1.QueryLogsRequest{Sources: []string{"purge"}}, 6)
}

// TestStreamRecreatedBehindIndexReindexed: the write-ahead stream is deleted
// while the aggregator runs (it recreates it and goes on), then recreated
// by someone else while it is stopped and filled from NATS: every record
// of the new streams is indexed, none twice, and sequences keep
// increasing.
func TestStreamRecreatedBehindIndexReindexed(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, logaggregator.Config{})
	var lastSeq uint64
	ingestSeq := func(c lav1.LogAggregatorServiceClient, msg string) {
		t.Helper()
		resp, err := c.Ingest(t.Context(), &lav1.IngestRequest{Batch: &lav1.LogBatch{Records: []*lav1.LogRecord{{Source: "reset", Message: msg}}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetLastSequence() <= lastSeq {
			t.Fatalf("sequence %d after %d: positions must keep increasing", resp.GetLastSequence(), lastSeq)
		}
		lastSeq = resp.GetLastSequence()
	}
	for i := range 3 {
		ingestSeq(inst.client, fmt.Sprint("before ", i))
	}
	waitQuery(t, inst.client, &lav1.QueryLogsRequest{Sources: []string{"reset"}}, 3)

	// Deleted while running: the aggregator recreates the stream.
	if err := e.js.DeleteStream(t.Context(), logaggregator.StreamName); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.js.Stream(t.Context(), logaggregator.StreamName); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stream not recreated by the aggregator")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 2 {
		ingestSeq(inst.client, fmt.Sprint("recreated ", i))
	}
	waitQuery(t, inst.client, &lav1.QueryLogsRequest{Sources: []string{"reset"}}, 5)
	inst.stop()

	// Recreated by someone else while the aggregator is stopped, with
	// messages published straight to NATS.
	if err := e.js.DeleteStream(t.Context(), logaggregator.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: logaggregator.StreamName, Subjects: []string{"opsuite.logs.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		data, err := proto.Marshal(&lav1.LogBatch{Records: []*lav1.LogRecord{{Message: fmt.Sprint("offline ", i)}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(t.Context(), "opsuite.logs.reset", data); err != nil {
			t.Fatal(err)
		}
	}
	inst2 := e.start(t, logaggregator.Config{})
	resp := waitQuery(t, inst2.client, &lav1.QueryLogsRequest{Sources: []string{"reset"}, PageSize: 100}, 7)
	seen := map[string]bool{}
	for _, r := range resp.GetRecords() {
		if seen[r.GetMessage()] {
			t.Fatalf("%q indexed twice", r.GetMessage())
		}
		seen[r.GetMessage()] = true
		if r.GetMessage() == "offline 1" && r.GetSequence() <= lastSeq {
			t.Fatalf("record of the new stream at sequence %d, not after %d", r.GetSequence(), lastSeq)
		}
	}
	ingestSeq(inst2.client, "after restart")
	inst2.stop()

	// A further restart indexes nothing twice.
	inst3 := e.start(t, logaggregator.Config{})
	ingestSeq(inst3.client, "last")
	waitQuery(t, inst3.client, &lav1.QueryLogsRequest{Sources: []string{"reset"}, PageSize: 100}, 9)
	time.Sleep(300 * time.Millisecond)
	waitQuery(t, inst3.client, &lav1.QueryLogsRequest{Sources: []string{"reset"}, PageSize: 100}, 9)
}
