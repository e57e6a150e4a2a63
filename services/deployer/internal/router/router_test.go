package router_test

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/router"
)

func TestNoReadyBackendAnswers503(t *testing.T) {
	r := newRouter(t, router.Config{RetryAfter: 3 * time.Second}, nil)
	c := newClient(t)

	rep := get(t, c, r.url+"/")
	if rep.status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503", rep.status)
	}
	if got := rep.header.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After = %q, want 3", got)
	}
	if !strings.Contains(rep.body, `"shop" has no ready backend`) {
		t.Errorf("body = %q, want it to name the app and the reason", rep.body)
	}

	// A backend that is not ready takes no traffic either.
	b := startBackend(t)
	if err := r.SetBackends(1, addrs(b)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetReady(b.addr, false); err != nil {
		t.Fatal(err)
	}
	if rep := get(t, c, r.url+"/"); rep.status != http.StatusServiceUnavailable {
		t.Errorf("with the only backend unready: status = %d, want 503", rep.status)
	}
	if err := r.SetReady(b.addr, true); err != nil {
		t.Fatal(err)
	}
	if rep := get(t, c, r.url+"/"); rep.status != http.StatusOK || rep.revision != "1" {
		t.Errorf("with the backend ready again: status %d revision %q, want 200 from revision 1", rep.status, rep.revision)
	}
	if b.hits.Load() != 1 {
		t.Errorf("backend hits = %d, want 1", b.hits.Load())
	}
	settle(t, r.Router)
	if tot := r.Totals(); tot.NoBackend != 2 || tot.Failed != 2 || tot.Requests != 3 {
		t.Errorf("totals = %+v, want 3 requests, 2 failed for no backend", tot)
	}
}

func TestWeightedSplit(t *testing.T) {
	const workers, perWorker = 8, 250
	const n = workers * perWorker
	for _, bal := range []router.Balancing{router.LeastInFlight, router.RoundRobin} {
		t.Run(bal.String(), func(t *testing.T) {
			r := newRouter(t, router.Config{Balancing: bal}, nil)
			v1a, v1b, v2 := startBackend(t), startBackend(t), startBackend(t)
			if err := r.SetBackends(1, addrs(v1a, v1b)); err != nil {
				t.Fatal(err)
			}
			if err := r.SetBackends(2, addrs(v2)); err != nil {
				t.Fatal(err)
			}
			// Without weights every ready backend weighs the same.
			assertShares(t, r.Shares(), map[int64]float64{1: 2.0 / 3, 2: 1.0 / 3})
			if err := r.SetWeights(map[int64]int{1: 80, 2: 20}); err != nil {
				t.Fatal(err)
			}
			assertShares(t, r.Shares(), map[int64]float64{1: 0.8, 2: 0.2})

			results := startLoad(t, newClient(t), r.url+"/", workers, perWorker).finish()
			if errs := failures(results); len(errs) > 0 {
				t.Fatalf("%d failed requests, first: %v", len(errs), errs[0])
			}
			byRev := map[string]int{}
			for _, res := range results {
				byRev[res.revision]++
			}
			// 4% of n is more than 4 standard deviations of a 20% binomial share.
			if got := float64(byRev["2"]) / n; math.Abs(got-0.2) > 0.04 {
				t.Errorf("revision 2 served %.3f of %d requests, want 0.20±0.04 (by revision: %v)", got, n, byRev)
			}
			// Within revision 1 both backends share the load.
			a, b := v1a.hits.Load(), v1b.hits.Load()
			if frac := float64(a) / float64(a+b); frac < 0.35 || frac > 0.65 {
				t.Errorf("revision 1 backends served %d and %d requests, want a fair split", a, b)
			}
			settle(t, r.Router)
			s1, _ := r.Stats(1)
			s2, _ := r.Stats(2)
			if s1.Requests+s2.Requests != n || s2.Requests != uint64(byRev["2"]) {
				t.Errorf("stats count %d + %d requests, want %d with %d for revision 2", s1.Requests, s2.Requests, n, byRev["2"])
			}
		})
	}
}

func assertShares(tb testing.TB, got, want map[int64]float64) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("shares = %v, want %v", got, want)
	}
	for rev, w := range want {
		if math.Abs(got[rev]-w) > 1e-9 {
			tb.Fatalf("shares = %v, want %v", got, want)
		}
	}
}

