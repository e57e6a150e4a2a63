package healthchecker_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/healthchecker"
)

// hit is one check request a target received.
type hit struct {
	replica string
	at      time.Time
}

// fleet is an HTTP server standing for many targets (/t/<name>); it logs
// which replica checked which target when, and can fail a target.
type fleet struct {
	*httptest.Server
	mu      sync.Mutex
	hits    map[string][]hit
	failing map[string]bool
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{hits: map[string][]hit{}, failing: map[string]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/t/")
		f.mu.Lock()
		f.hits[name] = append(f.hits[name], hit{replica: r.Header.Get(healthchecker.ReplicaHeader), at: time.Now()})
		fail := f.failing[name]
		f.mu.Unlock()
		if fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// since returns the hits of name after t0.
func (f *fleet) since(name string, t0 time.Time) []hit {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hit
	for _, h := range f.hits[name] {
		if h.at.After(t0) {
			out = append(out, h)
		}
	}
	return out
}

// replicaConn gives a replica its own NATS connection and event bus, so it
// can be cut off alone.
func replicaConn(t *testing.T, e *env, name string) (*nats.Conn, jetstream.JetStream, *eventbus.Bus) {
	t.Helper()
	nc, js := e.srv.Client(t, name)
	bus, err := eventbus.New(t.Context(), nc, eventbus.Config{Source: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, bus
}

// transitions collects a Watch stream's transitions as "name:from>to".
type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) add(s string) {
	tr.mu.Lock()
	tr.got = append(tr.got, s)
	tr.mu.Unlock()
}

func (tr *transitions) count(s string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, g := range tr.got {
		if g == s {
			n++
		}
	}
	return n
}

func watchAll(t *testing.T, c hcv1.HealthCheckerServiceClient) *transitions {
	t.Helper()
	w, err := c.Watch(t.Context(), &hcv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Header(); err != nil {
		t.Fatal(err)
	}
	tr := &transitions{}
	go func() {
		for {
			m, err := w.Recv()
			if err != nil {
				return
			}
			x := m.GetTransition()
			tr.add(fmt.Sprintf("%s:%s>%s", x.GetName(), short(x.GetPreviousState()), short(x.GetState())))
		}
	}()
	return tr
}

func short(s hcv1.CheckState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "CHECK_STATE_"))
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestReplicasCheckEachTargetOnce runs two replicas on one NATS: every
// target is checked by one of them, both check some, reads and Watch work
// on either, a transition is announced once per watcher and once on NATS,
// calls for a target reach the replica checking it, and when one replica is
// cut off the other checks all its targets — never both at once.
func TestReplicasCheckEachTargetOnce(t *testing.T) {
	e := newEnv(t)
	const ttl = time.Second
	const interval = 200 * time.Millisecond
	ncA, jsA, busA := replicaConn(t, e, "a")
	_, jsB, busB := replicaConn(t, e, "b")
	a := e.startWith(t, healthchecker.Config{ReplicaID: "a", LeaseTTL: ttl}, jsA, busA)
	b := e.startWith(t, healthchecker.Config{ReplicaID: "b", LeaseTTL: ttl}, jsB, busB)
	ctx := t.Context()
	f := newFleet(t)

	var events sync.Map // "name:state" → *atomic.Int64
	sub, err := e.nc.Subscribe(healthchecker.EventTargetChanged, func(m *nats.Msg) {
		n, _ := events.LoadOrStore(m.Header.Get(eventbus.HeaderSubject), &atomic.Int64{})
		n.(*atomic.Int64).Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	watchA, watchB := watchAll(t, a.client), watchAll(t, b.client)

	const n = 24
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("svc%02d", i)
		tg := &hcv1.Target{Name: names[i], Interval: dur(interval), FailureThreshold: 1,
			Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: f.URL + "/t/" + names[i]}}}
		c := a.client
		if i%2 == 1 {
			c = b.client
		}
		if _, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: tg}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		waitState(t, a.client, name, hcv1.CheckState_CHECK_STATE_PASSING)
		waitState(t, b.client, name, hcv1.CheckState_CHECK_STATE_PASSING)
	}

	// Steady state: over a window, each target is checked by one replica,
	// at its interval, and each replica checks some.
	t0 := time.Now()
	time.Sleep(3 * time.Second)
	window := time.Since(t0)
	byReplica := map[string]int{}
	owner := map[string]string{}
	for _, name := range names {
		hs := f.since(name, t0)
		if len(hs) == 0 {
			t.Fatalf("%s not checked for %s", name, window)
		}
		seen := map[string]bool{}
		for _, h := range hs {
			seen[h.replica] = true
		}
		if len(seen) != 1 {
			t.Fatalf("%s checked by %v within %s", name, seen, window)
		}
		owner[name] = hs[0].replica
		byReplica[hs[0].replica]++
		if max := int(window/interval) + 2; len(hs) > max {
			t.Errorf("%s checked %d times in %s at interval %s (more than %d: double checks)", name, len(hs), window, interval, max)
		}
	}
	if byReplica["a"] == 0 || byReplica["b"] == 0 {
		t.Fatalf("targets per replica %v: want both to check some", byReplica)
	}
	t.Logf("targets per replica: %v", byReplica)

	// A transition of a target checked by a is announced once on NATS and
	// once to each replica's watchers.
	var victim string
	for _, name := range names {
		if owner[name] == "a" {
			victim = name
			break
		}
	}
	f.mu.Lock()
	f.failing[victim] = true
	f.mu.Unlock()
	waitState(t, b.client, victim, hcv1.CheckState_CHECK_STATE_CRITICAL)
	waitFor(t, "watchers to see the failure", func() bool {
		return watchA.count(victim+":passing>critical") == 1 && watchB.count(victim+":passing>critical") == 1
	})
	time.Sleep(time.Second) // room for duplicates to show
	for _, w := range []*transitions{watchA, watchB} {
		for _, name := range names {
			if got := w.count(name + ":pending>passing"); got != 1 {
				t.Errorf("a watcher saw %s turn passing %d times, want 1", name, got)
			}
		}
		if got := w.count(victim + ":passing>critical"); got != 1 {
			t.Errorf("a watcher saw %s turn critical %d times, want 1", victim, got)
		}
	}
	for _, name := range names {
		want := int64(1)
		if name == victim {
			want = 2
		}
		v, ok := events.Load(name)
		if !ok || v.(*atomic.Int64).Load() != want {
			got := int64(0)
			if ok {
				got = v.(*atomic.Int64).Load()
			}
			t.Errorf("%s: %d change events on NATS, want %d", name, got, want)
		}
	}

	// Calls reach the replica checking the target, from either replica.
	res, err := b.client.ListResults(ctx, &hcv1.ListResultsRequest{Name: victim})
	if err != nil || len(res.GetResults()) == 0 {
		t.Fatalf("results of %s via b: %v, %v", victim, res, err)
	}
	before := len(f.since(victim, time.Time{}))
	if _, err := b.client.RunChecks(ctx, &hcv1.RunChecksRequest{Names: []string{victim}}); err != nil {
		t.Fatal(err)
	}
	after := f.since(victim, time.Time{})
	if len(after) <= before || after[len(after)-1].replica != "a" {
		t.Fatalf("RunChecks via b did not check %s at a", victim)
	}
	job := &hcv1.Target{Name: "job", Check: &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: dur(3 * time.Second)}}}
	if _, err := a.client.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: job}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		c := a.client
		if i%2 == 1 {
			c = b.client
		}
		if _, err := c.Heartbeat(ctx, &hcv1.HeartbeatRequest{Name: "job", Message: fmt.Sprintf("beat %d", i)}); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
	}
	for _, c := range []hcv1.HealthCheckerServiceClient{a.client, b.client} {
		res, err := c.ListResults(ctx, &hcv1.ListResultsRequest{Name: "job"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetResults()) != 6 || res.GetResults()[0].GetMessage() != "beat 5" {
			t.Fatalf("heartbeats recorded: %v, want all 6 at one replica", res.GetResults())
		}
	}
	waitState(t, b.client, "job", hcv1.CheckState_CHECK_STATE_PASSING)

	// Cut a off NATS (as if killed): b checks everything once a's leases
	// expired, and no target is checked by a after b started on it.
	a.mayFail.Store(true)
	ncA.Close()
	cut := time.Now()
	waitFor(t, "b to check every target", func() bool {
		for _, name := range names {
			hs := f.since(name, cut)
			if len(hs) == 0 || hs[len(hs)-1].replica != "b" {
				return false
			}
		}
		return true
	})
	var slowest time.Duration
	for _, name := range names {
		hs := f.since(name, cut)
		firstB := -1
		for i, h := range hs {
			if h.replica == "b" && firstB < 0 {
				firstB = i
				if owner[name] == "a" {
					slowest = max(slowest, h.at.Sub(cut))
				}
			}
			if h.replica == "a" && firstB >= 0 {
				t.Errorf("%s checked by a at %s after b took it over", name, h.at.Sub(cut))
			}
		}
	}
	t.Logf("b checked all of a's targets within %s of a being cut off (lease ttl %s, interval %s)", slowest, ttl, interval)
}

