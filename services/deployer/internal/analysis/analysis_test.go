package analysis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/analysis"
	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// canary runs a real router on loopback with a stable revision 1 and a
// canary revision 2 that fails the given share of requests, and a bounded
// load through it until the test ends.
func canary(t *testing.T, failEvery int, rps int) *router.Router {
	t.Helper()
	replica := func(failEvery int) *httptest.Server {
		var n atomic.Int64
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if failEvery > 0 && n.Add(1)%int64(failEvery) == 0 {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			fmt.Fprint(w, "ok")
		}))
		t.Cleanup(s.Close)
		return s
	}
	stable, canary := replica(0), replica(failEvery)
	r, err := router.New(router.Config{App: "analysis-" + strings.ReplaceAll(t.Name(), "/", "-")}, router.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = r.Serve(ctx, l) }()
	_ = r.SetBackends(1, []string{stable.Listener.Addr().String()})
	_ = r.SetBackends(2, []string{canary.Listener.Addr().String()})
	_ = r.SetWeights(map[int64]int{1: 50, 2: 50})

	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		client := &http.Client{Timeout: 2 * time.Second}
		defer client.CloseIdleConnections()
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			resp, err := client.Get("http://" + l.Addr().String() + "/")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	t.Cleanup(func() {
		stop()
		<-loadDone
		<-served
		_ = r.Close()
	})
	return r
}

func errorRatio(threshold float64) *deployerv1.AnalysisMetric {
	return &deployerv1.AnalysisMetric{
		Name: "error-ratio",
		Source: &deployerv1.AnalysisMetric_Router{Router: &deployerv1.RouterMetric{
			Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO, MinRequests: 5,
		}},
		Comparison: deployerv1.Comparison_COMPARISON_LESS_OR_EQUAL, Threshold: threshold,
	}
}

func spec(count int32, metrics ...*deployerv1.AnalysisMetric) *deployerv1.Analysis {
	return &deployerv1.Analysis{Metrics: metrics, Interval: durationpb.New(300 * time.Millisecond), Count: count}
}

func TestHealthyCanaryPasses(t *testing.T) {
	r := canary(t, 0, 100)
	latency := &deployerv1.AnalysisMetric{
		Name: "p99",
		Source: &deployerv1.AnalysisMetric_Router{Router: &deployerv1.RouterMetric{
			Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_LATENCY, Percentile: 99, MinRequests: 5,
		}},
		Comparison: deployerv1.Comparison_COMPARISON_LESS_THAN, Threshold: 1,
	}
	m := &analysis.Measurer{Router: r.Stats}
	st := &deployerv1.AnalysisStatus{}
	saves := 0
	err := m.Run(context.Background(), spec(3, errorRatio(0.01), latency), analysis.Target{App: "a", Env: "e", Revision: 2, Stable: 1}, st, func() error { saves++; return nil })
	if err != nil {
		t.Fatalf("Run = %v; measurements %v", err, st.GetMeasurements())
	}
	if st.GetState() != deployerv1.StepState_STEP_STATE_SUCCEEDED || len(st.GetMeasurements()) != 6 || saves != 3 {
		t.Fatalf("state %v, %d measurements, %d saves; want succeeded, 6, 3", st.GetState(), len(st.GetMeasurements()), saves)
	}
	for _, meas := range st.GetMeasurements() {
		if meas.GetOutcome() != deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_PASS || meas.GetTime() == nil {
			t.Fatalf("measurement %v, want a timed pass", meas)
		}
	}
}

