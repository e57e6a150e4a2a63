package monitor_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPushMetricsStream(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	st, err := c.PushMetricsStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for i := range 3 {
		if err := st.Send(&monitorv1.PushMetricsStreamRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "streamed"},
			Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 2}, TimestampsMs: []int64{now + int64(i), now + int64(i) + 1}, Values: []float64{1, 2}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	// The third batch's first sample has the second batch's last timestamp
	// with another value: refused, the rest stored.
	if resp.GetBatches() != 3 || resp.GetAccepted()+resp.GetRejected() != 6 || resp.GetAccepted() < 4 {
		t.Fatalf("stream response %v", resp)
	}
	// An invalid batch ends the stream with InvalidArgument.
	st, err = c.PushMetricsStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&monitorv1.PushMetricsStreamRequest{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "bad name"},
		Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 2}, TimestampsMs: []int64{now}, Values: []float64{1}}}}})
	_, err = st.CloseAndRecv()
	wantField(t, err, "batch(message 0).series[0].label_refs[1]")
}

// TestSilenceMutesWebhookNotNATS: a silenced alert changes state and is
// announced on NATS, but no webhook is called and the rollback policy does
// not count it unless asked to.
func TestSilenceAndAcknowledge(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
	}))
	defer srv.Close()
	if _, err := c.CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: &monitorv1.Receiver{Name: "hook", Webhook: &monitorv1.WebhookConfig{Url: srv.URL, BearerToken: "tok"}}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetReceiver(ctx, &monitorv1.GetReceiverRequest{Name: "hook"})
	if err != nil || got.GetReceiver().GetWebhook().GetBearerToken() != "" {
		t.Fatalf("receiver %v %v: secrets must not be returned", got, err)
	}
	tr, err := c.TestReceiver(ctx, &monitorv1.TestReceiverRequest{Name: "hook"})
	if err != nil || !tr.GetDelivered() || tr.GetHttpStatus() != 200 || calls.Load() != 1 {
		t.Fatalf("test receiver %v %v (calls %d)", tr, err, calls.Load())
	}
	sl, err := c.CreateSilence(ctx, &monitorv1.CreateSilenceRequest{Silence: &monitorv1.Silence{
		Matchers: []*monitorv1.LabelMatcher{{Name: "app", Value: "quiet"}}, EndTime: timestamppb.New(time.Now().Add(time.Hour)), Comment: "maintenance"}})
	if err != nil {
		t.Fatal(err)
	}
	if sl.GetSilence().GetState() != monitorv1.SilenceState_SILENCE_STATE_ACTIVE {
		t.Fatalf("silence state %s", sl.GetSilence().GetState())
	}
	_, err = c.CreateSilence(ctx, &monitorv1.CreateSilenceRequest{Silence: &monitorv1.Silence{Matchers: []*monitorv1.LabelMatcher{{Name: "app", Value: ""}}, Comment: "x"}})
	wantField(t, err, "silence.end_time")

	if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "errors", Labels: map[string]string{"app": "quiet"}, Value: 5}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{Name: "g", Interval: dur(time.Second),
		Rules: []*monitorv1.Rule{{Name: "errors-present", Condition: &monitorv1.Rule_Expr{Expr: "errors > 0"}}}}}); err != nil {
		t.Fatal(err)
	}
	var alert *monitorv1.Alert
	eventually(t, 5*time.Second, func() error {
		r, err := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{IncludeSilenced: true})
		if err != nil {
			return err
		}
		if len(r.GetAlerts()) != 1 || r.GetAlerts()[0].GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
			return errNotYet
		}
		alert = r.GetAlerts()[0]
		return nil
	})
	if len(alert.GetSilencedBy()) != 1 || alert.GetSilencedBy()[0] != sl.GetSilence().GetId() {
		t.Fatalf("silenced_by %v", alert.GetSilencedBy())
	}
	if r, _ := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{}); len(r.GetAlerts()) != 0 {
		t.Fatal("silenced alert listed without include_silenced")
	}
	if f, _ := c.IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "quiet"}); f.GetFiring() {
		t.Fatal("silenced alert counted by IsAlertFiring")
	}
	if f, _ := c.IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "quiet", IncludeSilenced: true}); !f.GetFiring() {
		t.Fatal("silenced alert not counted with include_silenced")
	}
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("webhook called %d times for a silenced alert, want only the test call", n)
	}
	ack, err := c.AcknowledgeAlert(ctx, &monitorv1.AcknowledgeAlertRequest{Id: alert.GetId(), Comment: "looking"})
	if err != nil || ack.GetAlert().GetAcknowledgement().GetComment() != "looking" || ack.GetAlert().GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
		t.Fatalf("ack %v %v", ack, err)
	}
	if _, err := c.DeleteSilence(ctx, &monitorv1.DeleteSilenceRequest{Id: sl.GetSilence().GetId()}); err != nil {
		t.Fatal(err)
	}
	if f, _ := c.IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "quiet"}); !f.GetFiring() {
		t.Fatal("alert not counted once its silence ended")
	}
	// Deleting the rule resolves its alert.
	rules, err := c.ListRules(ctx, &monitorv1.ListRulesRequest{States: []monitorv1.RuleState{monitorv1.RuleState_RULE_STATE_FIRING}})
	if err != nil || len(rules.GetRules()) != 1 || rules.GetRules()[0].GetStatus().GetActiveAlerts() != 1 {
		t.Fatalf("firing rules %v %v", rules, err)
	}
	if _, err := c.DeleteRule(ctx, &monitorv1.DeleteRuleRequest{Name: "errors-present"}); err != nil {
		t.Fatal(err)
	}
	a, err := c.GetAlert(ctx, &monitorv1.GetAlertRequest{Id: alert.GetId()})
	if err != nil || a.GetAlert().GetState() != monitorv1.AlertState_ALERT_STATE_RESOLVED {
		t.Fatalf("alert after rule deletion %v %v", a, err)
	}
	_, err = c.GetRule(ctx, &monitorv1.GetRuleRequest{Name: "errors-present"})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound {
		t.Fatalf("deleted rule: %v", err)
	}
}