// TestSwitchUnderLoad is a blue-green deploy under a steady load: green
// comes up, all traffic switches at once, blue drains and is killed.
func TestSwitchUnderLoad(t *testing.T) {
	const workers, perWorker = 8, 300
	r := newRouter(t, router.Config{}, nil)
	blue := []*backend{startBackend(t), startBackend(t)}
	green := []*backend{startBackend(t), startBackend(t)}
	if err := r.SetBackends(1, addrs(blue...)); err != nil {
		t.Fatal(err)
	}
	if err := r.Switch(1); err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, newClient(t), r.url+"/", workers, perWorker)

	l.waitFor(t, workers*perWorker/4)
	if err := r.SetBackends(2, addrs(green...)); err != nil {
		t.Fatal(err)
	}
	if got := r.Shares(); got[2] != 0 {
		t.Fatalf("green took traffic before the switch: shares %v", got)
	}
	if err := r.Switch(2); err != nil {
		t.Fatal(err)
	}
	switched := time.Now()

	l.waitFor(t, workers*perWorker/2)
	for _, b := range blue {
		cut, err := r.Drain(b.addr, 5*time.Second)
		if err != nil || cut != 0 {
			t.Errorf("Drain(%s) = %d, %v; want nothing cut", b.addr, cut, err)
		}
		b.kill()
	}

	results := l.finish()
	if errs := failures(results); len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, first: %v", len(errs), len(results), errs[0])
	}
	for _, res := range results {
		if res.start.After(switched) && res.revision != "2" {
			t.Fatalf("request sent %v after the switch served by revision %q", res.start.Sub(switched), res.revision)
		}
	}
	settle(t, r.Router)
	tot := r.Totals()
	if tot.Failed != 0 || tot.Requests != workers*perWorker {
		t.Errorf("totals = %+v, want %d requests and none failed", tot, workers*perWorker)
	}
	s1, _ := r.Stats(1)
	s2, _ := r.Stats(2)
	if s1.Requests == 0 || s2.Requests == 0 || s1.Errors+s2.Errors != 0 {
		t.Errorf("stats: blue %d requests %d errors, green %d requests %d errors; want both served, no errors", s1.Requests, s1.Errors, s2.Requests, s2.Errors)
	}
}

