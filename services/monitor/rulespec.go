package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/monitor/internal/direct"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/template"
)

// DefaultGroup is the group of rules that name none.
const DefaultGroup = "default"

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func validName(s string) bool { return len(s) <= 63 && dns1123Label.MatchString(s) }

// compiledRule is a validated rule with the PromQL it evaluates.
type compiledRule struct {
	spec      *monitorv1.Rule
	expr      string
	alertName string
	forDur    time.Duration
	keepFor   time.Duration
	recording bool
	// plan evaluates expr without the PromQL engine; nil when expr has
	// another shape than the direct package handles.
	plan *direct.Plan
	// templated: a label or annotation holds a template;
	// templatedAnnotations: an annotation does.
	templated, templatedAnnotations bool
}

// compileGroup validates a group and its rules; field paths start at prefix
// (e.g. "rule_group").
func (s *Service) compileGroup(prefix string, g *monitorv1.RuleGroup) ([]*compiledRule, time.Duration, error) {
	verr := validation.New("rule group")
	if g.GetName() == "" || len(g.GetName()) > 255 || !utf8.ValidString(g.GetName()) {
		verr.Add(prefix+".name", "required, valid UTF-8, at most 255 bytes")
	}
	interval := s.cfg.DefaultEvalInterval
	if g.GetInterval() != nil {
		interval = g.GetInterval().AsDuration()
		if interval < s.cfg.MinEvalInterval {
			verr.Add(prefix+".interval", "must be at least %s", s.cfg.MinEvalInterval)
		}
	}
	checkLabels(verr, prefix+".labels", g.GetLabels(), false)
	var out []*compiledRule
	names := map[string]bool{}
	for i, r := range g.GetRules() {
		field := fmt.Sprintf("%s.rules[%d]", prefix, i)
		if names[r.GetName()] {
			verr.Add(field+".name", "rule %q appears twice", r.GetName())
		}
		names[r.GetName()] = true
		if cr := s.compileRule(verr, field, r, interval); cr != nil {
			out = append(out, cr)
		}
	}
	if err := verr.Err(); err != nil {
		return nil, 0, err
	}
	return out, interval, nil
}

// compileRule validates one rule, adding problems to verr.
func (s *Service) compileRule(verr *validation.Error, field string, r *monitorv1.Rule, interval time.Duration) *compiledRule {
	before := len(verr.Fields)
	if !validName(r.GetName()) {
		verr.Add(field+".name", "%q must be a DNS-1123 label (lower-case letters, digits, '-', at most 63)", r.GetName())
	}
	cr := &compiledRule{spec: r, alertName: r.GetAlert(), recording: r.GetRecord() != ""}
	if cr.alertName == "" {
		cr.alertName = r.GetName()
	}
	if !utf8.ValidString(cr.alertName) {
		verr.Add(field+".alert", "not valid UTF-8")
	}
	if r.GetFor().AsDuration() < 0 {
		verr.Add(field+".for", "must not be negative")
	}
	if r.GetKeepFiringFor().AsDuration() < 0 {
		verr.Add(field+".keep_firing_for", "must not be negative")
	}
	cr.forDur, cr.keepFor = r.GetFor().AsDuration(), r.GetKeepFiringFor().AsDuration()
	for _, v := range r.GetAnnotations() {
		cr.templatedAnnotations = cr.templatedAnnotations || strings.Contains(v, "{{")
	}
	cr.templated = cr.templatedAnnotations
	for _, v := range r.GetLabels() {
		cr.templated = cr.templated || strings.Contains(v, "{{")
	}
	switch c := r.GetCondition().(type) {
	case *monitorv1.Rule_Expr:
		if strings.TrimSpace(c.Expr) == "" {
			verr.Add(field+".expr", "a PromQL expression is required")
		} else if e, err := s.db.Parser().ParseExpr(c.Expr); err != nil {
			verr.Add(field+".expr", "%v", err)
		} else {
			cr.plan = direct.Compile(e, tsstore.LookbackDelta)
		}
		cr.expr = c.Expr
	case *monitorv1.Rule_Threshold:
		cr.expr = s.compileThreshold(verr, field+".threshold", c.Threshold, interval)
		if cr.expr != "" {
			e, err := s.db.Parser().ParseExpr(cr.expr)
			if err != nil {
				verr.Add(field+".threshold", "compiles to PromQL that does not parse (%s): %v", cr.expr, err)
			} else {
				cr.plan = direct.Compile(e, tsstore.LookbackDelta)
			}
		}
	default:
		verr.Add(field+".condition", "exactly one of threshold and expr is required")
	}
	if cr.recording {
		if !ingest.ValidMetricName(r.GetRecord()) {
			verr.Add(field+".record", "%q is not a valid metric name", r.GetRecord())
		}
		if r.GetAlert() != "" {
			verr.Add(field+".alert", "a recording rule takes no alert name")
		}
		if r.GetFor() != nil || r.GetKeepFiringFor() != nil || len(r.GetAnnotations()) > 0 {
			verr.Add(field+".record", "a recording rule takes no for, keep_firing_for or annotations")
		}
		checkLabels(verr, field+".labels", r.GetLabels(), false)
	} else {
		checkLabels(verr, field+".labels", r.GetLabels(), true)
		checkTemplates(verr, field+".annotations", r.GetAnnotations())
	}
	if len(verr.Fields) > before {
		return nil
	}
	return cr
}

