package lease

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine"))
}

// replica is one process's view: its own NATS connection and Store.
type replica struct {
	nc    *nats.Conn
	store *Store
}

// open connects a new replica named holder to srv.
func open(t *testing.T, srv *natstest.Server, holder string) *replica {
	t.Helper()
	nc, js := srv.Client(t, holder)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Open(ctx, js, Config{Holder: holder})
	if err != nil {
		t.Fatal(err)
	}
	return &replica{nc: nc, store: st}
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestOpenRejectsBadHolder(t *testing.T) {
	srv := natstest.Start(t, "")
	for _, h := range []string{"", "a.b", "a b", "a*"} {
		if _, err := Open(context.Background(), srv.JetStream, Config{Holder: h}); err == nil {
			t.Errorf("Open(holder %q) succeeded", h)
		}
	}
}

func TestRoundTTL(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{0, time.Second},
		{300 * time.Millisecond, time.Second},
		{time.Second, time.Second},
		{1500 * time.Millisecond, 2 * time.Second},
		{10 * time.Second, 10 * time.Second},
	} {
		if got := roundTTL(tc.in); got != tc.want {
			t.Errorf("roundTTL(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestTryAcquireIsExclusiveAndRenews(t *testing.T) {
	srv := natstest.Start(t, "")
	a, b := open(t, srv, "a"), open(t, srv, "b")
	ctx := testContext(t, time.Minute)

	l, err := a.store.TryAcquire(ctx, "job.1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.TryAcquire(ctx, "job.1", time.Second); !errors.Is(err, ErrHeld) {
		t.Fatalf("second TryAcquire in the same store: err = %v, want ErrHeld", err)
	}
	// Held across three TTLs: renewal keeps it, nobody else gets it.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := b.store.TryAcquire(ctx, "job.1", time.Second); !errors.Is(err, ErrHeld) {
			t.Fatalf("b took a held lease: err = %v", err)
		}
		if h, err := b.store.HolderOf(ctx, "job.1"); err != nil || h != "a" {
			t.Fatalf("HolderOf = %q, %v; want a", h, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !l.Valid() || l.Err() != nil {
		t.Fatalf("lease not valid after renewals: %v", l.Err())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(l.Err(), ErrReleased) || l.Valid() {
		t.Fatalf("after Release: Err = %v, Valid = %v", l.Err(), l.Valid())
	}
	if h, err := b.store.HolderOf(ctx, "job.1"); err != nil || h != "" {
		t.Fatalf("HolderOf after release = %q, %v; want nobody", h, err)
	}
	lb, err := b.store.TryAcquire(ctx, "job.1", time.Second)
	if err != nil {
		t.Fatalf("b after release: %v", err)
	}
	// A stale Release of a's ended lease leaves b's alone.
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.store.HolderOf(ctx, "job.1"); h != "b" {
		t.Fatalf("holder = %q after a's second Release, want b", h)
	}
	_ = lb.Release(ctx)
}

// TestMutualExclusionUnderContention: many holders, several goroutines
// each, all wanting one key; the critical section is never shared and
// every acquisition is counted once.
func TestMutualExclusionUnderContention(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := testContext(t, 3*time.Minute)
	const holders, perHolder, rounds = 6, 3, 8
	var inside, maxInside, total atomic.Int64
	var wg sync.WaitGroup
	perHolderCount := make([]atomic.Int64, holders)
	for h := range holders {
		r := open(t, srv, fmt.Sprintf("h%d", h))
		for range perHolder {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					l, err := r.store.Acquire(ctx, "contended", 5*time.Second)
					if err != nil {
						t.Error(err)
						return
					}
					n := inside.Add(1)
					for {
						m := maxInside.Load()
						if n <= m || maxInside.CompareAndSwap(m, n) {
							break
						}
					}
					time.Sleep(time.Millisecond)
					total.Add(1)
					perHolderCount[h].Add(1)
					inside.Add(-1)
					if err := l.Release(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if got := maxInside.Load(); got != 1 {
		t.Errorf("max holders inside at once = %d, want 1", got)
	}
	if got, want := total.Load(), int64(holders*perHolder*rounds); got != want {
		t.Errorf("acquisitions = %d, want %d", got, want)
	}
	for h := range holders {
		if got := perHolderCount[h].Load(); got != perHolder*rounds {
			t.Errorf("holder %d acquired %d times, want %d", h, got, perHolder*rounds)
		}
	}
}

// TestOneWinnerPerRace: holders race TryAcquire on fresh keys; exactly one
// wins each.
func TestOneWinnerPerRace(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := testContext(t, 2*time.Minute)
	const holders, keys = 8, 20
	rs := make([]*replica, holders)
	for i := range rs {
		rs[i] = open(t, srv, fmt.Sprintf("r%d", i))
	}
	for k := range keys {
		key := fmt.Sprintf("race.%d", k)
		var wins atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, r := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := r.store.TryAcquire(ctx, key, 2*time.Second)
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, ErrHeld):
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Fatalf("key %s: %d winners, want 1", key, got)
		}
	}
	for _, r := range rs {
		r.nc.Close() // the leases are abandoned; keep goroutines from leaking
	}
	waitNoLeases(t, rs)
}

// waitNoLeases waits until the stores' renewal goroutines have ended.
func waitNoLeases(t *testing.T, rs []*replica) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, r := range rs {
		for {
			r.store.mu.Lock()
			n := len(r.store.held)
			r.store.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still holds %d leases", r.store.holder, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestTakeoverAfterHolderDies: a holder whose connection dies stops
// renewing; it is told (Lost) before anyone else holds the key, and another
// replica takes the key once the server expired it. Repeated over a chain
// of holders, checking at every takeover that the previous holder no longer
// considers itself valid.
func TestTakeoverAfterHolderDies(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := testContext(t, 3*time.Minute)
	const ttl = time.Second
	const chain = 5
	var minGap time.Duration = time.Hour
	prev := open(t, srv, "holder0")
	pl, err := prev.store.TryAcquire(ctx, "leader", ttl)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= chain; i++ {
		next := open(t, srv, fmt.Sprintf("holder%d", i))
		// Held past its TTL while alive.
		time.Sleep(2 * ttl)
		if _, err := next.store.TryAcquire(ctx, "leader", ttl); !errors.Is(err, ErrHeld) {
			t.Fatalf("round %d: took a live lease: %v", i, err)
		}
		prev.nc.Close() // killed: no release, no renewal
		var nl *Lease
		for nl == nil {
			callStart := time.Now()
			l, err := next.store.TryAcquire(ctx, "leader", ttl)
			callEnd := time.Now()
			switch {
			case err == nil:
				nl = l
				if pl.Valid() {
					t.Fatalf("round %d: new holder acquired while the old one is still valid", i)
				}
				pl.mu.Lock()
				until := pl.validUntil
				pl.mu.Unlock()
				if !until.Before(callEnd) {
					t.Fatalf("round %d: old validity ends %s after the takeover", i, until.Sub(callEnd))
				}
				select {
				case <-pl.Lost():
				default:
					t.Fatalf("round %d: old holder not told it lost the lease", i)
				}
				if gap := callStart.Sub(until); gap < minGap {
					minGap = gap
				}
			case errors.Is(err, ErrHeld):
				time.Sleep(20 * time.Millisecond)
			default:
				t.Fatal(err)
			}
		}
		if !errors.Is(pl.Err(), ErrLost) {
			t.Fatalf("round %d: old lease Err = %v, want ErrLost", i, pl.Err())
		}
		prev, pl = next, nl
	}
	t.Logf("smallest gap between the old holder's validity end and the start of the winning takeover call: %s", minGap)
	_ = pl.Release(ctx)
}

// TestLostWhenTakenOver: a lease whose key is overwritten under it (as by a
// replica that reclaimed it) is lost at the next renewal.
func TestLostWhenTakenOver(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := testContext(t, time.Minute)
	a := open(t, srv, "a")
	l, err := a.store.TryAcquire(ctx, "k", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := srv.JetStream.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte(`{"holder":"intruder"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-ctx.Done():
		t.Fatal("lease not lost after being overwritten")
	}
	if !errors.Is(l.Err(), ErrLost) {
		t.Fatalf("Err = %v, want ErrLost", l.Err())
	}
}

// TestReleaseHandsOverQuickly: a waiter gets the key as soon as the holder
// releases it, long before its TTL.
func TestReleaseHandsOverQuickly(t *testing.T) {
	srv := natstest.Start(t, "")
	a, b := open(t, srv, "a"), open(t, srv, "b")
	const ttl = 5 * time.Minute // a waiter that waited for expiry would time out
	ctx := testContext(t, time.Minute)
	la, err := a.store.TryAcquire(ctx, "deploy.shop", ttl)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lease, 1)
	go func() {
		l, err := b.store.Acquire(ctx, "deploy.shop", ttl)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("b acquired while a held the lease")
	default:
	}
	released := time.Now()
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lb := <-got
	if lb == nil {
		t.FailNow()
	}
	t.Logf("hand-over after release: %s", time.Since(released))
	if h, _ := a.store.HolderOf(ctx, "deploy.shop"); h != "b" {
		t.Fatalf("holder = %q, want b", h)
	}
	_ = lb.Release(ctx)
}

// TestRestartedHolderReclaims: a process restarted with the same holder id
// takes back the lease its previous run left, at once; others still can't.
func TestRestartedHolderReclaims(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := testContext(t, time.Minute)
	first := open(t, srv, "runner-1")
	if _, err := first.store.TryAcquire(ctx, "run.42", 6*time.Second); err != nil {
		t.Fatal(err)
	}
	first.nc.Close() // kill -9
	other := open(t, srv, "runner-2")
	if _, err := other.store.TryAcquire(ctx, "run.42", time.Minute); !errors.Is(err, ErrHeld) {
		t.Fatalf("other holder: err = %v, want ErrHeld", err)
	}
	again := open(t, srv, "runner-1")
	l, err := again.store.TryAcquire(ctx, "run.42", time.Minute)
	if err != nil {
		t.Fatalf("restarted holder: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if l.Err() != nil {
		t.Fatalf("reclaimed lease lost: %v", l.Err())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	waitNoLeases(t, []*replica{first})
}

// TestLostWhenNATSUnreachable: a holder cut off from NATS is told before
// its validity ends, not later.
func TestLostWhenNATSUnreachable(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := testContext(t, time.Minute)
	a := open(t, srv, "a")
	const ttl = 2 * time.Second
	before := time.Now()
	l, err := a.store.TryAcquire(ctx, "k", ttl)
	if err != nil {
		t.Fatal(err)
	}
	// Cut off without closing the connection for good: the server drops
	// the client, which keeps reconnecting in vain.
	srv.Shutdown()
	<-l.Lost()
	if !errors.Is(l.Err(), ErrLost) {
		t.Fatalf("Err = %v, want ErrLost", l.Err())
	}
	// It must not be lost before validity of the first write either: that
	// would mean renewals are not tried.
	if since := time.Since(before); since < validity(ttl) {
		t.Fatalf("lost %s after acquisition, before its validity %s ended", since, validity(ttl))
	}
}

// freezer is a TCP proxy to a NATS server that can stop forwarding while
// keeping connections open: a network partition the client cannot see.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			f.wg.Add(2)
			go f.pipe(c, up)
			go f.pipe(up, c)
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if f.frozen.Load() {
			continue // swallowed
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (f *freezer) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestNoTwoHoldersDuringPartition: the holder is cut off from NATS without
// noticing (packets swallowed); sampled every few milliseconds, never are
// both it and the taker valid, and the taker gets the key only after the
// holder was told it lost it.
func TestNoTwoHoldersDuringPartition(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newFreezer(t, u.Host)
	connect := func(name, addr string) *Store {
		nc, err := nats.Connect("nats://"+addr, nats.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := Open(context.Background(), js, Config{Holder: name})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	a := connect("a", proxy.ln.Addr().String())
	b := connect("b", u.Host)
	ctx := testContext(t, 2*time.Minute)
	const ttl = 2 * time.Second
	la, err := a.TryAcquire(ctx, "k", ttl)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl) // a few renewals through the proxy
	proxy.frozen.Store(true)
	frozenAt := time.Now()

	var lb *Lease
	var samples, overlaps int
	for lb == nil {
		l, err := b.TryAcquire(ctx, "k", ttl)
		switch {
		case err == nil:
			lb = l
		case !errors.Is(err, ErrHeld):
			t.Fatal(err)
		}
		for range 5 {
			samples++
			if la.Valid() && lb != nil && lb.Valid() {
				overlaps++
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	select {
	case <-la.Lost():
	default:
		t.Fatal("b acquired before a was told it lost the lease")
	}
	if overlaps != 0 {
		t.Fatalf("%d of %d samples saw both holders valid", overlaps, samples)
	}
	t.Logf("taken over %s after the partition (ttl %s), %d samples", time.Since(frozenAt), ttl, samples)
	// Both valid never, sampled on for another TTL while b renews.
	for end := time.Now().Add(ttl); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if la.Valid() {
			t.Fatal("a valid again after losing the lease")
		}
		if !lb.Valid() {
			t.Fatal("b's lease not valid while renewed")
		}
	}
	_ = lb.Release(ctx)
	proxy.frozen.Store(false)
}

// TestHoldElectsOneLeader: replicas Hold one key; one works at a time, and
// when the leader is killed another takes over.
func TestHoldElectsOneLeader(t *testing.T) {
	srv := natstest.Start(t, "")
	const ttl = time.Second
	var mu sync.Mutex
	leader, overlaps := "", 0
	started := map[string]int{}
	rs := []*replica{open(t, srv, "a"), open(t, srv, "b"), open(t, srv, "c")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.store.Hold(ctx, "leader", ttl, func(ctx context.Context) {
				mu.Lock()
				if leader != "" {
					overlaps++
				}
				leader = r.store.Holder()
				started[leader]++
				mu.Unlock()
				<-ctx.Done()
				mu.Lock()
				leader = ""
				mu.Unlock()
			})
		}()
	}
	current := func() string {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			mu.Lock()
			l := leader
			mu.Unlock()
			if l != "" {
				return l
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader within a minute")
		return ""
	}
	first := current()
	for _, r := range rs {
		if r.store.Holder() == first {
			r.nc.Close()
		}
	}
	var second string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if l := current(); l != first {
			second = l
			break
		}
	}
	if second == "" {
		t.Fatalf("leader %s killed, nobody took over", first)
	}
	cancel()
	wg.Wait()
	if overlaps != 0 {
		t.Fatalf("%d times a leader started while another worked", overlaps)
	}
	t.Logf("leaders: %v", started)
}

func TestDefaultHolderIsValidAndUnique(t *testing.T) {
	a, b := DefaultHolder(), DefaultHolder()
	if !tokenRE.MatchString(a) || !tokenRE.MatchString(b) {
		t.Fatalf("invalid holder ids %q %q", a, b)
	}
	if a == b {
		t.Fatalf("two default holders are both %q", a)
	}
}