func TestDrainWaitsForInFlightRequest(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	c := newClient(t)
	slow, other := startBackend(t), startBackend(t)
	if err := r.SetBackends(1, addrs(slow)); err != nil {
		t.Fatal(err)
	}
	slowDone := make(chan reply, 1)
	go func() {
		rep, err := do(c, http.MethodGet, r.url+"/?block=1", nil)
		if err != nil {
			t.Errorf("slow request: %v", err)
		}
		slowDone <- rep
	}()
	slow.waitStarted(t)
	if err := r.SetBackends(1, addrs(slow, other)); err != nil {
		t.Fatal(err)
	}

	type drained struct {
		cut int
		err error
	}
	drainDone := make(chan drained, 1)
	go func() {
		cut, err := r.Drain(slow.addr, 10*time.Second)
		drainDone <- drained{cut, err}
	}()
	// While the drain waits, new requests go to the other backend only.
	waitUntil(t, "the slow backend is draining", func() bool {
		for _, b := range r.Backends() {
			if b.Addr == slow.addr {
				return b.Draining
			}
		}
		return false
	})
	for range 20 {
		if rep := get(t, c, r.url+"/"); rep.status != http.StatusOK || rep.backend != other.addr {
			t.Fatalf("during the drain: status %d from %q, want 200 from %s", rep.status, rep.backend, other.addr)
		}
	}
	select {
	case d := <-drainDone:
		t.Fatalf("Drain returned %+v while a request was in flight", d)
	case <-time.After(50 * time.Millisecond):
	}

	slow.unblock()
	if rep := <-slowDone; rep.status != http.StatusOK || rep.backend != slow.addr {
		t.Errorf("slow request: status %d from %q, want 200 from the draining backend", rep.status, rep.backend)
	}
	select {
	case d := <-drainDone:
		if d.err != nil || d.cut != 0 {
			t.Errorf("Drain = %d, %v; want 0 cut", d.cut, d.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the request finished")
	}
	for _, b := range r.Backends() {
		if b.Addr == slow.addr {
			t.Errorf("drained backend still listed: %+v", b)
		}
	}
	settle(t, r.Router)
	if tot := r.Totals(); tot.Failed != 0 || tot.Cut != 0 {
		t.Errorf("totals = %+v, want nothing failed or cut", tot)
	}
}

func TestDrainCutsAtDeadline(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	c := newClient(t)
	stuck := startBackend(t)
	if err := r.SetBackends(1, addrs(stuck)); err != nil {
		t.Fatal(err)
	}
	done := make(chan reply, 1)
	go func() {
		rep, err := do(c, http.MethodGet, r.url+"/?block=1", nil)
		if err != nil {
			t.Errorf("stuck request: %v", err)
		}
		done <- rep
	}()
	stuck.waitStarted(t)

	start := time.Now()
	cut, err := r.Drain(stuck.addr, 100*time.Millisecond)
	if err != nil || cut != 1 {
		t.Fatalf("Drain = %d, %v; want 1 cut", cut, err)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 3*time.Second {
		t.Errorf("Drain took %v, want the 100ms deadline and a short unwind", took)
	}
	rep := <-done
	if rep.status != http.StatusGatewayTimeout || rep.revision != "1" || !strings.Contains(rep.body, "drained") {
		t.Errorf("cut request: status %d revision %q body %q; want a 504 saying revision 1 was drained", rep.status, rep.revision, rep.body)
	}
	if _, err := r.Drain(stuck.addr, time.Second); !errors.Is(err, router.ErrUnknownBackend) {
		t.Errorf("second Drain: err = %v, want ErrUnknownBackend", err)
	}
	settle(t, r.Router)
	if tot := r.Totals(); tot.Cut != 1 || tot.ProxyErrors != 1 || tot.Failed != 1 {
		t.Errorf("totals = %+v, want one request cut, counted as a proxy error", tot)
	}
}

// TestRemoveAndKillUnderLoad takes replicas away under load in the two
// ways a deploy can: removed (drained) and then killed, and killed
// abruptly while still routed. The retry on another backend means no
// idempotent request is lost either way.
func TestRemoveAndKillUnderLoad(t *testing.T) {
	const workers, perWorker = 8, 400
	r := newRouter(t, router.Config{}, nil)
	bs := []*backend{startBackend(t), startBackend(t), startBackend(t), startBackend(t)}
	if err := r.SetBackends(1, addrs(bs...)); err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, newClient(t), r.url+"/?sleep=200us", workers, perWorker)

	l.waitFor(t, workers*perWorker/4)
	// Removed, then killed without waiting for its drain: requests in
	// flight on it lose their connection.
	if err := r.SetBackends(1, addrs(bs[:3]...)); err != nil {
		t.Fatal(err)
	}
	bs[3].kill()

	l.waitFor(t, workers*perWorker/2)
	// Killed while still routed, as a crashed replica: its connections
	// reset and new dials are refused until it leaves the table.
	bs[2].kill()

	l.waitFor(t, 3*workers*perWorker/4)
	if err := r.SetBackends(1, addrs(bs[:2]...)); err != nil {
		t.Fatal(err)
	}

	results := l.finish()
	if errs := failures(results); len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, first: %v", len(errs), len(results), errs[0])
	}
	settle(t, r.Router)
	tot := r.Totals()
	if tot.Failed != 0 {
		t.Errorf("totals = %+v, want none failed", tot)
	}
	if tot.Retries == 0 {
		t.Errorf("totals = %+v, want retries after the crash", tot)
	}
	t.Logf("totals: %+v", tot)
}

// TestRetryOnlyWhenSafe checks which requests a failed connection lets the
// router send again: never one that may run twice.
func TestRetryOnlyWhenSafe(t *testing.T) {
	tests := []struct {
		name   string
		method string
		body   string
		// dial: the dead backend refuses connections (the request was
		// never sent); otherwise it accepts and drops them after reading
		// the request.
		dial      bool
		wantRetry bool
	}{
		{name: "GET refused", method: http.MethodGet, dial: true, wantRetry: true},
		{name: "GET reset", method: http.MethodGet, wantRetry: true},
		{name: "POST without body refused", method: http.MethodPost, dial: true, wantRetry: true},
		{name: "POST without body reset", method: http.MethodPost, wantRetry: false},
		{name: "POST with body refused", method: http.MethodPost, body: "x", dial: true, wantRetry: false},
		{name: "DELETE reset", method: http.MethodDelete, wantRetry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Round-robin over [dead, alive], never ejecting: every other
			// request tries the dead backend first.
			r := newRouter(t, router.Config{Balancing: router.RoundRobin, EjectFor: -1}, nil)
			alive := startBackend(t)
			dead := closedAddr(t)
			if !tc.dial {
				dead = startDropper(t)
			}
			if err := r.SetBackends(1, []string{dead, alive.addr}); err != nil {
				t.Fatal(err)
			}
			c := newClient(t)
			statuses := map[int]int{}
			for range 4 {
				var body *strings.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				rep, err := doBody(c, tc.method, r.url+"/", body)
				if err != nil {
					t.Fatal(err)
				}
				statuses[rep.status]++
			}
			settle(t, r.Router)
			tot := r.Totals()
			if tc.wantRetry {
				if statuses[http.StatusOK] != 4 || tot.Retries == 0 {
					t.Errorf("statuses %v, totals %+v; want every request retried to 200", statuses, tot)
				}
				return
			}
			if statuses[http.StatusBadGateway] == 0 || tot.Retries != 0 || tot.ProxyErrors == 0 {
				t.Errorf("statuses %v, totals %+v; want 502s and no retry", statuses, tot)
			}
		})
	}
}

