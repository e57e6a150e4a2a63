// Package analysis measures a rollout's new revision against its analysis
// metrics: the built-in router's per-revision counters, or a query the
// monitor evaluates (falling back to a router metric when the monitor cannot
// be reached). An analysis takes count measurements an interval apart and
// fails as soon as a metric fails more often than its limit allows, so a bad
// canary is rolled back at the first conclusive evidence, not at the end.
package analysis

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults of an Analysis's unset fields.
const (
	DefaultInterval          = 30 * time.Second
	DefaultCount             = 3
	DefaultInconclusiveLimit = 1
	DefaultMinRequests       = 20
	DefaultPercentile        = 99
)

// Failed is the error an analysis ends with when a metric failed (or was
// inconclusive) more often than allowed.
type Failed struct {
	Message string
	// Inconclusive: the analysis lacked data rather than saw a failure.
	Inconclusive bool
}

func (f *Failed) Error() string { return "analysis failed: " + f.Message }

// Querier evaluates an instant monitor query to one number; ok is false
// when the query returned no value.
type Querier interface {
	QueryValue(ctx context.Context, query string) (value float64, ok bool, err error)
}

// Target is what is analysed.
type Target struct {
	App, Env string
	// Revision is the new revision, Stable the one serving before (0 on a
	// first deploy: relative metrics are then inconclusive).
	Revision, Stable int64
}

