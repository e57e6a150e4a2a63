package monitor_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
)

// startReplica runs a monitor on e's NATS with its own data dir and id.
func (e *env) startReplica(t testing.TB, id string) *instance {
	t.Helper()
	return e.start(t, monitor.Config{DataDir: t.TempDir(), ReplicaID: id, LeaseTTL: 2 * time.Second, Shards: 8})
}

func loadGroup(name string, forDur time.Duration) *monitorv1.RuleGroup {
	high := 10.0
	return &monitorv1.RuleGroup{Name: name, Interval: dur(time.Second), Rules: []*monitorv1.Rule{{
		Name: name + "-load", For: dur(forDur),
		Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{Metric: "load", High: &high,
			Matchers: []*monitorv1.LabelMatcher{{Name: "group", Value: name}}}},
	}}}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// TestReplicasShareRuleGroups: two replicas split the groups (each
// evaluated by exactly one), reads and samples are the same on both, an
// acknowledgement made on the replica not evaluating the alert is kept by
// the one that does, and when one stops the other evaluates everything with
// the alerts as they were.
func TestReplicasShareRuleGroups(t *testing.T) {
	e := newEnv(t)
	a := e.startReplica(t, "r-a")
	b := e.startReplica(t, "r-b")
	ctx := context.Background()
	replicas := []*instance{a, b}

	var names []string
	for i := range 8 {
		names = append(names, fmt.Sprintf("g%d", i))
		if _, err := replicas[i%2].client.CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: loadGroup(names[i], time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, func() error {
		per := map[string]int{}
		for _, g := range names {
			ea, eb := a.svc.Evaluates(g), b.svc.Evaluates(g)
			if ea == eb {
				return fmt.Errorf("group %s evaluated by a: %v, b: %v", g, ea, eb)
			}
			if ea {
				per["a"]++
			} else {
				per["b"]++
			}
		}
		if per["a"] == 0 || per["b"] == 0 {
			return fmt.Errorf("groups per replica %v", per)
		}
		return nil
	})

	// Pushed to one, seen by both; pending alerts listed on both. The
	// samples are pushed again and again (to a, the replica stopped
	// below, and b in turn) so the threshold window always holds one.
	var target atomic.Pointer[instance]
	target.Store(a)
	pctx, stopPush := context.WithCancel(ctx)
	var pushWG sync.WaitGroup
	pushWG.Add(1)
	go func() {
		defer pushWG.Done()
		for i := 0; pctx.Err() == nil; i++ {
			in := target.Load()
			if i%2 == 1 {
				in = b
			}
			req := &monitorv1.PushMetricsRequest{}
			for _, g := range names {
				req.Samples = append(req.Samples, &monitorv1.Sample{Name: "load", Labels: map[string]string{"group": g}, Value: 50})
			}
			if _, err := in.client.PushMetrics(pctx, req); err != nil && pctx.Err() == nil {
				t.Errorf("push: %v", err)
			}
			sleepCtx(pctx, 100*time.Millisecond)
		}
	}()
	defer func() {
		stopPush()
		pushWG.Wait()
	}()
	ids := map[string]string{}
	for _, in := range replicas {
		eventually(t, 10*time.Second, func() error {
			r, err := in.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
			if err != nil {
				return err
			}
			if len(r.GetAlerts()) != len(names) {
				return fmt.Errorf("%d alerts listed, want %d", len(r.GetAlerts()), len(names))
			}
			for _, al := range r.GetAlerts() {
				if prev, ok := ids[al.GetRuleGroup()]; ok && prev != al.GetId() {
					return fmt.Errorf("group %s: alert %s here, %s on the other replica", al.GetRuleGroup(), al.GetId(), prev)
				}
				ids[al.GetRuleGroup()] = al.GetId()
			}
			return nil
		})
		r, err := in.client.Query(ctx, &monitorv1.QueryRequest{Query: "count(load)"})
		if err != nil || r.GetResult().GetSeries()[0].GetPoints()[0].GetValue() != float64(len(names)) {
			t.Fatalf("count(load) on a replica: %v %v, want %d", r, err, len(names))
		}
	}

	// Acknowledge on the replica that does not evaluate the alert.
	g := names[0]
	other := b
	if b.svc.Evaluates(g) {
		other = a
	}
	if _, err := other.client.AcknowledgeAlert(ctx, &monitorv1.AcknowledgeAlertRequest{Id: ids[g], Comment: "mine"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // evaluations of the group go on
	for _, in := range replicas {
		r, err := in.client.GetAlert(ctx, &monitorv1.GetAlertRequest{Id: ids[g]})
		if err != nil || r.GetAlert().GetAcknowledgement().GetComment() != "mine" {
			t.Fatalf("acknowledgement lost: %v %v", r, err)
		}
	}

	// Stop a: b evaluates every group, with the alerts it had.
	before, err := b.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	target.Store(b)
	time.Sleep(200 * time.Millisecond)
	a.stop()
	eventually(t, 10*time.Second, func() error {
		for _, g := range names {
			if !b.svc.Evaluates(g) {
				return fmt.Errorf("b does not evaluate %s", g)
			}
		}
		return nil
	})
	time.Sleep(1500 * time.Millisecond)
	after, err := b.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.GetAlerts()) != len(before.GetAlerts()) {
		for _, al := range before.GetAlerts() {
			t.Logf("before: %s %s %s", al.GetRuleGroup(), al.GetId(), al.GetState())
		}
		for _, al := range after.GetAlerts() {
			t.Logf("after: %s %s %s", al.GetRuleGroup(), al.GetId(), al.GetState())
		}
		all, _ := b.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Window: dur(time.Hour)})
		for _, al := range all.GetAlerts() {
			t.Logf("all: %s %s %s %v", al.GetRuleGroup(), al.GetId(), al.GetState(), al.GetResolvedAt().AsTime())
		}
		t.Fatalf("%d alerts after the handover, %d before", len(after.GetAlerts()), len(before.GetAlerts()))
	}
	was := map[string]*monitorv1.Alert{}
	for _, al := range before.GetAlerts() {
		was[al.GetId()] = al
	}
	for _, al := range after.GetAlerts() {
		w := was[al.GetId()]
		if w == nil || !w.GetActiveAt().AsTime().Equal(al.GetActiveAt().AsTime()) || al.GetState() != monitorv1.AlertState_ALERT_STATE_PENDING {
			t.Errorf("alert %s after the handover: %v, before: %v", al.GetId(), al, w)
		}
	}
	if r, _ := b.client.GetAlert(ctx, &monitorv1.GetAlertRequest{Id: ids[g]}); r.GetAlert().GetAcknowledgement().GetComment() != "mine" {
		t.Errorf("acknowledgement lost in the handover: %v", r)
	}
}