// checkLabels validates label names (and templates in values when asked).
func checkLabels(verr *validation.Error, field string, m map[string]string, templated bool) {
	for k, v := range m {
		if !ingest.ValidLabelName(k) || strings.HasPrefix(k, "__") {
			verr.Add(fmt.Sprintf("%s[%q]", field, k), "label name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")
		}
		if !utf8.ValidString(v) {
			verr.Add(fmt.Sprintf("%s[%q]", field, k), "value is not valid UTF-8")
		}
	}
	if templated {
		checkTemplates(verr, field, m)
	}
}

func checkTemplates(verr *validation.Error, field string, m map[string]string) {
	for k, v := range m {
		if !ingest.ValidLabelName(k) {
			verr.Add(fmt.Sprintf("%s[%q]", field, k), "name must match [a-zA-Z_][a-zA-Z0-9_]*")
			continue
		}
		tmpl := template.NewTemplateExpander(context.Background(), templateDefs+v, "__check", nil, 0, nil, nil, nil)
		if err := tmpl.ParseTest(); err != nil {
			verr.Add(fmt.Sprintf("%s[%q]", field, k), "template: %v", err)
		}
	}
}

// compileThreshold turns a threshold condition into PromQL.
func (s *Service) compileThreshold(verr *validation.Error, field string, t *monitorv1.ThresholdCondition, interval time.Duration) string {
	before := len(verr.Fields)
	if !ingest.ValidMetricName(t.GetMetric()) {
		verr.Add(field+".metric", "metric name %q must match [a-zA-Z_:][a-zA-Z0-9_:]*", t.GetMetric())
	}
	sel := []string{}
	for i, m := range t.GetMatchers() {
		mf := fmt.Sprintf("%s.matchers[%d]", field, i)
		lm, err := toMatcher(m)
		if err != nil {
			verr.Add(mf, "%v", err)
			continue
		}
		sel = append(sel, lm.String())
	}
	if t.High == nil && t.Low == nil {
		verr.Add(field+".high", "at least one of high and low is required")
	}
	if t.High != nil && t.Low != nil && t.GetLow() > t.GetHigh() {
		verr.Add(field+".low", "must not be above high")
	}
	window := interval
	if t.GetWindow() != nil {
		if w := t.GetWindow().AsDuration(); w < interval {
			verr.Add(field+".window", "must be at least the group interval %s", interval)
		} else {
			window = w
		}
	}
	if len(verr.Fields) > before {
		return ""
	}
	selector := t.GetMetric() + "{" + strings.Join(sel, ",") + "}"
	rng := "[" + model.Duration(window).String() + "]"
	var value string
	switch t.GetAggregation() {
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_AVG:
		value = "avg_over_time(" + selector + rng + ")"
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_MIN:
		value = "min_over_time(" + selector + rng + ")"
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_MAX:
		value = "max_over_time(" + selector + rng + ")"
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_SUM:
		value = "sum_over_time(" + selector + rng + ")"
	case monitorv1.WindowAggregation_WINDOW_AGGREGATION_RATE:
		value = "rate(" + selector + rng + ")"
	default:
		value = "last_over_time(" + selector + rng + ")"
	}
	high := func() string { return value + " > " + formatFloat(t.GetHigh()) }
	low := func() string { return value + " < " + formatFloat(t.GetLow()) }
	switch {
	case t.High != nil && t.Low != nil:
		return "(" + high() + ") or (" + low() + ")"
	case t.High != nil:
		return high()
	default:
		return low()
	}
}

