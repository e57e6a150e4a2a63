package deployer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/autoscale"
	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// idleAutoscaleCheck is how often an environment without autoscaling looks
// whether it got some.
const idleAutoscaleCheck = 5 * time.Second

// autoscaleLoop runs the autoscaler of one application environment for as
// long as its router runs: every interval it measures the spec's metrics
// on the serving revision, decides with the HPA's rules and scales, unless
// a rollout is in progress (a rollout owns the replica count while it runs).
func (s *Service) autoscaleLoop(ctx context.Context, app, env string, e *envRuntime) {
	var sc autoscale.Scaler
	var base router.Snapshot
	var baseRev int64
	wait := idleAutoscaleCheck
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		a, cur, current, err := s.autoscaling(ctx, app, env)
		if err != nil || a == nil {
			wait, sc, baseRev = idleAutoscaleCheck, autoscale.Scaler{}, 0
			continue
		}
		wait = autoscale.Interval(a)
		snap, _ := e.router.Stats(cur)
		if baseRev != cur {
			// First look at this revision: the next tick has a window.
			base, baseRev = snap, cur
			continue
		}
		window := snap.Sub(base)
		elapsed := snap.At.Sub(base.At)
		base = snap
		ms := make([]autoscale.Measurement, len(a.GetMetrics()))
		for i, m := range a.GetMetrics() {
			ms[i] = s.measureScaling(ctx, m, window, elapsed, app, env, cur)
		}
		d := sc.Decide(a, current, ms, time.Now())
		st := &deployerv1.AutoscalingStatus{CurrentReplicas: current, DesiredReplicas: d.Desired, Message: d.Message}
		for _, m := range ms {
			st.CurrentValues = append(st.CurrentValues, m.Value)
		}
		if d.Desired != current {
			st.LastScaleTime = timestamppb.Now()
			s.log.Info("autoscaling", "app", app, "env", env, "from", current, "to", d.Desired, "why", d.Message)
			if _, err := s.scale(ctx, app, env, d.Desired, st); err != nil {
				if ctx.Err() == nil {
					s.log.Warn("autoscale", "app", app, "env", env, "to", d.Desired, "err", err)
				}
			}
			continue
		}
		s.recordAutoscaling(ctx, app, env, st)
	}
}

// autoscaling reads what the autoscaler needs: the serving revision's
// effective autoscaling (nil when off, or while a rollout runs), the
// revision and the current replica count.
func (s *Service) autoscaling(ctx context.Context, app, envName string) (*deployerv1.Autoscaling, int64, int32, error) {
	v, err := s.store.Application(ctx, app)
	if err != nil {
		return nil, 0, 0, err
	}
	env, err := environment(v.Value, envName)
	if err != nil {
		return nil, 0, 0, err
	}
	st := env.GetStatus()
	if st.GetCurrentRevision() == 0 || st.GetActiveRolloutId() != "" {
		return nil, 0, 0, nil
	}
	side, err := s.revisionSide(ctx, v.Value, env, st.GetCurrentRevision(), nil)
	if err != nil {
		return nil, 0, 0, err
	}
	current := st.GetDesiredReplicas()
	if current == 0 {
		current = side.Spec.GetReplicas()
	}
	return side.Spec.GetAutoscaling(), side.Number, current, nil
}

// measureScaling measures one scaling metric over the last interval.
func (s *Service) measureScaling(ctx context.Context, m *deployerv1.ScalingMetric, w router.Snapshot, elapsed time.Duration, app, env string, rev int64) autoscale.Measurement {
	if q := m.GetMonitor(); q != nil {
		if s.monitor == nil {
			if q.GetFallback() == nil {
				return autoscale.Measurement{Why: "no monitor configured"}
			}
			return routerMeasure(q.GetFallback(), w, elapsed)
		}
		query := strings.NewReplacer("{{application}}", app, "{{environment}}", env, "{{revision}}", strconv.FormatInt(rev, 10)).Replace(q.GetQuery())
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, ok, err := monitorQuerier{s.monitor}.QueryValue(qctx, query)
		switch {
		case err != nil && q.GetFallback() != nil:
			return routerMeasure(q.GetFallback(), w, elapsed)
		case err != nil:
			return autoscale.Measurement{Why: fmt.Sprintf("monitor query failed: %v", err)}
		case !ok:
			return autoscale.Measurement{Why: "monitor query returned no value"}
		}
		return autoscale.Measurement{Value: v, OK: true}
	}
	return routerMeasure(m.GetRouter(), w, elapsed)
}

func routerMeasure(rm *deployerv1.RouterMetric, w router.Snapshot, elapsed time.Duration) autoscale.Measurement {
	switch rm.GetKind() {
	case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE:
		if elapsed <= 0 {
			return autoscale.Measurement{Why: "empty window"}
		}
		return autoscale.Measurement{Value: float64(w.Requests) / elapsed.Seconds(), OK: true}
	case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_LATENCY, deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO:
		minReq := rm.GetMinRequests()
		if minReq <= 0 {
			minReq = 20
		}
		if int64(w.Requests) < minReq {
			return autoscale.Measurement{Why: fmt.Sprintf("only %d requests in the window", w.Requests)}
		}
		if rm.GetKind() == deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO {
			return autoscale.Measurement{Value: w.ErrorRate(), OK: true}
		}
		p := rm.GetPercentile()
		if p <= 0 || p > 100 {
			p = 99
		}
		return autoscale.Measurement{Value: w.Quantile(p / 100).Seconds(), OK: true}
	}
	return autoscale.Measurement{Why: "no router metric kind"}
}

// recordAutoscaling stores the autoscaler's last decision on the
// environment's status.
func (s *Service) recordAutoscaling(ctx context.Context, app, envName string, st *deployerv1.AutoscalingStatus) {
	for attempt := 0; attempt < 3; attempt++ {
		v, err := s.store.Application(ctx, app)
		if err != nil {
			return
		}
		env, err := environment(v.Value, envName)
		if err != nil {
			return
		}
		if env.Status == nil {
			env.Status = &deployerv1.EnvironmentStatus{}
		}
		prev := env.Status.GetAutoscaling()
		if prev != nil {
			st.LastScaleTime = prev.GetLastScaleTime()
			// Unchanged decisions are not written again every interval: the
			// application record would churn (and conflict with deploys).
			if prev.GetCurrentReplicas() == st.GetCurrentReplicas() && prev.GetDesiredReplicas() == st.GetDesiredReplicas() && prev.GetMessage() == st.GetMessage() {
				return
			}
		}
		env.Status.Autoscaling = st
		if _, err := s.store.UpdateApplication(ctx, v.Value, v.Revision); !errors.Is(err, store.ErrConflict) {
			return
		}
	}
}