// Measurer takes measurements. Router is required; Monitor is nil when no
// monitor is configured.
type Measurer struct {
	Router  func(rev int64) (router.Snapshot, bool)
	Monitor Querier
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (m *Measurer) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Run performs an analysis step: after the initial delay, count rounds an
// interval apart, each measuring every metric. Measurements are appended to
// st (and save is called after each round), so a restarted deployer calls
// Run again with the same st and it continues with the rounds not done yet.
// It returns nil when the analysis passed, *Failed when it failed, or ctx's
// error.
func (m *Measurer) Run(ctx context.Context, a *deployerv1.Analysis, t Target, st *deployerv1.AnalysisStatus, save func() error) error {
	interval, count := intervalOf(a), countOf(a)
	if done := roundsDone(a, st); done == 0 {
		if err := sleep(ctx, a.GetInitialDelay().AsDuration()); err != nil {
			return err
		}
	}
	st.State = deployerv1.StepState_STEP_STATE_RUNNING
	for round := roundsDone(a, st); round < count; round++ {
		if err := m.round(ctx, a, t, interval, st); err != nil {
			return err
		}
		verdict := Verdict(a, st, false)
		if err := save(); err != nil {
			return err
		}
		if verdict != nil {
			return verdict
		}
	}
	if v := Verdict(a, st, true); v != nil {
		return v
	}
	return nil
}

// Background measures every interval until ctx ends, keeping its
// measurements in st (a status of its own, not shared with the caller while
// it runs). It returns *Failed as soon as the analysis fails, else ctx's
// error.
func (m *Measurer) Background(ctx context.Context, a *deployerv1.Analysis, t Target, st *deployerv1.AnalysisStatus) error {
	if err := sleep(ctx, a.GetInitialDelay().AsDuration()); err != nil {
		return err
	}
	st.State = deployerv1.StepState_STEP_STATE_RUNNING
	for {
		if err := m.round(ctx, a, t, intervalOf(a), st); err != nil {
			return err
		}
		if v := Verdict(a, st, false); v != nil {
			return v
		}
		// Keep only the recent rounds: a long rollout must not grow the record.
		if max := 10 * len(a.GetMetrics()); len(st.Measurements) > max {
			st.Measurements = slices.Delete(st.Measurements, 0, len(st.Measurements)-max)
		}
	}
}

// round waits one interval and measures every metric over its window (the
// end of the interval back by the metric's window, at most the interval).
func (m *Measurer) round(ctx context.Context, a *deployerv1.Analysis, t Target, interval time.Duration, st *deployerv1.AnalysisStatus) error {
	start := m.now()
	end := start.Add(interval)
	// Baselines for router metrics, taken window before the end.
	type baseline struct{ newRev, stable router.Snapshot }
	windows := map[time.Duration]*baseline{}
	var offsets []time.Duration
	for _, metric := range a.GetMetrics() {
		if rm := routerMetricOf(metric); rm != nil {
			w := windowOf(rm, interval)
			if _, ok := windows[w]; !ok {
				windows[w] = nil
				offsets = append(offsets, w)
			}
		}
	}
	// Longest window first: its baseline is due earliest.
	slices.SortFunc(offsets, func(x, y time.Duration) int { return int(y - x) })
	for _, w := range offsets {
		if err := sleepUntil(ctx, end.Add(-w), m.now); err != nil {
			return err
		}
		b := &baseline{}
		b.newRev, _ = m.Router(t.Revision)
		if t.Stable != 0 {
			b.stable, _ = m.Router(t.Stable)
		}
		windows[w] = b
	}
	if err := sleepUntil(ctx, end, m.now); err != nil {
		return err
	}
	for _, metric := range a.GetMetrics() {
		var meas *deployerv1.AnalysisMeasurement
		if mq := metric.GetMonitor(); mq != nil && m.Monitor != nil {
			var reached bool
			meas, reached = m.monitor(ctx, metric, mq, t)
			if !reached && mq.GetFallback() != nil && ctx.Err() == nil {
				b := windows[windowOf(mq.GetFallback(), interval)]
				meas = m.router(metric, mq.GetFallback(), t, b.newRev, b.stable, meas.GetMessage()+"; measured the router instead: ")
			}
		} else if rm := routerMetricOf(metric); rm != nil {
			b := windows[windowOf(rm, interval)]
			prefix := ""
			if metric.GetMonitor() != nil {
				prefix = "no monitor configured; measured the router instead: "
			}
			meas = m.router(metric, rm, t, b.newRev, b.stable, prefix)
		} else {
			meas = &deployerv1.AnalysisMeasurement{
				Outcome: deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE,
				Message: "no monitor is configured and the metric has no router fallback",
			}
		}
		meas.Metric = metric.GetName()
		meas.Time = timestamppb.New(m.now())
		st.Measurements = append(st.Measurements, meas)
	}
	return ctx.Err()
}

// routerMetricOf is the router metric a metric reads when measured by the
// router: its own, or its monitor query's fallback.
func routerMetricOf(metric *deployerv1.AnalysisMetric) *deployerv1.RouterMetric {
	if rm := metric.GetRouter(); rm != nil {
		return rm
	}
	return metric.GetMonitor().GetFallback()
}

func (m *Measurer) router(metric *deployerv1.AnalysisMetric, rm *deployerv1.RouterMetric, t Target, baseNew, baseStable router.Snapshot, prefix string) *deployerv1.AnalysisMeasurement {
	inconclusive := func(format string, args ...any) *deployerv1.AnalysisMeasurement {
		return &deployerv1.AnalysisMeasurement{Outcome: deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE, Message: prefix + fmt.Sprintf(format, args...)}
	}
	curNew, _ := m.Router(t.Revision)
	win := curNew.Sub(baseNew)
	seconds := curNew.At.Sub(baseNew.At).Seconds()
	minReq := rm.GetMinRequests()
	if minReq <= 0 {
		minReq = DefaultMinRequests
	}
	if int64(win.Requests) < minReq {
		return inconclusive("only %d requests to revision %d in the window (at least %d needed)", win.Requests, t.Revision, minReq)
	}
	value, what := 0.0, ""
	switch rm.GetKind() {
	case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO:
		value, what = win.ErrorRate(), "error ratio"
	case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_LATENCY:
		value, what = win.Quantile(percentileOf(rm)/100).Seconds(), fmt.Sprintf("p%g latency (s)", percentileOf(rm))
	case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE:
		if seconds <= 0 {
			return inconclusive("empty window")
		}
		value, what = float64(win.Requests)/seconds, "request rate (/s)"
	default:
		return inconclusive("unknown router metric kind %v", rm.GetKind())
	}
	if rm.GetRelativeToStable() {
		if t.Stable == 0 {
			return inconclusive("no stable revision to compare with")
		}
		curStable, _ := m.Router(t.Stable)
		sw := curStable.Sub(baseStable)
		if sw.Requests == 0 {
			return inconclusive("no requests to the stable revision %d in the window", t.Stable)
		}
		var stable float64
		switch rm.GetKind() {
		case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO:
			stable = sw.ErrorRate()
			value, what = value-stable, what+" minus the stable revision's"
		case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_LATENCY:
			stable = sw.Quantile(percentileOf(rm) / 100).Seconds()
			if stable <= 0 {
				return inconclusive("stable latency is zero")
			}
			value, what = value/stable, what+" relative to the stable revision's"
		case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE:
			stable = float64(sw.Requests) / seconds
			value, what = value/stable, what+" relative to the stable revision's"
		}
	}
	return judge(metric, value, fmt.Sprintf("%s%s %s over %d requests", prefix, what, formatValue(value), win.Requests))
}

// monitor measures a monitor query; reached is false when the monitor did
// not answer.
func (m *Measurer) monitor(ctx context.Context, metric *deployerv1.AnalysisMetric, mq *deployerv1.MonitorQuery, t Target) (meas *deployerv1.AnalysisMeasurement, reached bool) {
	q := strings.NewReplacer(
		"{{application}}", t.App, "{{environment}}", t.Env,
		"{{revision}}", strconv.FormatInt(t.Revision, 10), "{{stable_revision}}", strconv.FormatInt(t.Stable, 10),
	).Replace(mq.GetQuery())
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, ok, err := m.Monitor.QueryValue(qctx, q)
	switch {
	case err != nil:
		return &deployerv1.AnalysisMeasurement{Outcome: deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE,
			Message: fmt.Sprintf("monitor query `%s` failed: %v", q, err)}, false
	case !ok:
		return &deployerv1.AnalysisMeasurement{Outcome: deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE,
			Message: fmt.Sprintf("monitor query `%s` returned no value", q)}, true
	}
	return judge(metric, v, fmt.Sprintf("%s = %s", q, formatValue(v))), true
}

// judge compares a value with the metric's threshold.
func judge(metric *deployerv1.AnalysisMetric, v float64, msg string) *deployerv1.AnalysisMeasurement {
	out := &deployerv1.AnalysisMeasurement{Value: v, Message: msg}
	if math.IsNaN(v) {
		out.Outcome = deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE
		out.Value = 0
		out.Message += " (NaN)"
		return out
	}
	th := metric.GetThreshold()
	var pass bool
	var op string
	switch metric.GetComparison() {
	case deployerv1.Comparison_COMPARISON_LESS_THAN:
		pass, op = v < th, "<"
	case deployerv1.Comparison_COMPARISON_LESS_OR_EQUAL:
		pass, op = v <= th, "<="
	case deployerv1.Comparison_COMPARISON_GREATER_THAN:
		pass, op = v > th, ">"
	case deployerv1.Comparison_COMPARISON_GREATER_OR_EQUAL:
		pass, op = v >= th, ">="
	default:
		out.Outcome = deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE
		out.Message += "; no comparison set"
		return out
	}
	if pass {
		out.Outcome = deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_PASS
		out.Message += fmt.Sprintf(" (wanted %s %s)", op, formatValue(th))
	} else {
		out.Outcome = deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_FAIL
		out.Message += fmt.Sprintf(" (wanted %s %s)", op, formatValue(th))
	}
	return out
}

// Verdict is the analysis's outcome from the measurements so far: *Failed
// once a metric failed more than failure_limit times or was inconclusive
// more than inconclusive_limit times; nil otherwise. With final set it also
// sets st.State to succeeded; either way a failure sets it to failed.
func Verdict(a *deployerv1.Analysis, st *deployerv1.AnalysisStatus, final bool) error {
	failLimit := int(a.GetFailureLimit())
	inconLimit := DefaultInconclusiveLimit
	if a.InconclusiveLimit != 0 {
		inconLimit = int(a.GetInconclusiveLimit())
	}
	type tally struct {
		fail, incon int
		last        string
	}
	per := map[string]*tally{}
	for _, meas := range st.GetMeasurements() {
		tl := per[meas.GetMetric()]
		if tl == nil {
			tl = &tally{}
			per[meas.GetMetric()] = tl
		}
		switch meas.GetOutcome() {
		case deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_FAIL:
			tl.fail++
			tl.last = meas.GetMessage()
		case deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE:
			tl.incon++
			if tl.last == "" {
				tl.last = meas.GetMessage()
			}
		}
	}
	for _, metric := range a.GetMetrics() {
		tl := per[metric.GetName()]
		if tl == nil {
			continue
		}
		var msg string
		inconclusive := false
		switch {
		case tl.fail > failLimit:
			msg = fmt.Sprintf("%s failed %d measurement(s) (%d allowed): %s", metric.GetName(), tl.fail, failLimit, tl.last)
		case tl.incon > inconLimit:
			msg = fmt.Sprintf("%s was inconclusive %d time(s) (%d allowed): %s", metric.GetName(), tl.incon, inconLimit, tl.last)
			inconclusive = true
		}
		if msg != "" {
			st.State = deployerv1.StepState_STEP_STATE_FAILED
			st.Message = msg
			return &Failed{Message: msg, Inconclusive: inconclusive}
		}
	}
	if final {
		st.State = deployerv1.StepState_STEP_STATE_SUCCEEDED
		st.Message = summary(a)
	}
	return nil
}

func summary(a *deployerv1.Analysis) string {
	names := make([]string, 0, len(a.GetMetrics()))
	for _, m := range a.GetMetrics() {
		names = append(names, m.GetName())
	}
	return fmt.Sprintf("passed: %s over %d round(s)", strings.Join(names, ", "), countOf(a))
}

// roundsDone is how many full rounds st holds.
func roundsDone(a *deployerv1.Analysis, st *deployerv1.AnalysisStatus) int {
	if n := len(a.GetMetrics()); n > 0 {
		return len(st.GetMeasurements()) / n
	}
	return 0
}

// Duration is how long an analysis step takes when it passes.
func Duration(a *deployerv1.Analysis) time.Duration {
	return a.GetInitialDelay().AsDuration() + time.Duration(countOf(a))*intervalOf(a)
}

func intervalOf(a *deployerv1.Analysis) time.Duration {
	if d := a.GetInterval().AsDuration(); d > 0 {
		return d
	}
	return DefaultInterval
}

func countOf(a *deployerv1.Analysis) int {
	if c := a.GetCount(); c > 0 {
		return int(c)
	}
	return DefaultCount
}

func windowOf(rm *deployerv1.RouterMetric, interval time.Duration) time.Duration {
	if w := rm.GetWindow().AsDuration(); w > 0 && w < interval {
		return w
	}
	return interval
}

func percentileOf(rm *deployerv1.RouterMetric) float64 {
	if p := rm.GetPercentile(); p > 0 && p <= 100 {
		return p
	}
	return DefaultPercentile
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func sleepUntil(ctx context.Context, at time.Time, now func() time.Time) error {
	return sleep(ctx, at.Sub(now()))
}