// TestRepeatIntervalAndHostMetrics: a firing alert is sent again every
// repeat_interval until acknowledged; host CPU and memory are recorded.
func TestRepeatIntervalAndHostMetrics(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{HostMetricsInterval: 100 * time.Millisecond}).client
	ctx := t.Context()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
	}))
	defer srv.Close()
	if _, err := c.CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: &monitorv1.Receiver{Name: "pager",
		Webhook: &monitorv1.WebhookConfig{Url: srv.URL}, RepeatInterval: dur(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "queue_depth", Value: 500}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "deep", Condition: &monitorv1.Rule_Expr{Expr: "queue_depth > 100"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 6*time.Second, func() error {
		if calls.Load() < 3 {
			return errNotYet
		}
		return nil
	})
	r, err := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
	if err != nil || len(r.GetAlerts()) != 1 {
		t.Fatalf("alerts %v %v", r, err)
	}
	if _, err := c.AcknowledgeAlert(ctx, &monitorv1.AcknowledgeAlertRequest{Id: r.GetAlerts()[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	n := calls.Load()
	time.Sleep(2200 * time.Millisecond)
	if calls.Load() != n {
		t.Fatalf("%d notifications after acknowledgement", calls.Load()-n)
	}
	for _, m := range []string{"opsuite_host_cpu_usage_ratio", "opsuite_host_memory_usage_ratio"} {
		q, err := c.Query(ctx, &monitorv1.QueryRequest{Query: m})
		if err != nil {
			t.Fatal(err)
		}
		if s := q.GetResult().GetSeries(); len(s) != 1 || s[0].GetPoints()[0].GetValue() < 0 || s[0].GetPoints()[0].GetValue() > 1 {
			t.Fatalf("%s = %v, want one ratio in [0,1]", m, s)
		}
	}
}

// TestKeepFiringFor: an alert whose condition stops holding keeps firing
// for keep_firing_for (the timer start is kept in keep_firing_since), then
// resolves; a condition back within that time clears the timer.
func TestKeepFiringFor(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	push := func(v float64) {
		t.Helper()
		if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "flappy", Value: v}}}); err != nil {
			t.Fatal(err)
		}
	}
	push(1)
	if _, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "flap", KeepFiringFor: dur(1500 * time.Millisecond),
		Condition: &monitorv1.Rule_Expr{Expr: "flappy > 0"}}}); err != nil {
		t.Fatal(err)
	}
	var id string
	eventually(t, 5*time.Second, func() error {
		r, err := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{States: []monitorv1.AlertState{monitorv1.AlertState_ALERT_STATE_FIRING}})
		if err != nil || len(r.GetAlerts()) != 1 {
			return errNotYet
		}
		id = r.GetAlerts()[0].GetId()
		return nil
	})
	get := func() *monitorv1.Alert {
		t.Helper()
		a, err := c.GetAlert(ctx, &monitorv1.GetAlertRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return a.GetAlert()
	}
	time.Sleep(150 * time.Millisecond)
	push(0)
	eventually(t, 3*time.Second, func() error {
		if get().GetKeepFiringSince() == nil {
			return errNotYet
		}
		return nil
	})
	if get().GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
		t.Fatal("alert stopped firing inside keep_firing_for")
	}
	time.Sleep(150 * time.Millisecond)
	push(1) // back before keep_firing_for ends: the timer is cleared
	eventually(t, 3*time.Second, func() error {
		if get().GetKeepFiringSince() != nil {
			return errNotYet
		}
		return nil
	})
	time.Sleep(150 * time.Millisecond)
	push(0)
	start := time.Now()
	eventually(t, 5*time.Second, func() error {
		if get().GetState() != monitorv1.AlertState_ALERT_STATE_RESOLVED {
			return errNotYet
		}
		return nil
	})
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Fatalf("resolved %s after the condition ended, want keep_firing_for 1.5s", d)
	}
}
