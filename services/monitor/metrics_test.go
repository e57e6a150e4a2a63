package monitor_test

import (
	"math"
	"strings"
	"testing"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPushQuerySummary(t *testing.T) {
	e := newEnv(t)
	in := e.start(t, monitor.Config{})
	c := in.client
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)

	// JSON-friendly samples and a columnar batch in one push.
	req := &monitorv1.PushMetricsRequest{
		Batch: &monitorv1.SampleBatch{
			Symbols: []string{"", "__name__", "cpu_usage", "host", "a", "b", "percent"},
			Series: []*monitorv1.SeriesSamples{
				{LabelRefs: []uint32{1, 2, 3, 4}, TimestampsMs: []int64{now.Add(-3 * time.Second).UnixMilli(), now.Add(-2 * time.Second).UnixMilli(), now.Add(-1 * time.Second).UnixMilli()},
					Values: []float64{10, 30, 20}, Type: monitorv1.MetricType_METRIC_TYPE_GAUGE, UnitRef: 6},
				// Unsorted pairs are sorted by the server.
				{LabelRefs: []uint32{3, 5, 1, 2}, TimestampsMs: []int64{now.Add(-1 * time.Second).UnixMilli()}, Values: []float64{math.Inf(1)}},
			},
		},
	}
	for i, v := range []float64{1, 2, 3} {
		req.Samples = append(req.Samples, &monitorv1.Sample{Name: "requests", Labels: map[string]string{"code": "200", "empty": ""}, Value: v,
			Time: timestamppb.New(now.Add(time.Duration(i-3) * time.Second))})
	}
	resp, err := c.PushMetrics(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccepted() != 7 || resp.GetRejected() != 0 {
		t.Fatalf("accepted %d rejected %d, want 7 and 0", resp.GetAccepted(), resp.GetRejected())
	}

	// An out-of-order sample is counted, the rest stored.
	resp, err = c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{
		{Name: "requests", Labels: map[string]string{"code": "200"}, Value: 9, Time: timestamppb.New(now.Add(-10 * time.Second))},
		{Name: "requests", Labels: map[string]string{"code": "200"}, Value: 4, Time: timestamppb.New(now)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccepted() != 1 || resp.GetRejected() != 1 || len(resp.GetRejections()) != 1 || resp.GetRejections()[0].GetField() != "samples[0].values[0]" {
		t.Fatalf("got %v, want one accepted and samples[0] rejected as out of order", resp)
	}

	q, err := c.Query(ctx, &monitorv1.QueryRequest{Query: `sum(cpu_usage{host="a"})`, Time: timestamppb.New(now)})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.GetResult().GetSeries(); len(got) != 1 || got[0].GetPoints()[0].GetValue() != 20 {
		t.Fatalf("query result %v, want 20", q.GetResult())
	}
	qr, err := c.QueryRange(ctx, &monitorv1.QueryRangeRequest{Query: `cpu_usage{host="a"}`, StartTime: timestamppb.New(now.Add(-3 * time.Second)), EndTime: timestamppb.New(now), Step: dur(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if qr.GetResult().GetResultType() != monitorv1.ResultType_RESULT_TYPE_MATRIX || len(qr.GetResult().GetSeries()[0].GetPoints()) != 4 {
		t.Fatalf("range result %v", qr.GetResult())
	}

	sum, err := c.GetMetricSummary(ctx, &monitorv1.GetMetricSummaryRequest{Name: "cpu_usage", Matchers: []string{`host="a"`}, Window: dur(time.Minute), EndTime: timestamppb.New(now)})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.GetSeries()) != 1 {
		t.Fatalf("summary series %v", sum.GetSeries())
	}
	s := sum.GetSeries()[0]
	if s.GetCurrent() != 20 || s.GetAvg() != 20 || s.GetMin() != 10 || s.GetMax() != 30 || s.GetCount() != 3 || s.GetSum() != 60 {
		t.Fatalf("summary %v, want current 20 avg 20 min 10 max 30 count 3", s)
	}

	lm, err := c.ListMetrics(ctx, &monitorv1.ListMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range lm.GetMetrics() {
		names = append(names, m.GetName())
		if m.GetName() == "cpu_usage" && (m.GetType() != monitorv1.MetricType_METRIC_TYPE_GAUGE || m.GetUnit() != "percent" || m.GetSeriesCount() != 2) {
			t.Errorf("cpu_usage info %v", m)
		}
	}
	if strings.Join(names, ",") != "cpu_usage,requests" {
		t.Fatalf("metrics %v", names)
	}
	series, err := c.ListSeries(ctx, &monitorv1.ListSeriesRequest{Selectors: []string{`requests`}})
	if err != nil {
		t.Fatal(err)
	}
	if len(series.GetSeries()) != 1 || series.GetSeries()[0].GetLabels()["code"] != "200" || series.GetSeries()[0].GetLabels()["empty"] != "" {
		t.Fatalf("series %v (an empty label value is an absent label)", series.GetSeries())
	}
	ln, err := c.ListLabelNames(ctx, &monitorv1.ListLabelNamesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ln.GetNames(), ",") != "__name__,code,host" {
		t.Fatalf("label names %v", ln.GetNames())
	}
	lv, err := c.ListLabelValues(ctx, &monitorv1.ListLabelValuesRequest{Name: "host", Selectors: []string{"cpu_usage"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lv.GetValues(), ",") != "a,b" {
		t.Fatalf("host values %v", lv.GetValues())
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	push := func(r *monitorv1.PushMetricsRequest) error { _, err := c.PushMetrics(ctx, r); return err }
	cases := []struct {
		name  string
		err   func() error
		field string
		want  string
	}{
		{"bad metric name", func() error {
			return push(&monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "ok"}, {Name: "9bad"}}})
		}, "samples[1].name", "must match"},
		{"reserved label", func() error {
			return push(&monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "m", Labels: map[string]string{"__x": "1"}}}})
		}, `samples[0].labels["__x"]`, "__"},
		{"symbol out of range", func() error {
			return push(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "m"},
				Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 7}, TimestampsMs: []int64{1}, Values: []float64{1}}}}})
		}, "batch.series[0].label_refs[0]", "out of range"},
		{"length mismatch", func() error {
			return push(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "m"},
				Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 2}, TimestampsMs: []int64{1, 2}, Values: []float64{1}}}}})
		}, "batch.series[0].values", "timestamps"},
		{"repeated label", func() error {
			return push(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "m", "a"},
				Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 2, 3, 2, 3, 2}, TimestampsMs: []int64{1}, Values: []float64{1}}}}})
		}, "batch.series[0].label_refs[4]", "repeated"},
		{"missing name", func() error {
			return push(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "a", "b"},
				Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 2}, TimestampsMs: []int64{1}, Values: []float64{1}}}}})
		}, "batch.series[0].label_refs", "__name__"},
		{"symbol 0 not empty", func() error {
			return push(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"x"},
				Series: []*monitorv1.SeriesSamples{{}}}})
		}, "batch.symbols[0]", "empty"},
		{"invalid PromQL", func() error {
			_, err := c.Query(ctx, &monitorv1.QueryRequest{Query: "sum(rate(x[5m]) by"})
			return err
		}, "query", "1:"},
		{"invalid range step", func() error {
			_, err := c.QueryRange(ctx, &monitorv1.QueryRangeRequest{Query: "up", StartTime: timestamppb.New(time.Unix(0, 0)), Step: dur(time.Millisecond)})
			return err
		}, "step", "points"},
		{"invalid summary matcher", func() error {
			_, err := c.GetMetricSummary(ctx, &monitorv1.GetMetricSummaryRequest{Name: "m", Matchers: []string{`job=~"(("`}})
			return err
		}, "matchers[0]", "regexp"},
		{"rule label name that breaks the rule", func() error {
			_, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "r", Condition: &monitorv1.Rule_Threshold{
				Threshold: &monitorv1.ThresholdCondition{Metric: "m", High: new(float64), Matchers: []*monitorv1.LabelMatcher{{Name: "bad-name", Value: "x"}}}}}})
			return err
		}, "rule.threshold.matchers[0]", "label name"},
		{"rule with invalid PromQL", func() error {
			_, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "r", Condition: &monitorv1.Rule_Expr{Expr: "up ==== 1"}}})
			return err
		}, "rule.expr", "1:"},
		{"rule with broken template", func() error {
			_, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "r", Condition: &monitorv1.Rule_Expr{Expr: "up"},
				Annotations: map[string]string{"summary": "{{ $labels.x "}}})
			return err
		}, `rule.annotations["summary"]`, "template"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := wantField(t, tc.err(), tc.field)
			if !strings.Contains(got, tc.want) {
				t.Fatalf("%s: %q does not mention %q", tc.field, got, tc.want)
			}
		})
	}
}

