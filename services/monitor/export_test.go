package monitor

import (
	"context"
	"time"

	"github.com/prometheus/prometheus/promql"
)

// EvalRuleExpr evaluates a rule expression as rule evaluation does, for
// benchmarks.
func (s *Service) EvalRuleExpr(ctx context.Context, expr string, ts time.Time) (promql.Vector, error) {
	return s.evalExpr(ctx, expr, ts)
}
