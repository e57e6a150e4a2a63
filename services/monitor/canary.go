package monitor

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"text/template"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// canaryQuery renders the PromQL of metric m for one side.
func canaryQuery(m *monitorv1.CanaryMetric, tmpl *template.Template, selector string, window time.Duration) (string, error) {
	w := model.Duration(window).String()
	if tmpl != nil {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, struct{ Selector, Window string }{selector, w}); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	sel := m.GetMetric() + "{" + selector + "}[" + w + "]"
	switch m.GetAggregation() {
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_LAST:
		return "avg(last_over_time(" + sel + "))", nil
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_MIN:
		return "avg(min_over_time(" + sel + "))", nil
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_MAX:
		return "avg(max_over_time(" + sel + "))", nil
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_SUM:
		return "avg(sum_over_time(" + sel + "))", nil
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_RATE:
		return "sum(rate(" + sel + "))", nil
	}
	return "avg(avg_over_time(" + sel + "))", nil
}

// AnalyzeCanary compares canary and stable over a window.
func (s *Service) AnalyzeCanary(ctx context.Context, req *monitorv1.AnalyzeCanaryRequest) (*monitorv1.AnalyzeCanaryResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	verr := validation.New("canary analysis")
	if len(req.GetMetrics()) == 0 {
		verr.Add("metrics", "at least one metric is required")
	}
	canarySel, err := s.selectorOf("canary_matchers", req.GetCanaryMatchers())
	if err != nil {
		return nil, toStatus(err)
	}
	stableSel, err := s.selectorOf("stable_matchers", req.GetStableMatchers())
	if err != nil {
		return nil, toStatus(err)
	}
	if len(req.GetCanaryMatchers()) == 0 {
		verr.Add("canary_matchers", "at least one matcher is required")
	}
	window := 5 * time.Minute
	if req.GetWindow() != nil {
		if window = req.GetWindow().AsDuration(); window <= 0 {
			verr.Add("window", "must be positive")
		}
	}
	tmpls := make([]*template.Template, len(req.GetMetrics()))
	for i, m := range req.GetMetrics() {
		f := fmt.Sprintf("metrics[%d]", i)
		switch {
		case m.GetQueryTemplate() != "":
			t, err := template.New(m.GetName()).Option("missingkey=error").Parse(m.GetQueryTemplate())
			if err != nil {
				verr.Add(f+".query_template", "%v", err)
				continue
			}
			tmpls[i] = t
			if q, err := canaryQuery(m, t, `app="x"`, window); err != nil {
				verr.Add(f+".query_template", "%v", err)
			} else if _, err := s.db.Parser().ParseExpr(q); err != nil {
				verr.Add(f+".query_template", "renders invalid PromQL: %v", err)
			}
		case m.GetMetric() != "":
			if !ingest.ValidMetricName(m.GetMetric()) {
				verr.Add(f+".metric", "metric name %q must match [a-zA-Z_:][a-zA-Z0-9_:]*", m.GetMetric())
			}
		default:
			verr.Add(f+".measurement", "one of query_template and metric is required")
		}
		if m.GetComparison() == monitorv1.CanaryComparison_CANARY_COMPARISON_UNSPECIFIED {
			verr.Add(f+".comparison", "required")
		}
		needsStable := m.GetComparison() != monitorv1.CanaryComparison_CANARY_COMPARISON_CANARY_MAX && m.GetComparison() != monitorv1.CanaryComparison_CANARY_COMPARISON_CANARY_MIN
		if needsStable && len(req.GetStableMatchers()) == 0 {
			verr.Add("stable_matchers", "required by %s of %s", m.GetComparison(), f)
		}
	}
	if err := verr.Err(); err != nil {
		return nil, toStatus(err)
	}
	end := time.Now()
	if req.GetEndTime() != nil {
		end = req.GetEndTime().AsTime()
	}
	an := &monitorv1.CanaryAnalysis{
		Verdict: monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_PASS, WindowStart: timestamppb.New(end.Add(-window)), WindowEnd: timestamppb.New(end),
		Application: req.GetApplication(), RolloutId: req.GetRolloutId(),
	}
	for i, m := range req.GetMetrics() {
		r := &monitorv1.CanaryMetricResult{Name: m.GetName(), Comparison: m.GetComparison(), Threshold: m.GetThreshold(), CanaryValue: math.NaN(), StableValue: math.NaN()}
		var qerr error
		r.CanaryQuery, _ = canaryQuery(m, tmpls[i], canarySel, window)
		r.CanaryValue, qerr = s.scalarAt(ctx, r.CanaryQuery, end)
		if len(req.GetStableMatchers()) > 0 {
			r.StableQuery, _ = canaryQuery(m, tmpls[i], stableSel, window)
			var serr error
			r.StableValue, serr = s.scalarAt(ctx, r.StableQuery, end)
			if qerr == nil {
				qerr = serr
			}
		}
		judge(r, qerr)
		switch {
		case r.Verdict == monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_FAIL:
			an.Verdict = monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_FAIL
		case r.Verdict == monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_INCONCLUSIVE && an.Verdict == monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_PASS:
			an.Verdict = monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_INCONCLUSIVE
		}
		an.Results = append(an.Results, r)
	}
	if _, err := s.events.Publish(ctx, eventbus.Event{Type: EventCanaryAnalyzed, Subject: req.GetApplication(), Data: &eventsv1.CanaryAnalyzed{Analysis: an}}); err != nil {
		s.log.Warn("publish canary analysis", "err", err)
	}
	return &monitorv1.AnalyzeCanaryResponse{Analysis: an}, nil
}