// TestNaNAndInf pins the documented behaviour: NaN and ±Inf are stored as
// given and NaN never crosses a threshold.
func TestNaNAndInf(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	now := time.Now()
	_, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{
		{Name: "v", Labels: map[string]string{"k": "nan"}, Value: math.NaN(), Time: timestamppb.New(now)},
		{Name: "v", Labels: map[string]string{"k": "inf"}, Value: math.Inf(1), Time: timestamppb.New(now)},
		// The staleness-marker bit pattern is stored as an ordinary NaN.
		{Name: "v", Labels: map[string]string{"k": "stale"}, Value: math.Float64frombits(0x7ff0000000000002), Time: timestamppb.New(now)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.Query(ctx, &monitorv1.QueryRequest{Query: "v", Time: timestamppb.New(now)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(q.GetResult().GetSeries()); n != 3 {
		t.Fatalf("%d series, want 3 (a stale marker would have hidden one)", n)
	}
	q, err = c.Query(ctx, &monitorv1.QueryRequest{Query: "v > 1e300", Time: timestamppb.New(now)})
	if err != nil {
		t.Fatal(err)
	}
	if s := q.GetResult().GetSeries(); len(s) != 1 || s[0].GetLabels()["k"] != "inf" {
		t.Fatalf("threshold crossings %v, want only +Inf", s)
	}
}
