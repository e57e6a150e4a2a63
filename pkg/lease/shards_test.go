package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
)

func TestShardOfIsStableAndSpreads(t *testing.T) {
	counts := make([]int, 32)
	for i := range 32000 {
		key := fmt.Sprintf("target-%d", i)
		s := ShardOf(key, 32)
		if s != ShardOf(key, 32) {
			t.Fatal("ShardOf not deterministic")
		}
		counts[s]++
	}
	for s, c := range counts {
		if c < 700 || c > 1300 {
			t.Errorf("shard %d got %d of 32000 keys", s, c)
		}
	}
}

func TestShardsRejectsBadConfig(t *testing.T) {
	srv := natstest.Start(t, "")
	r := open(t, srv, "a")
	work := func(context.Context, int) {}
	for _, cfg := range []ShardsConfig{
		{Group: "", Work: work},
		{Group: "a.b", Work: work},
		{Group: "ok"},
	} {
		if _, err := r.store.Shards(cfg); err == nil {
			t.Errorf("Shards(%+v) succeeded", cfg)
		}
	}
}

// ledger records which replica runs each shard's Work, failing the test
// when two run one shard at once.
type ledger struct {
	t      *testing.T
	mu     sync.Mutex
	runner map[int]string
	starts map[string]int
	double int
}

func newLedger(t *testing.T) *ledger {
	return &ledger{t: t, runner: map[int]string{}, starts: map[string]int{}}
}

func (l *ledger) work(holder string) func(context.Context, int) {
	return func(ctx context.Context, shard int) {
		l.mu.Lock()
		if other, ok := l.runner[shard]; ok {
			l.double++
			l.t.Errorf("shard %d started by %s while %s runs it", shard, holder, other)
		}
		l.runner[shard] = holder
		l.starts[holder]++
		l.mu.Unlock()
		<-ctx.Done()
		l.mu.Lock()
		if l.runner[shard] == holder {
			delete(l.runner, shard)
		}
		l.mu.Unlock()
	}
}

// spread counts running shards per holder.
func (l *ledger) spread() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, h := range l.runner {
		out[h]++
	}
	return out
}

type member struct {
	*replica
	shards *Shards
	cancel context.CancelFunc
	done   chan error
}

func join(t *testing.T, srv *natstest.Server, holder string, led *ledger, count int, ttl time.Duration) *member {
	t.Helper()
	r := open(t, srv, holder)
	sh, err := r.store.Shards(ShardsConfig{Group: "test", Count: count, TTL: ttl, Work: led.work(holder)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{replica: r, shards: sh, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- sh.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-m.done
	})
	return m
}

// waitSpread waits until the ledger shows exactly want (holder → shards).
func waitSpread(t *testing.T, led *ledger, want map[string]int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := led.spread()
		if equalSpread(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("spread = %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func equalSpread(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestShardsRebalance: one replica takes every shard; the second and third
// joining get even shares; one leaving gracefully hands its shards back at
// once; one killed has its shards taken after its leases expire. A shard
// never runs in two replicas at once.
func TestShardsRebalance(t *testing.T) {
	srv := natstest.Start(t, "")
	led := newLedger(t)
	const count, ttl = 32, 2 * time.Second
	const within = 2 * time.Minute

	a := join(t, srv, "a", led, count, ttl)
	select {
	case <-a.shards.Ready():
	case <-time.After(within):
		t.Fatal("shards not ready")
	}
	// Ready means the first share is taken: alone, that is every shard.
	if got := len(a.shards.Owned()); got != 32 {
		t.Fatalf("ready owning %d shards, want 32", got)
	}
	waitSpread(t, led, map[string]int{"a": 32}, within)
	if got := a.shards.Owned(); len(got) != 32 || !a.shards.Owns(5) {
		t.Fatalf("a owns %v", got)
	}

	b := join(t, srv, "b", led, count, ttl)
	d := waitSpread(t, led, map[string]int{"a": 16, "b": 16}, within)
	t.Logf("second replica balanced in %s", d)

	c := join(t, srv, "c", led, count, ttl)
	d = waitSpread(t, led, map[string]int{"a": 11, "b": 11, "c": 10}, within)
	t.Logf("third replica balanced in %s", d)
	if got := c.shards.Members(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("members = %v", got)
	}

	// Graceful leave: c releases, a and b take its shards without waiting
	// for expiry.
	c.cancel()
	if err := <-c.done; err != nil {
		t.Fatal(err)
	}
	c.done <- nil
	d = waitSpread(t, led, map[string]int{"a": 16, "b": 16}, within)
	t.Logf("after a graceful leave, balanced in %s (ttl %s)", d, ttl)

	// Kill b: its connection dies, nothing is released; a takes all after
	// b's leases expire.
	killed := time.Now()
	b.nc.Close()
	d = waitSpread(t, led, map[string]int{"a": 32}, within)
	t.Logf("after a kill, a took every shard in %s (ttl %s)", d, ttl)
	if d < ttl/2 {
		t.Errorf("a took b's shards %s after the kill, before b's leases could expire", time.Since(killed))
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if led.double != 0 {
		t.Fatalf("%d shards ran twice at once", led.double)
	}
}

// TestShardsRunTwiceInOneStore: a second Run of the same group in one
// process cannot join (its membership key is held).
func TestShardsRunTwiceInOneStore(t *testing.T) {
	srv := natstest.Start(t, "")
	led := newLedger(t)
	a := join(t, srv, "a", led, 4, time.Second)
	waitSpread(t, led, map[string]int{"a": 4}, time.Minute)
	sh, err := a.store.Shards(ShardsConfig{Group: "test", Count: 4, TTL: time.Second, Work: led.work("again")})
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Run(context.Background()); !errors.Is(err, ErrHeld) {
		t.Fatalf("second Run: err = %v, want ErrHeld", err)
	}
}

// TestShardsReclaimedAfterRestart: a replica restarted with its holder id
// (after a crash, its leases still live) takes its shards back at once.
func TestShardsReclaimedAfterRestart(t *testing.T) {
	srv := natstest.Start(t, "")
	led := newLedger(t)
	const ttl = 5 * time.Minute // waiting for expiry would time the test out
	first := join(t, srv, "a", led, 8, ttl)
	waitSpread(t, led, map[string]int{"a": 8}, time.Minute)
	first.nc.Close() // crash: nothing released
	waitSpread(t, led, map[string]int{}, time.Minute)
	second := join(t, srv, "a", led, 8, ttl)
	select {
	case <-second.shards.Ready():
	case <-time.After(time.Minute):
		t.Fatal("restarted replica not ready")
	}
	if got := second.shards.Owned(); len(got) != 8 {
		t.Fatalf("restarted replica owns %v, want all 8 back at once", got)
	}
	waitSpread(t, led, map[string]int{"a": 8}, time.Minute)
}
