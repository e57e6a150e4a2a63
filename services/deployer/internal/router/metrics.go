package router

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the router's own counters at scrape time, so a request
// updates one set of atomics and Prometheus reads the same numbers that
// Stats and Totals return.
type collector struct {
	r *Router

	requests, errors, duration, inFlight, backends, share *prometheus.Desc
	failed, retries, cut                                  *prometheus.Desc
}

func newCollector(r *Router) *collector {
	// The app is a constant label, so the routers of several applications
	// register their collectors on one registry.
	app := prometheus.Labels{"app": r.cfg.App}
	revLabels := []string{"revision"}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, app)
	}
	return &collector{
		r:        r,
		requests: desc("opsuite_router_requests_total", "Requests answered by a backend, by revision.", revLabels...),
		errors:   desc("opsuite_router_request_errors_total", "Requests answered by a backend that failed (backend 5xx, router 502/504, response cut off), by revision.", revLabels...),
		duration: desc("opsuite_router_request_duration_seconds", "Time from receiving a request to the end of its response, by revision.", revLabels...),
		inFlight: desc("opsuite_router_in_flight_requests", "Requests in flight to backends, by revision.", revLabels...),
		backends: desc("opsuite_router_backends", "Backends by revision and state (ready, unready, draining).", "revision", "state"),
		share:    desc("opsuite_router_traffic_share", "Fraction of new requests routed to each revision.", revLabels...),
		failed:   desc("opsuite_router_failed_requests_total", "Requests whose client got a 5xx or a truncated response, by reason (no_backend, proxy_error, backend_5xx, aborted).", "reason"),
		retries:  desc("opsuite_router_retries_total", "Requests sent again to another backend after a connection failure."),
		cut:      desc("opsuite_router_drain_cut_requests_total", "Requests ended because a drain deadline passed."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.errors, c.duration, c.inFlight, c.backends, c.share, c.failed, c.retries, c.cut} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	view := c.r.view()
	for _, rv := range view.revisions {
		st := &rv.rev.stats
		label := rv.rev.label
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(st.requests.Load()), label)
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.errors.Load()), label)
		h := st.histogram()
		ch <- prometheus.MustNewConstHistogram(c.duration, h.total(), h.sum.Seconds(), promBuckets(&h), label)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(rv.inFlight), label)
		ch <- prometheus.MustNewConstMetric(c.backends, prometheus.GaugeValue, float64(rv.ready), label, "ready")
		ch <- prometheus.MustNewConstMetric(c.backends, prometheus.GaugeValue, float64(rv.unready), label, "unready")
		ch <- prometheus.MustNewConstMetric(c.backends, prometheus.GaugeValue, float64(rv.draining), label, "draining")
		ch <- prometheus.MustNewConstMetric(c.share, prometheus.GaugeValue, view.shares[rv.rev.id], label)
	}
	t := c.r.totals.load(time.Time{})
	for _, f := range []struct {
		reason string
		n      uint64
	}{{"no_backend", t.NoBackend}, {"proxy_error", t.ProxyErrors}, {"backend_5xx", t.Backend5xx}, {"aborted", t.Aborted}} {
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(f.n), f.reason)
	}
	ch <- prometheus.MustNewConstMetric(c.retries, prometheus.CounterValue, float64(t.Retries))
	ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(t.Cut))
}

// promBuckets exports every fourth bound (one per doubling, 25µs to 52s) as
// cumulative Prometheus buckets; the finer buckets only serve quantiles
// computed in process.
func promBuckets(h *histogram) map[float64]uint64 {
	out := make(map[float64]uint64, histBuckets/histPerDouble+1)
	var cum uint64
	for i := range histBuckets {
		cum += h.counts[i]
		if i%histPerDouble == 0 {
			out[time.Duration(histBounds[i]).Seconds()] = cum
		}
	}
	return out
}
