package router_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := newRouter(t, router.Config{App: "shop"}, reg)
	c := newClient(t)
	v1, v2 := startBackend(t), startBackend(t)
	if err := r.SetBackends(1, addrs(v1)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBackends(2, addrs(v2)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(map[int64]int{1: 100, 2: 0}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		get(t, c, r.url+"/")
	}
	if err := r.Switch(2); err != nil {
		t.Fatal(err)
	}
	get(t, c, r.url+"/?status=503")
	get(t, c, r.url+"/")
	if err := r.SetBackends(2, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.SetReady(v1.addr, false); err != nil {
		t.Fatal(err)
	}
	if rep := get(t, c, r.url+"/"); rep.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rep.status)
	}
	settle(t, r.Router)

	const want = `
# HELP opsuite_router_requests_total Requests answered by a backend, by revision.
# TYPE opsuite_router_requests_total counter
opsuite_router_requests_total{app="shop",revision="1"} 3
opsuite_router_requests_total{app="shop",revision="2"} 2
# HELP opsuite_router_request_errors_total Requests answered by a backend that failed (backend 5xx, router 502/504, response cut off), by revision.
# TYPE opsuite_router_request_errors_total counter
opsuite_router_request_errors_total{app="shop",revision="1"} 0
opsuite_router_request_errors_total{app="shop",revision="2"} 1
# HELP opsuite_router_failed_requests_total Requests whose client got a 5xx or a truncated response, by reason (no_backend, proxy_error, backend_5xx, aborted).
# TYPE opsuite_router_failed_requests_total counter
opsuite_router_failed_requests_total{app="shop",reason="aborted"} 0
opsuite_router_failed_requests_total{app="shop",reason="backend_5xx"} 1
opsuite_router_failed_requests_total{app="shop",reason="no_backend"} 1
opsuite_router_failed_requests_total{app="shop",reason="proxy_error"} 0
# HELP opsuite_router_backends Backends by revision and state (ready, unready, draining).
# TYPE opsuite_router_backends gauge
opsuite_router_backends{app="shop",revision="1",state="draining"} 0
opsuite_router_backends{app="shop",revision="1",state="ready"} 0
opsuite_router_backends{app="shop",revision="1",state="unready"} 1
opsuite_router_backends{app="shop",revision="2",state="draining"} 0
opsuite_router_backends{app="shop",revision="2",state="ready"} 0
opsuite_router_backends{app="shop",revision="2",state="unready"} 0
`
	names := []string{
		"opsuite_router_requests_total",
		"opsuite_router_request_errors_total",
		"opsuite_router_failed_requests_total",
		"opsuite_router_backends",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// One latency histogram per revision, with every request in it.
	if n, err := testutil.GatherAndCount(reg, "opsuite_router_request_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration histograms = %d, %v; want 2", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "opsuite_router_request_duration_seconds" {
			continue
		}
		var total uint64
		for _, m := range mf.GetMetric() {
			total += m.GetHistogram().GetSampleCount()
		}
		if total != 5 {
			t.Errorf("duration histograms hold %d samples, want 5", total)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsRegisterOncePerApp(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := router.New(router.Config{App: "shop"}, router.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	other, err := router.New(router.Config{App: "blog"}, router.Deps{Registerer: reg})
	if err != nil {
		t.Fatalf("a second app on the same registry: %v", err)
	}
	defer other.Close()
}
