package monitor_test

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestScrapeLoopbackTarget scrapes a loopback /metrics endpoint (text
// format and OpenMetrics) into the store.
func TestScrapeLoopbackTarget(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# HELP jobs_done_total Jobs done.\n# TYPE jobs_done_total counter\njobs_done_total{queue=\"a\",job=\"inner\"} 42\n")
	})
	mux.HandleFunc("/om", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
		fmt.Fprint(w, "# TYPE temp_celsius gauge\n# UNIT temp_celsius celsius\ntemp_celsius 21.5\n# EOF\n")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for name, path := range map[string]string{"text": "/metrics", "om": "/om"} {
		if _, err := c.CreateScrapeTarget(ctx, &monitorv1.CreateScrapeTargetRequest{ScrapeTarget: &monitorv1.ScrapeTarget{
			Name: name, Url: srv.URL + path, Interval: dur(time.Second), Labels: map[string]string{"env": "test"}}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		q, err := c.Query(ctx, &monitorv1.QueryRequest{Query: `jobs_done_total{job="text",exported_job="inner",env="test"} + on() group_left temp_celsius{job="om"}`})
		if err != nil {
			return err
		}
		if s := q.GetResult().GetSeries(); len(s) != 1 || s[0].GetPoints()[0].GetValue() != 63.5 {
			return fmt.Errorf("result %v", s)
		}
		return nil
	})
	got, err := c.GetScrapeTarget(ctx, &monitorv1.GetScrapeTargetRequest{Name: "text"})
	if err != nil {
		t.Fatal(err)
	}
	if st := got.GetScrapeTarget().GetStatus(); st.GetHealth() != monitorv1.ScrapeHealth_SCRAPE_HEALTH_UP || st.GetLastSampleCount() != 1 {
		t.Fatalf("status %v", st)
	}
	up, err := c.Query(ctx, &monitorv1.QueryRequest{Query: `up{job="om"}`})
	if err != nil || len(up.GetResult().GetSeries()) != 1 || up.GetResult().GetSeries()[0].GetPoints()[0].GetValue() != 1 {
		t.Fatalf("up %v %v", up, err)
	}
	lm, err := c.ListMetrics(ctx, &monitorv1.ListMetricsRequest{NamePrefix: "temp"})
	if err != nil || len(lm.GetMetrics()) != 1 || lm.GetMetrics()[0].GetUnit() != "celsius" || lm.GetMetrics()[0].GetType() != monitorv1.MetricType_METRIC_TYPE_GAUGE {
		t.Fatalf("metadata %v %v", lm, err)
	}
	if _, err := c.DeleteScrapeTarget(ctx, &monitorv1.DeleteScrapeTargetRequest{Name: "om"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateScrapeTarget(ctx, &monitorv1.CreateScrapeTargetRequest{ScrapeTarget: &monitorv1.ScrapeTarget{Name: "Bad_Name", Url: "ftp://x"}})
	wantField(t, err, "scrape_target.url")
}

func TestAnalyzeCanary(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	now := time.Now()
	var samples []*monitorv1.Sample
	for i := range 5 {
		ts := timestamppb.New(now.Add(time.Duration(i-5) * 10 * time.Second))
		samples = append(samples,
			&monitorv1.Sample{Name: "error_ratio", Labels: map[string]string{"app": "shop", "revision": "v2"}, Value: 0.05, Time: ts},
			&monitorv1.Sample{Name: "error_ratio", Labels: map[string]string{"app": "shop", "revision": "v1"}, Value: 0.01, Time: ts},
			&monitorv1.Sample{Name: "latency", Labels: map[string]string{"app": "shop", "revision": "v2"}, Value: 0.2, Time: ts},
			&monitorv1.Sample{Name: "latency", Labels: map[string]string{"app": "shop", "revision": "v1"}, Value: 0.2, Time: ts},
		)
	}
	if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: samples}); err != nil {
		t.Fatal(err)
	}
	req := &monitorv1.AnalyzeCanaryRequest{
		CanaryMatchers: []string{`app="shop"`, `revision="v2"`}, StableMatchers: []string{`app="shop"`, `revision="v1"`},
		Window: dur(time.Minute), EndTime: timestamppb.New(now), Application: "shop", RolloutId: "r-1",
		Metrics: []*monitorv1.CanaryMetric{
			{Name: "latency-ratio", Measurement: &monitorv1.CanaryMetric_QueryTemplate{QueryTemplate: `avg(avg_over_time(latency{ {{.Selector}} }[{{.Window}}]))`},
				Comparison: monitorv1.CanaryComparison_CANARY_COMPARISON_RATIO_MAX, Threshold: 1.2},
			{Name: "error-ratio", Measurement: &monitorv1.CanaryMetric_Metric{Metric: "error_ratio"},
				Comparison: monitorv1.CanaryComparison_CANARY_COMPARISON_DIFFERENCE_MAX, Threshold: 0.01},
		},
	}
	resp, err := c.AnalyzeCanary(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	an := resp.GetAnalysis()
	if an.GetVerdict() != monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_FAIL || len(an.GetResults()) != 2 {
		t.Fatalf("analysis %v, want FAIL", an)
	}
	lat, errs := an.GetResults()[0], an.GetResults()[1]
	if lat.GetVerdict() != monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_PASS || lat.GetCanaryValue() != 0.2 {
		t.Errorf("latency %v", lat)
	}
	if errs.GetVerdict() != monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_FAIL || math.Abs(errs.GetCanaryValue()-0.05) > 1e-9 || math.Abs(errs.GetStableValue()-0.01) > 1e-9 {
		t.Errorf("error ratio %v", errs)
	}
	// No data for the canary side: inconclusive, not pass.
	req.CanaryMatchers = []string{`app="shop"`, `revision="v9"`}
	req.Metrics = req.Metrics[:1]
	resp, err = c.AnalyzeCanary(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAnalysis().GetVerdict() != monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_INCONCLUSIVE {
		t.Fatalf("verdict %s without canary data, want inconclusive", resp.GetAnalysis().GetVerdict())
	}
	req.Metrics = []*monitorv1.CanaryMetric{{Name: "x", Measurement: &monitorv1.CanaryMetric_QueryTemplate{QueryTemplate: `rate(x{ {{.Selector}} }[{{.Window}}]`}, Comparison: monitorv1.CanaryComparison_CANARY_COMPARISON_CANARY_MAX}}
	_, err = c.AnalyzeCanary(ctx, req)
	wantField(t, err, "metrics[0].query_template")
}
