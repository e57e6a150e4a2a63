package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// checkLog is an HTTP server standing for many targets (/t/<name>) that
// logs each check: which target, which replica (the Opsuite-Replica header
// the health-checker sends), when.
type checkLog struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string][]replicaHit
}

type replicaHit struct {
	replica string
	at      time.Time
}

func newCheckLog(t *testing.T) *checkLog {
	c := &checkLog{hits: map[string][]replicaHit{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/t/")
		c.mu.Lock()
		c.hits[name] = append(c.hits[name], replicaHit{replica: r.Header.Get("Opsuite-Replica"), at: time.Now()})
		c.mu.Unlock()
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// between returns name's checks in [from, to).
func (c *checkLog) between(name string, from, to time.Time) []replicaHit {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []replicaHit
	for _, h := range c.hits[name] {
		if !h.at.Before(from) && h.at.Before(to) {
			out = append(out, h)
		}
	}
	return out
}

// window checks that over [from, to) every target was checked by exactly
// one replica, at most once per interval (plus two for the edges), and
// returns each target's checker and the number of checks.
func (c *checkLog) window(t *testing.T, names []string, from, to time.Time, interval time.Duration) (map[string]string, int) {
	t.Helper()
	owner := map[string]string{}
	total := 0
	span := to.Sub(from)
	for _, name := range names {
		hs := c.between(name, from, to)
		if len(hs) == 0 {
			t.Errorf("%s not checked in %s", name, span)
			continue
		}
		by := map[string]int{}
		for _, h := range hs {
			by[h.replica]++
		}
		if len(by) != 1 {
			t.Errorf("%s checked by several replicas in %s: %v", name, span, by)
		}
		if most := int(span/interval) + 2; len(hs) > most {
			t.Errorf("%s checked %d times in %s at interval %s: more than %d, so some slots were checked twice", name, len(hs), span, interval, most)
		}
		owner[name] = hs[0].replica
		total += len(hs)
	}
	return owner, total
}

// TestHealthCheckerReplicas runs two health-checker processes on one NATS:
// each target is checked at its interval by one of them, both share the
// work, each transition is announced once; after kill -9 of one, the other
// checks all targets, and no target is ever checked by both in a slot.
func TestHealthCheckerReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	ns := startNATS(t)
	a := startReplica(t, ns.ClientURL(), "healthchecker", "hc-a")
	b := startReplica(t, ns.ClientURL(), "healthchecker", "hc-b")
	ca, cb := hcv1.NewHealthCheckerServiceClient(a.conn), hcv1.NewHealthCheckerServiceClient(b.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := newCheckLog(t)

	// Transitions as an event consumer sees them.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var evMu sync.Mutex
	events := map[string]int{}
	sub, err := nc.Subscribe("opsuite.health.target.changed", func(m *nats.Msg) {
		evMu.Lock()
		events[m.Header.Get("ce-subject")]++
		evMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	const n = 20
	const interval = time.Second
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("app%02d", i)
		c := ca
		if i%2 == 1 {
			c = cb
		}
		_, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: &hcv1.Target{
			Name: names[i], Interval: durationpb.New(interval), FailureThreshold: 1,
			Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: log.srv.URL + "/t/" + names[i]}},
		}})
		if err != nil {
			t.Fatalf("create %s: %v", names[i], err)
		}
	}
	for _, name := range names {
		for _, c := range []hcv1.HealthCheckerServiceClient{ca, cb} {
			eventually(t, time.Minute, name+" passing", func() bool {
				r, err := c.GetTarget(ctx, &hcv1.GetTargetRequest{Name: name})
				return err == nil && r.GetTarget().GetStatus().GetState() == hcv1.CheckState_CHECK_STATE_PASSING
			})
		}
	}

	// Both up: every target checked by one replica, at its interval.
	from := time.Now()
	time.Sleep(8 * time.Second)
	to := time.Now()
	owner, total := log.window(t, names, from, to, interval)
	perReplica := map[string]int{}
	for _, r := range owner {
		perReplica[r]++
	}
	t.Logf("two replicas, %s: %d checks of %d targets at %s (at most %d possible); targets per replica %v",
		to.Sub(from).Round(time.Millisecond), total, n, interval, n*(int(to.Sub(from)/interval)+2), perReplica)
	if perReplica["hc-a"] == 0 || perReplica["hc-b"] == 0 {
		t.Fatalf("targets per replica %v: want both to check some", perReplica)
	}
	evMu.Lock()
	for _, name := range names {
		if events[name] != 1 {
			t.Errorf("%s: %d change events on NATS, want 1 (pending to passing)", name, events[name])
		}
	}
	evMu.Unlock()

	// kill -9 hc-a: hc-b checks its targets once hc-a's leases expired.
	a.kill()
	killed := time.Now()
	var orphans []string
	for name, r := range owner {
		if r == "hc-a" {
			orphans = append(orphans, name)
		}
	}
	eventually(t, 2*time.Minute, "hc-b to check every target of hc-a", func() bool {
		for _, name := range orphans {
			if len(log.between(name, killed, time.Now())) == 0 {
				return false
			}
		}
		return true
	})
	var slowest time.Duration
	for _, name := range orphans {
		hs := log.between(name, killed, time.Now())
		if hs[0].replica != "hc-b" {
			t.Errorf("%s checked by %q after hc-a was killed", name, hs[0].replica)
		}
		slowest = max(slowest, hs[0].at.Sub(killed))
		// The slot hc-a checked last and hc-b's first are at least a
		// check apart: no slot checked twice around the takeover.
		before := log.between(name, killed.Add(-time.Minute), killed)
		if len(before) > 0 {
			if gap := hs[0].at.Sub(before[len(before)-1].at); gap < interval/2 {
				t.Errorf("%s checked by hc-a and hc-b %s apart around the takeover", name, gap)
			}
		}
	}
	t.Logf("kill -9 of hc-a: hc-b checked all %d of its targets within %s (lease ttl 10s, interval %s)", len(orphans), slowest.Round(time.Millisecond), interval)

	// After the takeover: hc-b alone checks everything, still once per slot.
	time.Sleep(interval)
	from = time.Now()
	time.Sleep(6 * time.Second)
	to = time.Now()
	owner, total = log.window(t, names, from, to, interval)
	for name, r := range owner {
		if r != "hc-b" {
			t.Errorf("%s checked by %s after the takeover", name, r)
		}
	}
	t.Logf("one replica left, %s: %d checks of %d targets", to.Sub(from).Round(time.Millisecond), total, n)
	evMu.Lock()
	for _, name := range names {
		if events[name] != 1 {
			t.Errorf("%s: %d change events after the takeover, want still 1", name, events[name])
		}
	}
	evMu.Unlock()
	r, err := cb.GetHealth(ctx, &hcv1.GetHealthRequest{})
	if err != nil || r.GetPassing() != n {
		t.Fatalf("health through hc-b: %v %v", r, err)
	}
}