func doBody(c *http.Client, method, url string, body *strings.Reader) (reply, error) {
	if body == nil {
		return do(c, method, url, nil)
	}
	return do(c, method, url, body)
}

func TestForwardedHeaders(t *testing.T) {
	tests := []struct {
		name      string
		trust     bool
		wantXFF   string
		wantProto string
		wantXFH   string
	}{
		{name: "edge", trust: false, wantXFF: "127.0.0.1", wantProto: "http", wantXFH: "shop.example"},
		{name: "behind a proxy", trust: true, wantXFF: "203.0.113.7, 127.0.0.1", wantProto: "https", wantXFH: "public.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, router.Config{TrustForwardedHeaders: tc.trust}, nil)
			b := startBackend(t)
			if err := r.SetBackends(7, addrs(b)); err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodGet, r.url+"/headers?a=1;b=2", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "shop.example"
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Host", "public.example")
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"host": "shop.example", "xff": tc.wantXFF, "proto": tc.wantProto, "xfh": tc.wantXFH, "query": "a=1;b=2"}
			for k, w := range want {
				if got[k] != w {
					t.Errorf("backend saw %s = %q, want %q", k, got[k], w)
				}
			}
			if rev := resp.Header.Get(router.RevisionHeader); rev != "7" {
				t.Errorf("%s = %q, want 7", router.RevisionHeader, rev)
			}
		})
	}
}