func (s *Service) selectorOf(field string, ms []string) (string, error) {
	parsed, err := s.parseMatchers("canary analysis", field, ms)
	if err != nil {
		return "", err
	}
	parts := make([]string, 0, len(parsed))
	for _, m := range parsed {
		parts = append(parts, m.String())
	}
	return strings.Join(parts, ", "), nil
}

// scalarAt evaluates q and returns its single value; NaN when empty.
func (s *Service) scalarAt(ctx context.Context, q string, t time.Time) (float64, error) {
	vec, err := s.evalExpr(ctx, q, t)
	if err != nil {
		return math.NaN(), err
	}
	switch len(vec) {
	case 0:
		return math.NaN(), nil
	case 1:
		return vec[0].F, nil
	}
	return math.NaN(), fmt.Errorf("query returned %d series, want one", len(vec))
}

// judge sets the verdict and message of one metric.
func judge(r *monitorv1.CanaryMetricResult, qerr error) {
	c, st, th := r.GetCanaryValue(), r.GetStableValue(), r.GetThreshold()
	inconclusive := func(why string) {
		r.Verdict, r.Message = monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_INCONCLUSIVE, r.GetName()+": "+why
	}
	if qerr != nil {
		inconclusive("query failed: " + qerr.Error())
		return
	}
	if math.IsNaN(c) {
		inconclusive("no canary data in the window")
		return
	}
	var figure float64
	var pass bool
	var what string
	switch r.GetComparison() {
	case monitorv1.CanaryComparison_CANARY_COMPARISON_CANARY_MAX:
		figure, pass, what = c, c <= th, "canary value %g, at most %g allowed"
	case monitorv1.CanaryComparison_CANARY_COMPARISON_CANARY_MIN:
		figure, pass, what = c, c >= th, "canary value %g, at least %g required"
	default:
		if math.IsNaN(st) {
			inconclusive("no stable data in the window")
			return
		}
		switch r.GetComparison() {
		case monitorv1.CanaryComparison_CANARY_COMPARISON_DIFFERENCE_MAX:
			figure = c - st
			pass, what = figure <= th, "canary is %g above stable, at most %g allowed"
		case monitorv1.CanaryComparison_CANARY_COMPARISON_DIFFERENCE_MIN:
			figure = c - st
			pass, what = figure >= th, "canary is %g above stable, at least %g required"
		case monitorv1.CanaryComparison_CANARY_COMPARISON_RATIO_MAX, monitorv1.CanaryComparison_CANARY_COMPARISON_RATIO_MIN:
			if st == 0 {
				figure = math.Inf(1)
				if c == 0 {
					figure = 1
				}
			} else {
				figure = c / st
			}
			if r.GetComparison() == monitorv1.CanaryComparison_CANARY_COMPARISON_RATIO_MAX {
				pass, what = figure <= th || (st == 0 && c == 0), "canary is %g times stable, at most %g allowed"
			} else {
				pass, what = figure >= th || (st == 0 && c == 0), "canary is %g times stable, at least %g required"
			}
		}
	}
	r.Verdict = monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_FAIL
	if pass {
		r.Verdict = monitorv1.AnalysisVerdict_ANALYSIS_VERDICT_PASS
	}
	r.Message = fmt.Sprintf("%s: "+what+" (canary %g, stable %g)", r.GetName(), figure, th, c, st)
}
