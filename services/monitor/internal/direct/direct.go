// Package direct evaluates alert expressions of one simple shape without
// the PromQL engine, reading the store with a tsstore.Reader: a series
// selector, or last_over_time, min_over_time or max_over_time of one,
// compared with numbers, the comparisons joined by `or`. Threshold rules
// compile to that shape, and so do most hand-written alerts
// (`node_load1 > 4`). The result is the vector the engine gives for the same
// expression at the same time: same series, labels, values and timestamp.
package direct

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/schema"

	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
)

// Plan is a compiled expression: one reduction of one selector's series,
// kept when any of its comparisons holds.
type Plan struct {
	red      tsstore.Reduction
	window   time.Duration
	matchers []*labels.Matcher
	// dropName: the function drops the metric name (min/max_over_time do,
	// last_over_time and a bare selector do not).
	dropName bool
	tests    []comparison
}

// comparison is `value op number`.
type comparison struct {
	op parser.ItemType
	n  float64
}

// Compile returns the plan of e, or nil when e has another shape (the
// engine evaluates it then). lookback is the engine's lookback delta, the
// window of a bare selector.
func Compile(e parser.Expr, lookback time.Duration) *Plan {
	p := compile(e, lookback)
	if p == nil || len(p.tests) == 0 {
		return nil
	}
	return p
}

func compile(e parser.Expr, lookback time.Duration) *Plan {
	switch e := e.(type) {
	case *parser.ParenExpr:
		return compile(e.Expr, lookback)
	case *parser.BinaryExpr:
		if e.Op == parser.LOR {
			return compileOr(e, lookback)
		}
		if !e.Op.IsComparisonOperator() || e.ReturnBool {
			return nil
		}
		op := e.Op
		src, lit := e.LHS, e.RHS
		n, ok := number(lit)
		if !ok {
			// `number op series` keeps the series' value: the same as
			// `series op' number` with the operator turned around.
			src, lit = e.RHS, e.LHS
			if n, ok = number(lit); !ok {
				return nil
			}
			op = flip(op)
		}
		p := source(src, lookback)
		if p == nil {
			return nil
		}
		p.tests = []comparison{{op: op, n: n}}
		return p
	}
	return nil
}

// compileOr joins two plans of the same source. With the metric name fixed
// by the selector, `or` keeps every series of the left side and those of
// the right side the left lacks; both sides read the same series with the
// same value, so that is a series passing either side's comparisons.
func compileOr(e *parser.BinaryExpr, lookback time.Duration) *Plan {
	if m := e.VectorMatching; m != nil && (m.On || len(m.MatchingLabels) > 0 || len(m.Include) > 0 || m.FillValues.LHS != nil || m.FillValues.RHS != nil) {
		return nil
	}
	l, r := compile(e.LHS, lookback), compile(e.RHS, lookback)
	if l == nil || r == nil || !l.sameSource(r) {
		return nil
	}
	l.tests = append(l.tests, r.tests...)
	return l
}

func (p *Plan) sameSource(o *Plan) bool {
	return p.red == o.red && p.window == o.window && p.dropName == o.dropName &&
		slices.EqualFunc(p.matchers, o.matchers, func(a, b *labels.Matcher) bool { return a.String() == b.String() })
}

// source compiles the value side: a selector or a supported function of a
// range of one.
func source(e parser.Expr, lookback time.Duration) *Plan {
	switch e := e.(type) {
	case *parser.ParenExpr:
		return source(e.Expr, lookback)
	case *parser.VectorSelector:
		if !plainSelector(e) {
			return nil
		}
		return &Plan{red: tsstore.Latest, window: lookback, matchers: e.LabelMatchers}
	case *parser.Call:
		var red tsstore.Reduction
		switch e.Func.Name {
		case "last_over_time":
			red = tsstore.LastOverTime
		case "min_over_time":
			red = tsstore.MinOverTime
		case "max_over_time":
			red = tsstore.MaxOverTime
		default:
			return nil
		}
		if len(e.Args) != 1 {
			return nil
		}
		ms, ok := e.Args[0].(*parser.MatrixSelector)
		if !ok || ms.RangeExpr != nil || ms.Range <= 0 {
			return nil
		}
		vs, ok := ms.VectorSelector.(*parser.VectorSelector)
		if !ok || !plainSelector(vs) {
			return nil
		}
		return &Plan{red: red, window: ms.Range, matchers: vs.LabelMatchers, dropName: red != tsstore.LastOverTime}
	}
	return nil
}

// plainSelector: no offset, @, anchoring or smoothing, and the metric name
// fixed (so dropping it cannot make two series one, and `or` matches a
// series only with itself).
func plainSelector(vs *parser.VectorSelector) bool {
	if vs.Offset != 0 || vs.OriginalOffset != 0 || vs.OriginalOffsetExpr != nil || vs.Timestamp != nil ||
		vs.StartOrEnd != 0 || vs.Anchored || vs.Smoothed || vs.BypassEmptyMatcherCheck {
		return false
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return true
		}
	}
	return false
}

// number evaluates a number literal, possibly in parentheses or signed.
func number(e parser.Expr) (float64, bool) {
	switch e := e.(type) {
	case *parser.NumberLiteral:
		return e.Val, true
	case *parser.ParenExpr:
		return number(e.Expr)
	case *parser.UnaryExpr:
		n, ok := number(e.Expr)
		if !ok {
			return 0, false
		}
		if e.Op == parser.SUB {
			return -n, true
		}
		return n, e.Op == parser.ADD
	}
	return 0, false
}

func flip(op parser.ItemType) parser.ItemType {
	switch op {
	case parser.GTR:
		return parser.LSS
	case parser.LSS:
		return parser.GTR
	case parser.GTE:
		return parser.LTE
	case parser.LTE:
		return parser.GTE
	}
	return op // == and != are symmetric
}

// holds compares as the engine does, by IEEE 754: NaN passes only `!=`.
func (c comparison) holds(v float64) bool {
	switch c.op {
	case parser.EQLC:
		return v == c.n
	case parser.NEQ:
		return v != c.n
	case parser.GTR:
		return v > c.n
	case parser.LSS:
		return v < c.n
	case parser.GTE:
		return v >= c.n
	case parser.LTE:
		return v <= c.n
	}
	return false
}

// Reduction and Window say what the plan reads, for logs and tests.
func (p *Plan) Reduction() tsstore.Reduction { return p.red }

// Window is the plan's range (the lookback for a bare selector).
func (p *Plan) Window() time.Duration { return p.window }

// Eval evaluates the plan at ts into vec[:0], reading with r. The samples'
// labels are the store's own (or, for min/max_over_time, copies without
// the metric name); vec's array is reused.
func (p *Plan) Eval(ctx context.Context, r *tsstore.Reader, ts time.Time, vec promql.Vector) (promql.Vector, error) {
	vec = vec[:0]
	t := ts.UnixNano() / int64(time.Millisecond)
	vals, err := r.Reduce(ctx, p.red, t-p.window.Milliseconds(), t, p.matchers...)
	if err != nil {
		return vec, err
	}
	for _, v := range vals {
		if !p.passes(v.F) {
			continue
		}
		m := v.Labels
		if p.dropName {
			m = m.DropReserved(schema.IsMetadataLabel)
		}
		vec = append(vec, promql.Sample{T: t, F: v.F, Metric: m})
	}
	return vec, nil
}

func (p *Plan) passes(v float64) bool {
	for _, c := range p.tests {
		if c.holds(v) {
			return true
		}
	}
	return false
}