func TestStatsPerRevision(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	c := newClient(t)
	v1, v2 := startBackend(t), startBackend(t)
	if err := r.SetBackends(1, addrs(v1)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBackends(2, addrs(v2)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Stats(3); ok {
		t.Error("Stats(3) reported a revision the router never had")
	}

	send := func(rev int64, query string, n int) {
		t.Helper()
		if err := r.Switch(rev); err != nil {
			t.Fatal(err)
		}
		for range n {
			get(t, c, r.url+"/?"+query)
		}
		settle(t, r.Router)
	}
	send(1, "sleep=20ms", 10)
	send(2, "status=500", 4)
	send(2, "status=404", 6)

	s1, _ := r.Stats(1)
	if s1.Requests != 10 || s1.Errors != 0 || s1.InFlight != 0 {
		t.Errorf("revision 1: %d requests, %d errors, %d in flight; want 10, 0, 0", s1.Requests, s1.Errors, s1.InFlight)
	}
	// Quantiles come from buckets 19% wide: they may read up to that much
	// below the true latency. The upper bounds only catch a wrong unit: a
	// loaded machine may delay any request (this is no speed test).
	assertBetween(t, "revision 1 p50", s1.P50, 16*time.Millisecond, time.Second)
	assertBetween(t, "revision 1 p99", s1.P99, 16*time.Millisecond, time.Second)
	s2, _ := r.Stats(2)
	if s2.Requests != 10 || s2.Errors != 4 || s2.ErrorRate() != 0.4 {
		t.Errorf("revision 2: %d requests, %d errors (rate %.2f); want 10, 4 (0.40): a 404 is no error", s2.Requests, s2.Errors, s2.ErrorRate())
	}

	// A window: only the requests after the first snapshot count.
	send(1, "sleep=60ms", 5)
	w := must(r.Stats(1)).Sub(s1)
	if w.Requests != 5 || w.Errors != 0 {
		t.Errorf("window: %d requests, %d errors; want 5, 0", w.Requests, w.Errors)
	}
	// At least 60ms less a bucket: the window holds only the slow requests.
	assertBetween(t, "window p50", w.P50, 48*time.Millisecond, time.Second)
	if tot := r.Totals(); tot.Backend5xx != 4 || tot.Failed != 4 || tot.Requests != 25 {
		t.Errorf("totals = %+v, want 25 requests, 4 failed with a backend 5xx", tot)
	}
}

func must(s router.Snapshot, ok bool) router.Snapshot {
	if !ok {
		panic("no such revision")
	}
	return s
}

func assertBetween(tb testing.TB, what string, got, lo, hi time.Duration) {
	tb.Helper()
	if got < lo || got > hi {
		tb.Errorf("%s = %v, want %v to %v", what, got, lo, hi)
	}
}

// TestFallbackWhenWeightedRevisionLosesBackends: weights send everything
// to a revision whose replicas then all go away; rather than failing
// requests, the router uses the ready backends it has.
func TestFallbackWhenWeightedRevisionLosesBackends(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	c := newClient(t)
	v1, v2 := startBackend(t), startBackend(t)
	if err := r.SetBackends(1, addrs(v1)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBackends(2, addrs(v2)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(map[int64]int{1: 50, 2: 50}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetReady(v2.addr, false); err != nil {
		t.Fatal(err)
	}
	assertShares(t, r.Shares(), map[int64]float64{1: 1})
	if err := r.Switch(2); !errors.Is(err, router.ErrNoReadyBackend) {
		t.Errorf("Switch to a revision with no ready backend: err = %v, want ErrNoReadyBackend", err)
	}
	if err := r.SetReady(v2.addr, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Switch(2); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBackends(2, nil); err != nil {
		t.Fatal(err)
	}
	assertShares(t, r.Shares(), map[int64]float64{1: 1})
	if rep := get(t, c, r.url+"/"); rep.status != http.StatusOK || rep.revision != "1" {
		t.Errorf("status %d from revision %q, want 200 from revision 1", rep.status, rep.revision)
	}
}

func TestInvalidInput(t *testing.T) {
	if _, err := router.New(router.Config{}, router.Deps{}); !errors.Is(err, router.ErrInvalidConfig) || !strings.Contains(err.Error(), "App") {
		t.Errorf("New without App: err = %v, want ErrInvalidConfig naming App", err)
	}
	if _, err := router.New(router.Config{App: "shop", Balancing: 9}, router.Deps{}); !errors.Is(err, router.ErrInvalidConfig) {
		t.Errorf("New with Balancing 9: err = %v, want ErrInvalidConfig", err)
	}
	r := newRouter(t, router.Config{}, nil)
	b := startBackend(t)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"address without port", func() error { return r.SetBackends(1, []string{"127.0.0.1"}) }, router.ErrInvalidAddress},
		{"address with port 0", func() error { return r.SetBackends(1, []string{"127.0.0.1:0"}) }, router.ErrInvalidAddress},
		{"address listed twice", func() error { return r.SetBackends(1, []string{b.addr, b.addr}) }, router.ErrInvalidAddress},
		{"weights over 100", func() error { return r.SetWeights(map[int64]int{1: 60, 2: 60}) }, router.ErrInvalidWeights},
		{"negative weight", func() error { return r.SetWeights(map[int64]int{1: 110, 2: -10}) }, router.ErrInvalidWeights},
		{"weight for a revision without backends", func() error { return r.SetWeights(map[int64]int{1: 100}) }, router.ErrNoReadyBackend},
		{"drain an unknown backend", func() error { _, err := r.Drain(b.addr, time.Second); return err }, router.ErrUnknownBackend},
		{"ready an unknown backend", func() error { return r.SetReady(b.addr, true) }, router.ErrUnknownBackend},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if err := r.SetBackends(1, addrs(b)); err != nil {
		t.Fatal(err)
	}
	if err := r.Forget(1); !errors.Is(err, router.ErrRevisionInUse) {
		t.Errorf("Forget a revision with backends: err = %v, want ErrRevisionInUse", err)
	}
	if _, err := r.Drain(b.addr, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.Forget(1); err != nil {
		t.Errorf("Forget a drained revision: %v", err)
	}
	if _, ok := r.Stats(1); ok {
		t.Error("Stats of a forgotten revision still reported")
	}
}

// TestAddressMovesRevision: a port freed by an old replica and reused by a
// new one (the process driver assigns ports) belongs to the new revision.
func TestAddressMovesRevision(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	b := startBackend(t)
	if err := r.SetBackends(1, addrs(b)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBackends(2, addrs(b)); err != nil {
		t.Fatal(err)
	}
	if rep := get(t, newClient(t), r.url+"/"); rep.revision != "2" {
		t.Errorf("served by revision %q, want 2", rep.revision)
	}
	waitUntil(t, "the old entry drained", func() bool { return len(r.Backends()) == 1 })
	if got := r.Backends(); got[0].Revision != 2 || !got[0].Ready {
		t.Errorf("backends = %+v, want one ready in revision 2", got)
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Run("in-flight requests finish", func(t *testing.T) {
		r := newRouter(t, router.Config{}, nil)
		b := startBackend(t)
		if err := r.SetBackends(1, addrs(b)); err != nil {
			t.Fatal(err)
		}
		c := newClient(t)
		done := make(chan reply, 1)
		go func() {
			rep, err := do(c, http.MethodGet, r.url+"/?block=1", nil)
			if err != nil {
				t.Errorf("in-flight request: %v", err)
			}
			done <- rep
		}()
		b.waitStarted(t)
		stopped := make(chan error, 1)
		go func() { stopped <- r.stop() }()
		// The listener closes at once; the request in flight goes on.
		waitUntil(t, "the listener closed", func() bool {
			_, err := do(newClient(t), http.MethodGet, r.url+"/", nil)
			return err != nil
		})
		select {
		case err := <-stopped:
			t.Fatalf("Serve returned (%v) with a request in flight", err)
		case <-time.After(50 * time.Millisecond):
		}
		b.unblock()
		if rep := <-done; rep.status != http.StatusOK {
			t.Errorf("in-flight request: status %d, want 200", rep.status)
		}
		if err := <-stopped; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})
	t.Run("deadline cuts the rest", func(t *testing.T) {
		r := newRouter(t, router.Config{ShutdownTimeout: 100 * time.Millisecond}, nil)
		b := startBackend(t)
		if err := r.SetBackends(1, addrs(b)); err != nil {
			t.Fatal(err)
		}
		c := newClient(t)
		done := make(chan error, 1)
		go func() {
			_, err := do(c, http.MethodGet, r.url+"/?block=1", nil)
			done <- err
		}()
		b.waitStarted(t)
		start := time.Now()
		if err := r.stop(); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Serve took %v to return after a 100ms shutdown deadline", took)
		}
		if err := <-done; err == nil {
			t.Error("the request outliving the deadline succeeded, want it cut")
		}
	})
}

func TestCloseIsIdempotentAndStopsRouting(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	b := startBackend(t)
	if err := r.SetBackends(1, addrs(b)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if rep := get(t, newClient(t), r.url+"/"); rep.status != http.StatusServiceUnavailable {
		t.Errorf("after Close: status %d, want 503", rep.status)
	}
	if err := r.SetBackends(1, addrs(b)); !errors.Is(err, router.ErrClosed) {
		t.Errorf("SetBackends after Close: err = %v, want ErrClosed", err)
	}
}

// TestConcurrentUpdates races routing changes against requests; with
// -race it checks that the table swap needs no lock on the request path.
func TestConcurrentUpdates(t *testing.T) {
	r := newRouter(t, router.Config{}, nil)
	v1, v2 := startBackend(t), startBackend(t)
	if err := r.SetBackends(1, addrs(v1)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBackends(2, addrs(v2)); err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, newClient(t), r.url+"/", 4, 150)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; l.done.Load() < 600; i++ {
			w := i % 101
			// Weight on v1 while it is unready is refused, and that is fine.
			if err := r.SetWeights(map[int64]int{1: w, 2: 100 - w}); err != nil && !errors.Is(err, router.ErrNoReadyBackend) {
				t.Error(err)
				return
			}
			_ = r.SetReady(v1.addr, i%3 != 0)
			_, _ = r.Stats(1)
			_ = r.Shares()
		}
	})
	results := l.finish()
	wg.Wait()
	if errs := failures(results); len(errs) > 0 {
		t.Fatalf("%d requests failed, first: %v", len(errs), errs[0])
	}
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
