package monitor_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
)

// flakyHook is a webhook receiver on 127.0.0.1 that answers 503 while
// failing is set and records what it accepted, by alert fingerprint and
// status, in order.
type flakyHook struct {
	srv     *httptest.Server
	failing atomic.Bool
	// slow: take 300ms to refuse (so a kill tends to land mid-attempt).
	slow atomic.Bool

	mu       sync.Mutex
	attempts map[string]int // every call, by key
	accepted []string       // keys of accepted calls, in order
}

func newFlakyHook(t *testing.T) *flakyHook {
	h := &flakyHook{attempts: map[string]int{}}
	h.failing.Store(true)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Alerts []struct {
				Status      string `json:"status"`
				Fingerprint string `json:"fingerprint"`
				Labels      map[string]string
			} `json:"alerts"`
		}
		if err := json.Unmarshal(body, &p); err != nil || len(p.Alerts) != 1 {
			t.Errorf("webhook body %s: %v", body, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		key := p.Alerts[0].Labels["host"] + "/" + p.Alerts[0].Status
		failing := h.failing.Load()
		if failing && h.slow.Load() {
			time.Sleep(300 * time.Millisecond)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.attempts[key]++
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.accepted = append(h.accepted, key)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *flakyHook) snapshot() (map[string]int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	att := map[string]int{}
	for k, v := range h.attempts {
		att[k] = v
	}
	return att, slices.Clone(h.accepted)
}

// webhookQueue counts notifications waiting in the stream for receiver.
func webhookQueue(t *testing.T, js jetstream.JetStream, receiver string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), monitor.StreamWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	subject := "opsuite.internal.monitor.webhook." + receiver
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestWebhookSurvivesRestart: notifications that a failing receiver has
// not accepted survive the monitor's restart; once the receiver accepts,
// each notification arrives exactly once, in the order it was raised.
func TestWebhookSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	cfg := fastWebhooks(monitor.Config{})
	var cur atomic.Pointer[instance]
	cur.Store(e.start(t, cfg))
	client := func() monitorv1.MonitorServiceClient { return cur.Load().client }
	ctx := t.Context()
	hook := newFlakyHook(t)

	if _, err := client().CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: &monitorv1.Receiver{
		Name: "ops", Webhook: &monitorv1.WebhookConfig{Url: hook.srv.URL}}}); err != nil {
		t.Fatal(err)
	}
	high := 90.0
	if _, err := client().CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
		Name: "disks", Interval: dur(time.Second),
		Rules: []*monitorv1.Rule{{Name: "disk-full", Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{
			Metric: "disk_used_percent", High: &high, Window: dur(3 * time.Second)}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	pa := startPusher(t, client, "disk_used_percent", map[string]string{"host": "a"})
	pb := startPusher(t, client, "disk_used_percent", map[string]string{"host": "b"})
	pa.value.Store(95)
	pb.value.Store(97)

	// Both alerts fire; the receiver refuses the first notification, which
	// holds back the rest (one receiver's notifications go in order).
	eventually(t, 15*time.Second, func() error {
		if att, _ := hook.snapshot(); att["a/firing"]+att["b/firing"] < 3 {
			return fmt.Errorf("attempts %v: %w", att, errNotYet)
		}
		return nil
	})
	if att, _ := hook.snapshot(); att["a/firing"] > 0 && att["b/firing"] > 0 {
		t.Fatalf("attempts %v: both alerts' notifications tried at once", att)
	}
	// b resolves: its resolution waits behind the firing notifications.
	pb.value.Store(10)
	eventually(t, 15*time.Second, func() error {
		r, err := client().ListAlerts(ctx, &monitorv1.ListAlertsRequest{States: []monitorv1.AlertState{monitorv1.AlertState_ALERT_STATE_RESOLVED}})
		if err != nil {
			return err
		}
		if len(r.GetAlerts()) != 1 {
			return errNotYet
		}
		return nil
	})
	// (The alert shows resolved just before its notification is queued.)
	eventually(t, 5*time.Second, func() error {
		if n := webhookQueue(t, e.js, "ops"); n != 3 {
			return fmt.Errorf("%d notifications queued before the restart, want 3: %w", n, errNotYet)
		}
		return nil
	})

	cur.Load().stop()
	before, _ := hook.snapshot()
	cur.Store(e.start(t, cfg))
	// The restarted monitor retries what the first one queued...
	eventually(t, 20*time.Second, func() error {
		if att, _ := hook.snapshot(); att["a/firing"]+att["b/firing"] <= before["a/firing"]+before["b/firing"] {
			return fmt.Errorf("attempts %v: %w", att, errNotYet)
		}
		return nil
	})
	// ...and delivers each once the receiver accepts.
	hook.failing.Store(false)
	want := []string{"a/firing", "b/firing", "b/resolved"}
	eventually(t, 30*time.Second, func() error {
		if _, acc := hook.snapshot(); len(acc) < len(want) {
			return fmt.Errorf("accepted %v: %w", acc, errNotYet)
		}
		return nil
	})
	// Long enough for any redelivery (ack wait, backoff) to show.
	time.Sleep(2*cfg.WebhookAckWait + time.Second)
	att, acc := hook.snapshot()
	if slices.Sort(acc); !slices.Equal(acc, want) {
		t.Fatalf("accepted %v, want each of %v once (attempts %v)", acc, want, att)
	}
	if n := webhookQueue(t, e.js, "ops"); n != 0 {
		t.Fatalf("%d notifications still queued", n)
	}
	// b's notifications in the order raised.
	_, inOrder := hook.snapshot()
	if slices.Index(inOrder, "b/firing") > slices.Index(inOrder, "b/resolved") {
		t.Fatalf("accepted in order %v: b resolved before it fired", inOrder)
	}

	// A third monitor finds nothing left to send.
	cur.Load().stop()
	cur.Store(e.start(t, cfg))
	time.Sleep(2 * time.Second)
	if _, acc := hook.snapshot(); len(acc) != len(want) {
		t.Fatalf("after another restart: accepted %v", acc)
	}
	r, err := client().GetReceiver(ctx, &monitorv1.GetReceiverRequest{Name: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.GetReceiver().GetStatus(); st.GetQueued() != 0 {
		t.Fatalf("receiver status %v, want nothing queued", st)
	}
	pa.stop()
	pb.stop()
}

// TestWebhookGivesUp: a refusal that retrying cannot change (404) ends a
// notification after one attempt; a receiver that keeps failing is given up
// on after its retry_for; deleting a receiver drops its queue.
func TestWebhookGivesUp(t *testing.T) {
	e := newEnv(t)
	in := e.start(t, fastWebhooks(monitor.Config{}))
	c, ctx := in.client, t.Context()
	var gone, down, doomed atomic.Int32
	count := func(n *atomic.Int32, status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			n.Add(1)
			w.WriteHeader(status)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	for _, r := range []*monitorv1.Receiver{
		{Name: "gone", Webhook: &monitorv1.WebhookConfig{Url: count(&gone, http.StatusNotFound)}},
		{Name: "down", Webhook: &monitorv1.WebhookConfig{Url: count(&down, http.StatusBadGateway), RetryFor: dur(1500 * time.Millisecond)}},
		{Name: "doomed", Webhook: &monitorv1.WebhookConfig{Url: count(&doomed, http.StatusServiceUnavailable)}},
	} {
		if _, err := c.CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.PushMetrics(ctx, &monitorv1.PushMetricsRequest{Samples: []*monitorv1.Sample{{Name: "errors_now", Value: 5}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateRule(ctx, &monitorv1.CreateRuleRequest{Rule: &monitorv1.Rule{Name: "errors", Condition: &monitorv1.Rule_Expr{Expr: "errors_now > 1"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if gone.Load() == 0 || down.Load() < 2 || doomed.Load() < 2 {
			return fmt.Errorf("attempts gone %d down %d doomed %d: %w", gone.Load(), down.Load(), doomed.Load(), errNotYet)
		}
		return nil
	})
	if _, err := c.DeleteReceiver(ctx, &monitorv1.DeleteReceiverRequest{Name: "doomed"}); err != nil {
		t.Fatal(err)
	}
	if n := webhookQueue(t, e.js, "doomed"); n != 0 {
		t.Fatalf("deleted receiver: %d notifications still queued", n)
	}
	eventually(t, 10*time.Second, func() error {
		if n := webhookQueue(t, e.js, "down"); n != 0 {
			return fmt.Errorf("%d queued for down: %w", n, errNotYet)
		}
		return nil
	})
	if n := webhookQueue(t, e.js, "gone"); n != 0 {
		t.Fatalf("%d queued for gone", n)
	}
	downAt, doomedAt := down.Load(), doomed.Load()
	time.Sleep(1500 * time.Millisecond)
	if gone.Load() != 1 || down.Load() != downAt || doomed.Load() != doomedAt {
		t.Fatalf("attempts went on: gone %d (want 1), down %d (was %d), doomed %d (was %d)", gone.Load(), down.Load(), downAt, doomed.Load(), doomedAt)
	}
	r, err := c.GetReceiver(ctx, &monitorv1.GetReceiverRequest{Name: "down"})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.GetReceiver().GetStatus(); st.GetLastError() == "" || st.GetConsecutiveFailures() < 2 || st.GetLastSuccessTime() != nil {
		t.Fatalf("status of down %v", st)
	}
}
