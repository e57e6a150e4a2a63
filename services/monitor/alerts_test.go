package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/monitor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pusher pushes the current value of one gauge every 100ms until stopped.
type pusher struct {
	value atomic.Int64
	stop  func()
}

func startPusher(t *testing.T, c func() monitorv1.MonitorServiceClient, name string, lbls map[string]string) *pusher {
	p := &pusher{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_, _ = c().PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: name, Labels: lbls, Value: float64(p.value.Load())}}})
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	p.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(p.stop)
	return p
}

// events records alert events seen on NATS.
type events struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func watchEvents(t *testing.T, nc *nats.Conn) *events {
	ev := &events{}
	sub, err := nc.Subscribe("opsuite.monitor.alert.>", func(m *nats.Msg) {
		ev.mu.Lock()
		ev.msgs = append(ev.msgs, m)
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ev
}

func (ev *events) count(subject string) int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	n := 0
	for _, m := range ev.msgs {
		if m.Subject == subject {
			n++
		}
	}
	return n
}

// streamCounts counts alert events stored in the events stream (after the
// broker's de-duplication).
func streamCounts(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), eventbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter("opsuite.monitor.alert.>"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

type hook struct {
	mu       sync.Mutex
	attempts int
	payloads []map[string]any
}

// TestAlertLifecycleSurvivesRestart is the Must-show flow: a threshold rule
// with for: 2s goes pending, fires (NATS event and webhook, retried), a
// restarted monitor keeps it firing with the same start time and announces
// nothing again, then it resolves. The alert names the preceding rollout.
func TestAlertLifecycleSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	cfg := monitor.Config{WebhookBackoff: 20 * time.Millisecond, WebhookMaxBackoff: 100 * time.Millisecond}
	in := e.start(t, cfg)
	var cur atomic.Pointer[instance]
	cur.Store(in)
	client := func() monitorv1.MonitorServiceClient { return cur.Load().client }
	ctx := t.Context()
	ev := watchEvents(t, e.nc)

	// A webhook that fails twice, then accepts.
	h := &hook{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.attempts++
		if h.attempts <= 2 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var p map[string]any
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		h.payloads = append(h.payloads, p)
	}))
	defer srv.Close()
	if _, err := client().CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: &monitorv1.Receiver{
		Name: "ops", Webhook: &monitorv1.WebhookConfig{Url: srv.URL, HmacSecret: "s3cret"}}}); err != nil {
		t.Fatal(err)
	}

	// The deployer rolled out shop a minute ago.
	rolloutStart := time.Now().Add(-time.Minute)
	if _, err := e.bus.Publish(ctx, eventbus.Event{Type: "opsuite.deploy.rollout.started", Data: &eventsv1.RolloutStarted{Rollout: &deployerv1.Rollout{
		Id: "r-42", Application: "shop", Environment: "prod", FromRevision: 3, ToRevision: 4, StartTime: timestamppb.New(rolloutStart)}}}); err != nil {
		t.Fatal(err)
	}

	p := startPusher(t, client, "load", map[string]string{"app": "shop", "environment": "prod"})
	p.value.Store(10)
	high := 90.0
	if _, err := client().CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
		Name: "shop", Interval: dur(time.Second),
		Rules: []*monitorv1.Rule{{
			Name: "shop-load-high", Alert: "ShopLoadHigh", For: dur(2 * time.Second),
			Condition:   &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{Metric: "load", High: &high, Matchers: []*monitorv1.LabelMatcher{{Name: "app", Value: "shop"}}}},
			Labels:      map[string]string{"severity": "critical"},
			Annotations: map[string]string{"summary": "load of {{ $labels.app }} is {{ $value }}"},
		}},
	}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	p.value.Store(95)
	crossed := time.Now()

	var pending *monitorv1.Alert
	eventually(t, 5*time.Second, func() error {
		resp, err := client().ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
		if err != nil {
			return err
		}
		if len(resp.GetAlerts()) != 1 {
			return errNotYet
		}
		pending = resp.GetAlerts()[0]
		return nil
	})
	if pending.GetState() != monitorv1.AlertState_ALERT_STATE_PENDING {
		t.Fatalf("first state %s, want pending", pending.GetState())
	}
	eventually(t, 6*time.Second, func() error {
		if ev.count(monitor.EventAlertFiring) == 0 {
			return errNotYet
		}
		return nil
	})
	firedLatency := time.Since(crossed)
	got, err := client().GetAlert(ctx, &monitorv1.GetAlertRequest{Id: pending.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	a := got.GetAlert()
	if a.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
		t.Fatalf("state %s, want firing", a.GetState())
	}
	if d := a.GetFiredAt().AsTime().Sub(a.GetActiveAt().AsTime()); d < 2*time.Second || d > 2500*time.Millisecond {
		t.Fatalf("fired %s after becoming active, want 2s (+ evaluation)", d)
	}
	t.Logf("threshold crossing to firing event: %s (for: 2s, interval 1s)", firedLatency)
	if ev.count(monitor.EventAlertPending) != 1 {
		t.Errorf("%d pending events, want 1", ev.count(monitor.EventAlertPending))
	}
	if a.GetLabels()["alertname"] != "ShopLoadHigh" || a.GetLabels()["severity"] != "critical" || a.GetAnnotations()["summary"] != "load of shop is 95" {
		t.Errorf("labels %v annotations %v", a.GetLabels(), a.GetAnnotations())
	}
	if d := a.GetDeploy(); d.GetRolloutId() != "r-42" || d.GetRevision() != "4" || d.GetPreviousRevision() != "3" || d.GetTimeToFire().AsDuration() < time.Minute {
		t.Errorf("deploy context %v", d)
	}
	isf, err := client().IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if !isf.GetFiring() || !isf.GetSince().AsTime().Equal(rolloutStart.Truncate(time.Nanosecond)) && isf.GetSince().AsTime().Sub(rolloutStart).Abs() > time.Millisecond {
		t.Errorf("IsAlertFiring = %v since %v, want firing since the rollout start %v", isf.GetFiring(), isf.GetSince().AsTime(), rolloutStart)
	}
	if isf, _ := client().IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "cart"}); isf.GetFiring() {
		t.Errorf("cart has no alert but IsAlertFiring says firing")
	}
	eventually(t, 5*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.payloads) == 0 {
			return errNotYet
		}
		return nil
	})
	h.mu.Lock()
	pl := h.payloads[0]
	attempts := h.attempts
	h.mu.Unlock()
	if pl["version"] != "4" || pl["status"] != "firing" || attempts != 3 {
		t.Fatalf("webhook payload %v after %d attempts, want version 4 firing after 3", pl, attempts)
	}
	alerts, _ := pl["alerts"].([]any)
	if len(alerts) != 1 || alerts[0].(map[string]any)["labels"].(map[string]any)["alertname"] != "ShopLoadHigh" {
		t.Fatalf("webhook alerts %v", pl["alerts"])
	}

	// Restart: a new Service on the same data dir and NATS.
	firingBefore := ev.count(monitor.EventAlertFiring)
	in.stop()
	in2 := e.start(t, cfg)
	cur.Store(in2)
	time.Sleep(2500 * time.Millisecond) // two or three evaluations
	got, err = client().GetAlert(ctx, &monitorv1.GetAlertRequest{Id: a.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	b := got.GetAlert()
	if b.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING || !proto.Equal(b.GetActiveAt(), a.GetActiveAt()) || !proto.Equal(b.GetFiredAt(), a.GetFiredAt()) {
		t.Fatalf("after restart: %s active %v fired %v; before: active %v fired %v", b.GetState(), b.GetActiveAt().AsTime(), b.GetFiredAt().AsTime(), a.GetActiveAt().AsTime(), a.GetFiredAt().AsTime())
	}
	if n := ev.count(monitor.EventAlertFiring); n != firingBefore {
		t.Fatalf("%d firing events after restart, want %d", n, firingBefore)
	}
	list, _ := client().ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
	if len(list.GetAlerts()) != 1 {
		t.Fatalf("%d active alerts after restart, want 1", len(list.GetAlerts()))
	}

	// Resolve.
	p.value.Store(10)
	eventually(t, 5*time.Second, func() error {
		if ev.count(monitor.EventAlertResolved) == 0 {
			return errNotYet
		}
		return nil
	})
	counts := streamCounts(t, e.js)
	if counts[monitor.EventAlertFiring] != 1 || counts[monitor.EventAlertResolved] != 1 || counts[monitor.EventAlertPending] != 1 {
		t.Fatalf("events in stream %v, want one pending, one firing, one resolved", counts)
	}
	hist, err := client().ListAlerts(ctx, &monitorv1.ListAlertsRequest{Window: dur(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.GetAlerts()) != 1 || hist.GetAlerts()[0].GetState() != monitorv1.AlertState_ALERT_STATE_RESOLVED {
		t.Fatalf("alerts of the last hour %v, want the resolved one", hist.GetAlerts())
	}
	// It fired since the rollout, so the rollback policy still sees it...
	if isf, _ := client().IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "shop"}); !isf.GetFiring() {
		t.Error("resolved alert that fired since the rollout is not counted")
	}
	// ...but not when only alerts firing now count.
	if isf, _ := client().IsAlertFiring(ctx, &monitorv1.IsAlertFiringRequest{Application: "shop", FiringNow: true}); isf.GetFiring() {
		t.Error("resolved alert counted as firing now")
	}
	p.stop()
}

// TestImportRuleFileEvaluates loads an upstream Prometheus rules file
// unchanged and sees its rules evaluate.
func TestImportRuleFileEvaluates(t *testing.T) {
	e := newEnv(t)
	c := e.start(t, monitor.Config{}).client
	ctx := t.Context()
	content := mustRead(t, "testdata/node.rules.yml")
	resp, err := c.ImportRuleFile(ctx, &monitorv1.ImportRuleFileRequest{Content: content, FileName: "node.rules.yml"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRuleGroups()) != 2 || len(resp.GetRuleGroups()[0].GetRules()) != 3 {
		t.Fatalf("imported %v", resp.GetRuleGroups())
	}
	// Importing again keeps the rule names (and so the alerts' state).
	again, err := c.ImportRuleFile(ctx, &monitorv1.ImportRuleFileRequest{Content: content, FileName: "node.rules.yml", ValidateOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetRuleGroups()[0].GetRules()[1].GetName() != resp.GetRuleGroups()[0].GetRules()[1].GetName() {
		t.Fatal("rule names changed between imports")
	}
	now := time.Now()
	if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{
		{Name: "up", Labels: map[string]string{"job": "api", "instance": "10.0.0.1:80"}, Value: 0, Time: timestamppb.New(now)},
		{Name: "http_requests_total", Labels: map[string]string{"job": "api", "code": "200"}, Value: 100, Time: timestamppb.New(now.Add(-30 * time.Second))},
		{Name: "http_requests_total", Labels: map[string]string{"job": "api", "code": "200"}, Value: 160, Time: timestamppb.New(now)},
	}}); err != nil {
		t.Fatal(err)
	}
	var fired *monitorv1.Alert
	eventually(t, 5*time.Second, func() error {
		r, err := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{States: []monitorv1.AlertState{monitorv1.AlertState_ALERT_STATE_FIRING}})
		if err != nil {
			return err
		}
		if len(r.GetAlerts()) == 0 {
			return errNotYet
		}
		fired = r.GetAlerts()[0]
		return nil
	})
	if fired.GetLabels()["alertname"] != "InstanceDown" || fired.GetLabels()["team"] != "platform" ||
		fired.GetAnnotations()["summary"] != "Instance 10.0.0.1:80 down" {
		t.Fatalf("alert %v %v", fired.GetLabels(), fired.GetAnnotations())
	}
	// The recording rule wrote its series.
	eventually(t, 5*time.Second, func() error {
		q, err := c.Query(ctx, &monitorv1.QueryRequest{Query: "job:http_requests:rate1m"})
		if err != nil {
			return err
		}
		if len(q.GetResult().GetSeries()) != 1 {
			return fmt.Errorf("recorded series %v", q.GetResult().GetSeries())
		}
		return nil
	})
	exp, err := c.ExportRuleFile(ctx, &monitorv1.ExportRuleFileRequest{Groups: []string{"node.rules"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportRuleFile(ctx, &monitorv1.ImportRuleFileRequest{Content: exp.GetContent(), ValidateOnly: true}); err != nil {
		t.Fatalf("exported file does not load again: %v\n%s", err, exp.GetContent())
	}

	_, err = c.ImportRuleFile(ctx, &monitorv1.ImportRuleFileRequest{Content: mustRead(t, "testdata/bad.rules.yml"), FileName: "bad.rules.yml"})
	msg := wantField(t, err, "content")
	if want := "bad.rules.yml:5:"; len(msg) < len(want) || msg[:len(want)] != want {
		t.Fatalf("error %q does not start with file:line: %q", msg, want)
	}
}