func formatFloat(f float64) string {
	switch {
	case f > 1e308:
		return "+Inf"
	case f < -1e308:
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// toMatcher converts an API matcher, checking the name and regular
// expression.
func toMatcher(m *monitorv1.LabelMatcher) (*labels.Matcher, error) {
	if m.GetName() != model.MetricNameLabel && !ingest.ValidLabelName(m.GetName()) {
		return nil, fmt.Errorf("label name %q must match [a-zA-Z_][a-zA-Z0-9_]*", m.GetName())
	}
	t := labels.MatchEqual
	switch m.GetType() {
	case monitorv1.MatcherType_MATCHER_TYPE_NOT_EQUAL:
		t = labels.MatchNotEqual
	case monitorv1.MatcherType_MATCHER_TYPE_REGEX:
		t = labels.MatchRegexp
	case monitorv1.MatcherType_MATCHER_TYPE_NOT_REGEX:
		t = labels.MatchNotRegexp
	}
	lm, err := labels.NewMatcher(t, m.GetName(), m.GetValue())
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", m.GetValue(), err)
	}
	return lm, nil
}

// templateDefs are the variables Prometheus alert templates use.
const templateDefs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"

// expand expands a label or annotation template for one alert.
func (s *Service) expand(ctx context.Context, name, text string, lbls map[string]string, smp promql.Sample, ts time.Time) string {
	if !strings.Contains(text, "{{") {
		return text
	}
	var ext *url.URL
	if s.cfg.ExternalURL != "" {
		ext, _ = url.Parse(s.cfg.ExternalURL)
	}
	data := template.AlertTemplateData(lbls, nil, s.cfg.ExternalURL, smp)
	tmpl := template.NewTemplateExpander(ctx, templateDefs+text, "__alert_"+name, data, model.Time(ts.UnixMilli()), s.queryFunc(), ext, nil)
	out, err := tmpl.Expand()
	if err != nil {
		return fmt.Sprintf("<error expanding template: %v>", err)
	}
	return out
}

func (s *Service) queryFunc() template.QueryFunc {
	return func(ctx context.Context, q string, t time.Time) (promql.Vector, error) {
		qry, err := s.db.Engine().NewInstantQuery(ctx, s.db.Queryable(), nil, q, t)
		if err != nil {
			return nil, err
		}
		defer qry.Close()
		res := qry.Exec(ctx)
		if res.Err != nil {
			return nil, res.Err
		}
		switch v := res.Value.(type) {
		case promql.Vector:
			return v, nil
		case promql.Scalar:
			return promql.Vector{{T: v.T, F: v.V, Metric: labels.EmptyLabels()}}, nil
		}
		return nil, fmt.Errorf("query %q did not return a vector or scalar", q)
	}
}

// importedRuleName names the i-th rule of an imported group, the same on
// every import of the same file so alerts keep their state.
func importedRuleName(group string, i int, alertOrRecord string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(alertOrRecord) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	base := strings.Trim(b.String(), "-")
	if len(base) > 45 {
		base = strings.Trim(base[:45], "-")
	}
	if base == "" {
		base = "rule"
	}
	sum := sha256.Sum256([]byte(group + "\x00" + strconv.Itoa(i)))
	return base + "-" + hex.EncodeToString(sum[:4])
}
