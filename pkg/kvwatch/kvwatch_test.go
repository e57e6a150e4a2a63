package kvwatch_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/opsuite/opsuite/pkg/kvwatch"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
)

// mirror is a map kept from a bucket's entries.
type mirror struct {
	mu sync.Mutex
	m  map[string]string
}

func (m *mirror) apply(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(m.m, e.Key())
		return
	}
	m.m[e.Key()] = string(e.Value())
}

func (m *mirror) get(k string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[k]
	return v, ok
}

// bucket is a new KV bucket on an embedded NATS server, its JetStream
// handle, and a context for the test.
func bucket(t *testing.T) (context.Context, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	_, js := natstest.Start(t, "").Client(t, "kvwatch-test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kvwatch_test"})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, js, kv
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMirrorLoadsThenFollows(t *testing.T) {
	ctx, _, kv := bucket(t)
	for _, k := range []string{"a", "b", "c"} {
		if _, err := kv.PutString(ctx, k, "v-"+k); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	m := &mirror{m: map[string]string{}}
	mi, err := kvwatch.StartMirror(ctx, kv, m.apply, kvwatch.MirrorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.m) != 2 || m.m["a"] != "v-a" || m.m["b"] != "v-b" {
		t.Fatalf("after StartMirror: %v, want a and b", m.m)
	}
	if mi.Applied() != 4 {
		t.Fatalf("Applied = %d after the initial values, want 4 (the delete of c)", mi.Applied())
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		mi.Run(runCtx)
		close(done)
	}()
	rev, err := kv.PutString(ctx, "d", "v-d")
	if err != nil {
		t.Fatal(err)
	}
	// A writer reads itself back: once WaitApplied returns, apply has
	// seen its revision.
	if err := mi.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if d, _ := m.get("d"); d != "v-d" {
		t.Fatalf("WaitApplied(%d) returned before d was applied: %v", rev, m.m)
	}
	if err := kv.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	// CaughtUp covers what the bucket holds, written by anyone.
	if err := mi.CaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, hasA := m.get("a"); hasA {
		t.Fatalf("CaughtUp returned before the delete of a was applied: %v", m.m)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if err := mi.WaitApplied(short, rev+100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied for a revision never written = %v, want the context's error", err)
	}
	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	if n := mi.Restarts(); n != 0 {
		t.Fatalf("a healthy watch was restarted %d times", n)
	}
}

// A watch whose consumer vanished (as when the NATS server holding it goes
// away in a cluster) is replaced well before the client library's own
// heartbeat check would notice, and nothing is applied twice or skipped.
func TestMirrorReplacesAStalledWatch(t *testing.T) {
	ctx, js, kv := bucket(t)
	var (
		mu   sync.Mutex
		revs []uint64
	)
	m := &mirror{m: map[string]string{}}
	apply := func(e jetstream.KeyValueEntry) {
		mu.Lock()
		revs = append(revs, e.Revision())
		mu.Unlock()
		m.apply(e)
	}
	if _, err := kv.PutString(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	mi, err := kvwatch.StartMirror(ctx, kv, apply, kvwatch.MirrorConfig{StallCheck: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go mi.Run(ctx)

	// Lose the watch's consumer, then write.
	stream, err := js.Stream(ctx, "KV_kvwatch_test")
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	var lost int
	for name := range names.Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		lost++
	}
	if lost == 0 {
		t.Fatal("the mirror's watch has no consumer to lose")
	}
	for _, v := range []string{"2", "3"} {
		if _, err := kv.PutString(ctx, "a", v); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.PutString(ctx, "b"+v, v); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the writes after the consumer was lost", func() bool {
		a, _ := m.get("a")
		b, _ := m.get("b3")
		return a == "3" && b == "3"
	})
	if mi.Restarts() == 0 {
		t.Fatal("the writes arrived without a restart; the test lost nothing")
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Fatalf("revisions applied out of order or twice: %v", revs)
		}
	}
	if b2, _ := m.get("b2"); b2 != "2" {
		t.Fatalf("b2 = %q after the restart, want 2 (revisions applied: %v)", b2, revs)
	}
}

// A bucket whose last revision no longer exists (its message expired or
// was purged) does not make the mirror restart forever.
func TestMirrorSettlesWhenTheLastRevisionIsGone(t *testing.T) {
	ctx, js, kv := bucket(t)
	m := &mirror{m: map[string]string{}}
	mi, err := kvwatch.StartMirror(ctx, kv, m.apply, kvwatch.MirrorConfig{StallCheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go mi.Run(ctx)
	if _, err := kv.PutString(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	rev, err := kv.PutString(ctx, "b", "1")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both puts", func() bool { return mi.Applied() == rev })
	// Remove the newest message from under the bucket, then stall the
	// watch: the replacement finds nothing after the last applied
	// revision and must settle.
	stream, err := js.Stream(ctx, "KV_kvwatch_test")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV.kvwatch_test.b")); err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.PutString(ctx, "c", "1"); err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV.kvwatch_test.c")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mirror to settle at the bucket's last revision", func() bool { return mi.Applied() == rev+1 })
	settled := mi.Restarts()
	time.Sleep(500 * time.Millisecond) // ten stall checks
	if n := mi.Restarts(); n != settled {
		t.Fatalf("restarts went from %d to %d on a bucket with nothing new", settled, n)
	}
}

func TestInitialEndsWithTheWatcherOrContext(t *testing.T) {
	ctx, _, kv := bucket(t)
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Updates only: no end-of-initial-values marker comes, so Initial
	// waits for the context.
	short, c := context.WithTimeout(ctx, 200*time.Millisecond)
	defer c()
	if err := kvwatch.Initial(short, w, func(jetstream.KeyValueEntry) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Initial with no marker = %v, want the context's error", err)
	}
	_ = w.Stop()
	if err := kvwatch.Initial(ctx, w, func(jetstream.KeyValueEntry) {}); !errors.Is(err, kvwatch.ErrEnded) {
		t.Fatalf("Initial on a stopped watcher = %v, want ErrEnded", err)
	}
}