func TestFailingCanaryFailsAtTheFirstConclusiveRound(t *testing.T) {
	r := canary(t, 2, 100) // every second request to the canary fails
	m := &analysis.Measurer{Router: r.Stats}
	st := &deployerv1.AnalysisStatus{}
	begin := time.Now()
	err := m.Run(context.Background(), spec(5, errorRatio(0.05)), analysis.Target{Revision: 2, Stable: 1}, st, func() error { return nil })
	var failed *analysis.Failed
	if !errors.As(err, &failed) {
		t.Fatalf("Run = %v, want *Failed", err)
	}
	if len(st.GetMeasurements()) != 1 || st.GetState() != deployerv1.StepState_STEP_STATE_FAILED {
		t.Fatalf("measurements %d state %v: want the first failing round to end it", len(st.GetMeasurements()), st.GetState())
	}
	if !strings.Contains(failed.Message, "error-ratio failed 1 measurement(s)") || !strings.Contains(failed.Message, "error ratio") {
		t.Fatalf("message %q should name the metric and the figure", failed.Message)
	}
	if v := st.GetMeasurements()[0].GetValue(); v < 0.3 || v > 0.7 {
		t.Fatalf("measured error ratio %v, want about 0.5", v)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("took %s for a 300ms round", took)
	}
}

func TestRelativeToStableAndFailureLimit(t *testing.T) {
	r := canary(t, 4, 100) // 25% errors on the canary, none on stable
	rel := errorRatio(0.1)
	rel.GetRouter().RelativeToStable = true
	a := spec(3, rel)
	a.FailureLimit = 1
	m := &analysis.Measurer{Router: r.Stats}
	st := &deployerv1.AnalysisStatus{}
	err := m.Run(context.Background(), a, analysis.Target{Revision: 2, Stable: 1}, st, func() error { return nil })
	if !errors.As(err, new(*analysis.Failed)) || len(st.GetMeasurements()) != 2 {
		t.Fatalf("Run = %v after %d measurements; want failure at the second (limit 1)", err, len(st.GetMeasurements()))
	}
	if !strings.Contains(st.GetMeasurements()[0].GetMessage(), "minus the stable") {
		t.Fatalf("message %q should say it is relative", st.GetMeasurements()[0].GetMessage())
	}
}

func TestTooLittleTrafficIsInconclusive(t *testing.T) {
	r := canary(t, 0, 5) // a trickle: fewer requests than min_requests per window
	metric := errorRatio(0.01)
	metric.GetRouter().MinRequests = 1000
	m := &analysis.Measurer{Router: r.Stats}
	st := &deployerv1.AnalysisStatus{}
	err := m.Run(context.Background(), spec(3, metric), analysis.Target{Revision: 2, Stable: 1}, st, func() error { return nil })
	var failed *analysis.Failed
	if !errors.As(err, &failed) || !strings.Contains(failed.Message, "inconclusive 2 time(s)") {
		t.Fatalf("Run = %v, want inconclusive twice (1 allowed)", err)
	}
	if st.GetMeasurements()[0].GetOutcome() != deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE ||
		!strings.Contains(st.GetMeasurements()[0].GetMessage(), "needed") {
		t.Fatalf("first measurement %v", st.GetMeasurements()[0])
	}
}

// unreachable is a monitor whose every query fails.
type unreachable struct{}

func (unreachable) QueryValue(context.Context, string) (float64, bool, error) {
	return 0, false, errors.New("connection refused")
}

