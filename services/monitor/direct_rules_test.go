package monitor_test

import (
	"fmt"
	"testing"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// TestDirectRuleAlerts runs threshold and PromQL alerts that are evaluated
// without the engine through a monitor: the alerts carry the series'
// labels (without the metric name) and the rule's; a templated annotation
// follows the value; changing a rule's annotations (not its condition)
// changes them on the alert, which stays the same alert.
func TestDirectRuleAlerts(t *testing.T) {
	e := newEnv(t)
	in := e.start(t, monitor.Config{})
	c, ctx := in.client, t.Context()
	for _, expr := range []string{`room_temp > 30`, `max_over_time(room_temp{room=~"lab|office"}[5s]) > 30`} {
		re, err := in.svc.NewRuleEval(expr)
		if err != nil || !re.Direct() {
			t.Fatalf("%s: no direct plan (%v)", expr, err)
		}
	}
	p := startPusher(t, func() monitorv1.MonitorServiceClient { return c }, "room_temp", map[string]string{"room": "lab", "floor": "2"})
	p.value.Store(35)
	high := 30.0
	if _, err := c.CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
		Name: "rooms", Interval: dur(time.Second), Labels: map[string]string{"team": "facilities"},
		Rules: []*monitorv1.Rule{
			{Name: "hot-threshold", Labels: map[string]string{"severity": "warning"}, Annotations: map[string]string{"summary": "hot", "value": "{{ $value }}"},
				Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{Metric: "room_temp", High: &high, Window: dur(5 * time.Second),
					Aggregation: monitorv1.WindowAggregation_WINDOW_AGGREGATION_MAX,
					Matchers:    []*monitorv1.LabelMatcher{{Name: "room", Value: "lab|office", Type: monitorv1.MatcherType_MATCHER_TYPE_REGEX}}}}},
			{Name: "hot-promql", Alert: "RoomHot", Annotations: map[string]string{"summary": "room {{ $labels.room }} is hot"},
				Condition: &monitorv1.Rule_Expr{Expr: `room_temp > 30`}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	alerts := func() map[string]*monitorv1.Alert {
		t.Helper()
		r, err := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{States: []monitorv1.AlertState{monitorv1.AlertState_ALERT_STATE_FIRING}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*monitorv1.Alert{}
		for _, a := range r.GetAlerts() {
			out[a.GetRule()] = a
		}
		return out
	}
	var got map[string]*monitorv1.Alert
	eventually(t, 10*time.Second, func() error {
		if got = alerts(); len(got) != 2 {
			return fmt.Errorf("%d firing alerts: %w", len(got), errNotYet)
		}
		return nil
	})
	th, pq := got["hot-threshold"], got["hot-promql"]
	wantLabels := map[string]map[string]string{
		"hot-threshold": {"alertname": "hot-threshold", "room": "lab", "floor": "2", "team": "facilities", "severity": "warning"},
		"hot-promql":    {"alertname": "RoomHot", "room": "lab", "floor": "2", "team": "facilities"},
	}
	for rule, want := range wantLabels {
		if l := got[rule].GetLabels(); fmt.Sprint(l) != fmt.Sprint(want) {
			t.Errorf("%s labels %v, want %v", rule, l, want)
		}
	}
	if th.GetAnnotations()["value"] != "35" || th.GetAnnotations()["summary"] != "hot" || pq.GetAnnotations()["summary"] != "room lab is hot" {
		t.Fatalf("annotations %v / %v", th.GetAnnotations(), pq.GetAnnotations())
	}

	// A higher value: the templated annotation follows, the alert stays.
	p.value.Store(41)
	eventually(t, 10*time.Second, func() error {
		a := alerts()["hot-threshold"]
		if a.GetAnnotations()["value"] != "41" {
			return fmt.Errorf("value annotation %q: %w", a.GetAnnotations()["value"], errNotYet)
		}
		if a.GetId() != th.GetId() || a.GetValue() != 41 {
			return fmt.Errorf("alert %s value %v, want %s with 41", a.GetId(), a.GetValue(), th.GetId())
		}
		return nil
	})

	// New annotations, same condition: the same alert gets them.
	if _, err := c.UpdateRule(ctx, &monitorv1.UpdateRuleRequest{
		Rule:       &monitorv1.Rule{Name: "hot-promql", Annotations: map[string]string{"summary": "too warm", "runbook": "r/1"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		a := alerts()["hot-promql"]
		if a.GetAnnotations()["summary"] != "too warm" || a.GetAnnotations()["runbook"] != "r/1" || len(a.GetAnnotations()) != 2 {
			return fmt.Errorf("annotations %v: %w", a.GetAnnotations(), errNotYet)
		}
		if a.GetId() != pq.GetId() {
			return fmt.Errorf("alert %s, want %s kept", a.GetId(), pq.GetId())
		}
		return nil
	})

	// Below the threshold: both resolve.
	p.value.Store(20)
	eventually(t, 15*time.Second, func() error {
		if n := len(alerts()); n != 0 {
			return fmt.Errorf("%d firing: %w", n, errNotYet)
		}
		return nil
	})
}
