package autoscale_test

import (
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/autoscale"
	"google.golang.org/protobuf/types/known/durationpb"
)

var (
	rate = &deployerv1.ScalingMetric{Source: &deployerv1.ScalingMetric_Router{Router: &deployerv1.RouterMetric{
		Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE}}, Target: 50}
	latency = &deployerv1.ScalingMetric{Source: &deployerv1.ScalingMetric_Router{Router: &deployerv1.RouterMetric{
		Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_LATENCY}}, Target: 0.2}
)

func ok(v float64) autoscale.Measurement { return autoscale.Measurement{Value: v, OK: true} }

func TestOneEvaluation(t *testing.T) {
	cases := []struct {
		name    string
		min     int32
		max     int32
		metrics []*deployerv1.ScalingMetric
		current int32
		values  []autoscale.Measurement
		want    int32
		msg     string
	}{
		{"rate per replica", 1, 10, []*deployerv1.ScalingMetric{rate}, 2, []autoscale.Measurement{ok(300)}, 6, "scaling up from 2 to 6"},
		{"clamped to max", 1, 5, []*deployerv1.ScalingMetric{rate}, 2, []autoscale.Measurement{ok(300)}, 5, ""},
		{"within tolerance", 1, 10, []*deployerv1.ScalingMetric{rate}, 4, []autoscale.Measurement{ok(210)}, 4, "meet the targets"},
		{"latency is a value", 1, 10, []*deployerv1.ScalingMetric{latency}, 3, []autoscale.Measurement{ok(0.4)}, 6, ""},
		{"largest metric wins", 1, 10, []*deployerv1.ScalingMetric{rate, latency}, 3, []autoscale.Measurement{ok(100), ok(0.4)}, 6, ""},
		{"unmeasured metric does not vote", 1, 10, []*deployerv1.ScalingMetric{rate, latency}, 3, []autoscale.Measurement{ok(400), {Why: "monitor down"}}, 8, "monitor down"},
		{"nothing measured holds", 1, 10, []*deployerv1.ScalingMetric{rate}, 3, []autoscale.Measurement{{Why: "no traffic data"}}, 3, "holding"},
		{"raised to min", 2, 10, []*deployerv1.ScalingMetric{rate}, 1, []autoscale.Measurement{ok(0)}, 2, ""},
		{"zero traffic scales up from zero replicas", 1, 10, []*deployerv1.ScalingMetric{rate}, 0, []autoscale.Measurement{ok(120)}, 3, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &deployerv1.Autoscaling{MinReplicas: tc.min, MaxReplicas: tc.max, Metrics: tc.metrics}
			var s autoscale.Scaler
			d := s.Decide(a, tc.current, tc.values, time.Now())
			if d.Desired != tc.want || !strings.Contains(d.Message, tc.msg) {
				t.Fatalf("Decide = %d (%q), want %d containing %q", d.Desired, d.Message, tc.want, tc.msg)
			}
		})
	}
}

func TestScaleDownIsStabilized(t *testing.T) {
	a := &deployerv1.Autoscaling{MinReplicas: 1, MaxReplicas: 10, Metrics: []*deployerv1.ScalingMetric{rate}}
	var s autoscale.Scaler
	t0 := time.Now()
	if d := s.Decide(a, 2, []autoscale.Measurement{ok(300)}, t0); d.Desired != 6 {
		t.Fatalf("spike: %d", d.Desired)
	}
	// Traffic drops a minute later: held at 6 by the 5m window.
	d := s.Decide(a, 6, []autoscale.Measurement{ok(100)}, t0.Add(time.Minute))
	if d.Desired != 6 || !strings.Contains(d.Message, "scale-down stabilization") {
		t.Fatalf("a minute after: %d (%q), want held at 6", d.Desired, d.Message)
	}
	// Once the spike's recommendation is out of the window: down to 2.
	if d := s.Decide(a, 6, []autoscale.Measurement{ok(100)}, t0.Add(6*time.Minute)); d.Desired != 2 {
		t.Fatalf("after the window: %d, want 2", d.Desired)
	}
}

func TestScaleUpStabilization(t *testing.T) {
	a := &deployerv1.Autoscaling{MinReplicas: 1, MaxReplicas: 10, Metrics: []*deployerv1.ScalingMetric{rate},
		ScaleUpStabilization: durationpb.New(time.Minute), ScaleDownStabilization: durationpb.New(0)}
	var s autoscale.Scaler
	t0 := time.Now()
	s.Decide(a, 2, []autoscale.Measurement{ok(100)}, t0)
	d := s.Decide(a, 2, []autoscale.Measurement{ok(400)}, t0.Add(10*time.Second))
	if d.Desired != 2 || !strings.Contains(d.Message, "scale-up stabilization") {
		t.Fatalf("a blip: %d (%q), want held at 2", d.Desired, d.Message)
	}
	if d := s.Decide(a, 2, []autoscale.Measurement{ok(400)}, t0.Add(80*time.Second)); d.Desired != 8 {
		t.Fatalf("sustained: %d, want 8", d.Desired)
	}
	// No scale-down window: down at once.
	if d := s.Decide(a, 8, []autoscale.Measurement{ok(50)}, t0.Add(90*time.Second)); d.Desired != 1 {
		t.Fatalf("drop without a window: %d, want 1", d.Desired)
	}
}