// TestRestartedReplicaResumesAtOnce: a replica that crashed and restarts
// with its replica id takes its shards back at once instead of waiting for
// its leases to expire.
func TestRestartedReplicaResumesAtOnce(t *testing.T) {
	e := newEnv(t)
	const ttl = 5 * time.Minute // waiting for expiry would time the test out
	nc1, js1, bus1 := replicaConn(t, e, "first")
	first := e.startWith(t, healthchecker.Config{ReplicaID: "hc-1", LeaseTTL: ttl}, js1, bus1)
	f := newFleet(t)
	tg := &hcv1.Target{Name: "web", Interval: dur(100 * time.Millisecond),
		Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: f.URL + "/t/web"}}}
	if _, err := first.client.CreateTarget(t.Context(), &hcv1.CreateTargetRequest{Target: tg}); err != nil {
		t.Fatal(err)
	}
	waitState(t, first.client, "web", hcv1.CheckState_CHECK_STATE_PASSING)
	first.mayFail.Store(true)
	nc1.Close() // crashed: its leases stay until they expire
	first.stop()

	_, js2, bus2 := replicaConn(t, e, "second")
	e.startWith(t, healthchecker.Config{ReplicaID: "hc-1", LeaseTTL: ttl}, js2, bus2)
	restarted := time.Now()
	waitFor(t, "checks to resume", func() bool { return len(f.since("web", restarted)) > 0 })
	t.Logf("checks resumed %s after the restart (lease ttl %s)", time.Since(restarted), ttl)
}
