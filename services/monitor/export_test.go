package monitor

import (
	"context"
	"fmt"
	"time"

	"github.com/opsuite/opsuite/services/monitor/internal/direct"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/prometheus/promql"
)

// EvalRuleExpr evaluates a rule expression with the PromQL engine, as rule
// evaluation did before direct plans, for benchmarks.
func (s *Service) EvalRuleExpr(ctx context.Context, expr string, ts time.Time) (promql.Vector, error) {
	return s.evalExpr(ctx, expr, ts)
}

// RuleEval evaluates one alert expression as a group's loop does (a direct
// plan when the expression has one, buffers reused), for benchmarks.
type RuleEval struct {
	s   *Service
	r   *compiledRule
	buf *evalBuffers
}

// NewRuleEval compiles expr.
func (s *Service) NewRuleEval(expr string) (*RuleEval, error) {
	e, err := s.db.Parser().ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	return &RuleEval{s: s, r: &compiledRule{expr: expr, plan: direct.Compile(e, tsstore.LookbackDelta)}, buf: s.newEvalBuffers()}, nil
}

// Direct says the expression is evaluated without the engine.
func (e *RuleEval) Direct() bool { return e.r.plan != nil }

// Eval evaluates at ts; the vector is valid until the next call.
func (e *RuleEval) Eval(ctx context.Context, ts time.Time) (promql.Vector, error) {
	return e.s.evalRule(ctx, e.r, ts, e.buf)
}

// GroupEval evaluates an installed group at a chosen time, alert state
// machine included, with buffers of its own, for benchmarks.
type GroupEval struct {
	s   *Service
	g   *group
	buf *evalBuffers
}

// NewGroupEval finds the installed group name.
func (s *Service) NewGroupEval(name string) (*GroupEval, error) {
	s.mu.Lock()
	g := s.groups[name]
	s.mu.Unlock()
	if g == nil {
		return nil, fmt.Errorf("no group %q", name)
	}
	return &GroupEval{s: s, g: g, buf: s.newEvalBuffers()}, nil
}

// Direct says whether each rule of the group has a direct plan.
func (e *GroupEval) Direct() []bool {
	out := make([]bool, len(e.g.rules))
	for i, r := range e.g.rules {
		out[i] = r.plan != nil
	}
	return out
}

// Eval evaluates every rule of the group at now.
func (e *GroupEval) Eval(ctx context.Context, now time.Time) {
	e.s.evalGroup(ctx, e.g, now, false, e.buf)
}

// AppendSeries writes series to the service's store without waking rule
// groups, for benchmarks.
func (s *Service) AppendSeries(ctx context.Context, series []ingest.Series) error {
	_, err := ingest.Append(s.db.Appender(ctx), series, nil)
	return err
}

// Evaluates reports whether this replica evaluates the rule group named
// name now.
func (s *Service) Evaluates(name string) bool { return s.evaluates(name) }
