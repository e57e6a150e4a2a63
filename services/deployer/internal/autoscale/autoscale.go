// Package autoscale decides replica counts the way the Kubernetes
// HorizontalPodAutoscaler does, for every driver: per metric
// desired = ceil(current × value / target) (or ceil(total / target) for a
// per-replica average), the largest wins, changes within the tolerance are
// ignored, the result is clamped to [min, max], and stabilization windows
// keep the count from flapping: scaling down follows the highest
// recommendation of the scale-down window, scaling up the lowest of the
// scale-up window.
package autoscale

import (
	"fmt"
	"math"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
)

// Defaults of unset Autoscaling fields.
const (
	DefaultInterval               = 15 * time.Second
	DefaultScaleDownStabilization = 5 * time.Minute
	DefaultTolerance              = 0.1
)

// Measurement is one metric's value; OK is false when it could not be
// measured (that metric then does not vote, as in the HPA).
type Measurement struct {
	Value float64
	OK    bool
	// Why is a short note when OK is false.
	Why string
}

// Decision is one evaluation's outcome.
type Decision struct {
	Current, Desired int32
	// Recommended is the count the metrics asked for before stabilization.
	Recommended int32
	Message     string
}

type recommendation struct {
	at time.Time
	n  int32
}

// Scaler keeps the recommendation history one application environment
// needs for stabilization. It is not safe for concurrent use.
type Scaler struct {
	history []recommendation
}

// Decide evaluates the measurements (in the order of a.Metrics) at now for
// a current replica count.
func (s *Scaler) Decide(a *deployerv1.Autoscaling, current int32, ms []Measurement, now time.Time) Decision {
	d := Decision{Current: current}
	tol := a.GetTolerance()
	if tol <= 0 {
		tol = DefaultTolerance
	}
	rec := int32(-1)
	var notes []string
	for i, m := range a.GetMetrics() {
		if i >= len(ms) || !ms[i].OK {
			why := "not measured"
			if i < len(ms) && ms[i].Why != "" {
				why = ms[i].Why
			}
			notes = append(notes, fmt.Sprintf("metric %d: %s", i, why))
			continue
		}
		n := desiredFor(m, current, ms[i].Value, tol)
		rec = max(rec, n)
	}
	if rec < 0 {
		// Nothing measured: hold, like the HPA does when metrics are missing.
		d.Desired, d.Recommended = clamp(a, current), current
		d.Message = "holding: " + strings.Join(notes, "; ")
		return d
	}
	rec = clamp(a, rec)
	d.Recommended = rec
	s.history = append(s.history, recommendation{at: now, n: rec})
	down := DefaultScaleDownStabilization
	if w := a.GetScaleDownStabilization(); w != nil {
		down = w.AsDuration()
	}
	up := a.GetScaleUpStabilization().AsDuration()
	keep := max(down, up)
	for len(s.history) > 0 && now.Sub(s.history[0].at) > keep {
		s.history = s.history[1:]
	}
	desired := rec
	switch {
	case rec < current:
		// Never lower than any recommendation in the scale-down window.
		for _, h := range s.history {
			if now.Sub(h.at) <= down {
				desired = max(desired, h.n)
			}
		}
		desired = min(desired, current)
		if desired > rec {
			d.Message = fmt.Sprintf("scale down to %d held at %d by the %s scale-down stabilization window", rec, desired, down)
		}
	case rec > current:
		for _, h := range s.history {
			if now.Sub(h.at) <= up {
				desired = min(desired, h.n)
			}
		}
		desired = max(desired, current)
		if desired < rec {
			d.Message = fmt.Sprintf("scale up to %d held at %d by the %s scale-up stabilization window", rec, desired, up)
		}
	}
	d.Desired = clamp(a, desired)
	if d.Message == "" {
		switch {
		case d.Desired > current:
			d.Message = fmt.Sprintf("scaling up from %d to %d", current, d.Desired)
		case d.Desired < current:
			d.Message = fmt.Sprintf("scaling down from %d to %d", current, d.Desired)
		default:
			d.Message = fmt.Sprintf("%d replicas meet the targets", current)
		}
	}
	if len(notes) > 0 {
		d.Message += " (" + strings.Join(notes, "; ") + ")"
	}
	return d
}

// desiredFor is one metric's recommendation.
func desiredFor(m *deployerv1.ScalingMetric, current int32, value, tol float64) int32 {
	target := m.GetTarget()
	if target <= 0 || math.IsNaN(value) || math.IsInf(value, 0) {
		return current
	}
	cur := float64(max(current, 1))
	ratio := value / target
	if averaged(m) {
		ratio = value / cur / target
	}
	if math.Abs(ratio-1) <= tol {
		return current
	}
	n := math.Ceil(cur * ratio)
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n)
}

// averaged reports whether a metric is divided by the replica count: the
// default for request rates, not for latency or queries.
func averaged(m *deployerv1.ScalingMetric) bool {
	switch m.GetTargetType() {
	case deployerv1.ScalingTargetType_SCALING_TARGET_TYPE_AVERAGE_VALUE:
		return true
	case deployerv1.ScalingTargetType_SCALING_TARGET_TYPE_VALUE:
		return false
	}
	return m.GetRouter().GetKind() == deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE
}

func clamp(a *deployerv1.Autoscaling, n int32) int32 {
	lo, hi := max(a.GetMinReplicas(), 1), a.GetMaxReplicas()
	if hi < lo {
		hi = lo
	}
	return min(max(n, lo), hi)
}

// Interval is how often an autoscaler evaluates.
func Interval(a *deployerv1.Autoscaling) time.Duration {
	if d := a.GetInterval().AsDuration(); d > 0 {
		return d
	}
	return DefaultInterval
}