func TestUnreachableMonitorFallsBackToTheRouter(t *testing.T) {
	r := canary(t, 0, 100)
	metric := &deployerv1.AnalysisMetric{
		Name: "errors",
		Source: &deployerv1.AnalysisMetric_Monitor{Monitor: &deployerv1.MonitorQuery{
			Query:    `sum(rate(http_errors_total{app="{{application}}",revision="{{revision}}"}[1m]))`,
			Fallback: errorRatio(0).GetRouter(),
		}},
		Comparison: deployerv1.Comparison_COMPARISON_LESS_OR_EQUAL, Threshold: 0.01,
	}
	m := &analysis.Measurer{Router: r.Stats, Monitor: unreachable{}}
	st := &deployerv1.AnalysisStatus{}
	if err := m.Run(context.Background(), spec(1, metric), analysis.Target{App: "shop", Revision: 2, Stable: 1}, st, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	msg := st.GetMeasurements()[0].GetMessage()
	if !strings.Contains(msg, `app="shop",revision="2"`) || !strings.Contains(msg, "measured the router instead") {
		t.Fatalf("message %q should show the substituted query and the fallback", msg)
	}
}

func TestRunResumesAfterTheRoundsDone(t *testing.T) {
	r := canary(t, 0, 100)
	a := spec(3, errorRatio(0.01))
	a.InitialDelay = durationpb.New(time.Hour) // skipped: rounds were already done
	st := &deployerv1.AnalysisStatus{Measurements: []*deployerv1.AnalysisMeasurement{
		{Metric: "error-ratio", Outcome: deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_PASS},
		{Metric: "error-ratio", Outcome: deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_PASS},
	}}
	m := &analysis.Measurer{Router: r.Stats}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Run(ctx, a, analysis.Target{Revision: 2, Stable: 1}, st, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(st.GetMeasurements()) != 3 {
		t.Fatalf("%d measurements, want 3 (one more round)", len(st.GetMeasurements()))
	}
}

func TestBackgroundStopsAtTheFirstFailure(t *testing.T) {
	r := canary(t, 0, 100)
	m := &analysis.Measurer{Router: r.Stats}
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	// A healthy canary keeps measuring until the context ends.
	if err := m.Background(ctx, spec(0, errorRatio(0.01)), analysis.Target{Revision: 2, Stable: 1}, &deployerv1.AnalysisStatus{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Background = %v, want the context's end", err)
	}
	bad := canary(t, 2, 100)
	m = &analysis.Measurer{Router: bad.Stats}
	err := m.Background(context.Background(), spec(0, errorRatio(0.01)), analysis.Target{Revision: 2, Stable: 1}, &deployerv1.AnalysisStatus{})
	if !errors.As(err, new(*analysis.Failed)) {
		t.Fatalf("Background = %v, want *Failed", err)
	}
}

func TestVerdictTable(t *testing.T) {
	pass, fail, incon := deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_PASS, deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_FAIL, deployerv1.MeasurementOutcome_MEASUREMENT_OUTCOME_INCONCLUSIVE
	cases := []struct {
		name         string
		failLimit    int32
		inconLimit   int32
		outcomes     []deployerv1.MeasurementOutcome
		wantFailed   bool
		wantContains string
	}{
		{"all pass", 0, 0, []deployerv1.MeasurementOutcome{pass, pass}, false, ""},
		{"one fail over limit 0", 0, 0, []deployerv1.MeasurementOutcome{pass, fail}, true, "failed 1"},
		{"one fail within limit 1", 1, 0, []deployerv1.MeasurementOutcome{fail, pass}, false, ""},
		{"default inconclusive limit 1", 0, 0, []deployerv1.MeasurementOutcome{incon, pass}, false, ""},
		{"two inconclusive", 0, 0, []deployerv1.MeasurementOutcome{incon, incon}, true, "inconclusive 2"},
		{"inconclusive limit 3", 0, 3, []deployerv1.MeasurementOutcome{incon, incon, incon}, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &deployerv1.Analysis{Metrics: []*deployerv1.AnalysisMetric{{Name: "m"}}, FailureLimit: tc.failLimit, InconclusiveLimit: tc.inconLimit}
			st := &deployerv1.AnalysisStatus{}
			for _, o := range tc.outcomes {
				st.Measurements = append(st.Measurements, &deployerv1.AnalysisMeasurement{Metric: "m", Outcome: o, Message: "x"})
			}
			err := analysis.Verdict(a, st, true)
			if (err != nil) != tc.wantFailed || (err != nil && !strings.Contains(err.Error(), tc.wantContains)) {
				t.Fatalf("Verdict = %v, want failed=%v containing %q", err, tc.wantFailed, tc.wantContains)
			}
		})
	}
}
