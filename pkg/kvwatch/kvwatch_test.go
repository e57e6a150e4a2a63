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

func TestInitialThenFollow(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, err := srv.Connect("kvwatch-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kvwatch_test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := kv.PutString(ctx, k, "v-"+k); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()

	m := &mirror{m: map[string]string{}}
	if err := kvwatch.Initial(ctx, w, m.apply); err != nil {
		t.Fatal(err)
	}
	if len(m.m) != 2 || m.m["a"] != "v-a" || m.m["b"] != "v-b" {
		t.Fatalf("after Initial: %v, want a and b", m.m)
	}

	followCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		kvwatch.Follow(followCtx, w, m.apply)
		close(done)
	}()
	if _, err := kv.PutString(ctx, "d", "v-d"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, hasA := m.get("a")
		if d, _ := m.get("d"); d == "v-d" && !hasA {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Follow did not mirror the put and the delete: %v", m.m)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return when its context ended")
	}
}

func TestInitialEndsWithTheWatcherOrContext(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, err := srv.Connect("kvwatch-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kvwatch_end"})
	if err != nil {
		t.Fatal(err)
	}
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
