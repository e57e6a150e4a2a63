package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/lease"
	"google.golang.org/protobuf/types/known/durationpb"
)

// alertLog counts what consumers of a monitor see: alert events in the
// event stream and on the wire, and webhook posts.
type alertLog struct {
	mu       sync.Mutex
	stream   map[string]int // "<type> <alert id>" as stored in OPSUITE_EVENTS
	wire     map[string]int // the same, every publish seen on NATS
	webhooks map[string]int // "<status> <fingerprint> <startsAt>"
	byFP     map[string]map[string]int
}

func newAlertLog(t *testing.T, natsURL string) (*alertLog, *httptest.Server) {
	t.Helper()
	l := &alertLog{stream: map[string]int{}, wire: map[string]int{}, webhooks: map[string]int{}, byFP: map[string]map[string]int{}}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe("opsuite.monitor.alert.>", func(m *nats.Msg) {
		l.mu.Lock()
		l.wire[m.Subject+" "+m.Header.Get("ce-subject")]++
		l.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The event stream is created by the first monitor; follow it from
	// the start once it exists.
	go func() {
		for ctx.Err() == nil {
			cons, err := js.OrderedConsumer(ctx, "OPSUITE_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"opsuite.monitor.alert.>"}})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			cc, err := cons.Consume(func(m jetstream.Msg) {
				l.mu.Lock()
				l.stream[m.Subject()+" "+m.Headers().Get("ce-subject")]++
				l.mu.Unlock()
			})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			<-ctx.Done()
			cc.Stop()
			return
		}
	}()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			Alerts []struct {
				Status      string    `json:"status"`
				Fingerprint string    `json:"fingerprint"`
				StartsAt    time.Time `json:"startsAt"`
			} `json:"alerts"`
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		for _, a := range p.Alerts {
			l.webhooks[a.Status+" "+a.Fingerprint+" "+a.StartsAt.Format(time.RFC3339Nano)]++
			if l.byFP[a.Fingerprint] == nil {
				l.byFP[a.Fingerprint] = map[string]int{}
			}
			l.byFP[a.Fingerprint][a.Status]++
		}
		l.mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	return l, hook
}

// events is how often type (pending, firing, resolved) of alert id was seen
// in the stream and on the wire.
func (l *alertLog) events(kind, id string) (stream, wire int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := "opsuite.monitor.alert." + kind + " " + id
	return l.stream[k], l.wire[k]
}

func (l *alertLog) posts(fingerprint, status string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byFP[fingerprint][status]
}

// loadPusher keeps pushing it_load{group=...} at the wanted values to the
// live replicas in turn, so threshold windows always hold a sample.
type loadPusher struct {
	mu     sync.Mutex
	values map[string]float64
	alive  []monitorv1.MonitorServiceClient
	ids    []string
	pushes map[string]int // accepted, by replica
}

func (p *loadPusher) set(group string, v float64) {
	p.mu.Lock()
	p.values[group] = v
	p.mu.Unlock()
}

func (p *loadPusher) only(c monitorv1.MonitorServiceClient, id string) {
	p.mu.Lock()
	p.alive, p.ids = []monitorv1.MonitorServiceClient{c}, []string{id}
	p.mu.Unlock()
}

func (p *loadPusher) run(ctx context.Context, t *testing.T) {
	for i := 0; ctx.Err() == nil; i++ {
		p.mu.Lock()
		req := &monitorv1.PushMetricsRequest{}
		for g, v := range p.values {
			req.Samples = append(req.Samples, &monitorv1.Sample{Name: "it_load", Labels: map[string]string{"group": g}, Value: v})
		}
		alive, ids := p.alive, p.ids
		p.mu.Unlock()
		if len(req.Samples) > 0 {
			k := i % len(alive)
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := alive[k].PushMetrics(pctx, req)
			cancel()
			if err == nil {
				p.mu.Lock()
				p.pushes[ids[k]]++
				p.mu.Unlock()
			} else if ctx.Err() == nil {
				t.Logf("push to %s: %v", ids[k], err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// evaluator tells which of the clients evaluates rule: the one reporting a
// recent evaluation; -1 when none or both do.
func evaluator(ctx context.Context, clients []monitorv1.MonitorServiceClient, rule string) int {
	who := -1
	for i, c := range clients {
		r, err := c.GetRule(ctx, &monitorv1.GetRuleRequest{Name: rule})
		if err != nil {
			continue
		}
		last := r.GetRule().GetStatus().GetLastEvaluationTime()
		if last == nil || time.Since(last.AsTime()) > 3*time.Second {
			continue
		}
		if who != -1 {
			return -1
		}
		who = i
	}
	return who
}

// groupsOnBothParities picks n group names with prefix whose shards are
// even and odd in turn: two replicas prefer shards of one parity each, so
// both get some of the groups.
func groupsOnBothParities(prefix string, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		name := fmt.Sprintf("%s%d", prefix, i)
		if lease.ShardOf(name, lease.DefaultShards)%2 == len(out)%2 {
			out = append(out, name)
		}
	}
	return out
}

func alertOf(ctx context.Context, c monitorv1.MonitorServiceClient, rule string) (*monitorv1.Alert, int) {
	r, err := c.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Window: durationpb.New(time.Hour), PageSize: 1000})
	if err != nil {
		return nil, 0
	}
	var found *monitorv1.Alert
	n := 0
	for _, a := range r.GetAlerts() {
		if a.GetRule() == rule {
			found = a
			n++
		}
	}
	return found, n
}

// TestMonitorReplicas runs two monitor processes on one NATS: every rule
// group is evaluated by one of them, samples pushed to either reach both,
// each alert transition is announced once (events and webhooks), reads
// answer the same on both; after kill -9 of one in the middle of pending
// alerts' `for`, the other takes its groups over and fires them at their
// original `for` start, still once.
func TestMonitorReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	ns := startNATS(t)
	a := startReplica(t, ns.ClientURL(), "monitor", "m-a")
	b := startReplica(t, ns.ClientURL(), "monitor", "m-b")
	clients := []monitorv1.MonitorServiceClient{monitorv1.NewMonitorServiceClient(a.conn), monitorv1.NewMonitorServiceClient(b.conn)}
	procs := []*replicaProc{a, b}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log, hook := newAlertLog(t, ns.ClientURL())

	if _, err := clients[1].CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: &monitorv1.Receiver{
		Name: "ops", Webhook: &monitorv1.WebhookConfig{Url: hook.URL}}}); err != nil {
		t.Fatal(err)
	}
	high := 10.0
	createGroups := func(names []string, forDur time.Duration) {
		for i, g := range names {
			_, err := clients[i%2].CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
				Name: g, Interval: durationpb.New(time.Second),
				Rules: []*monitorv1.Rule{{Name: g + "-load", For: durationpb.New(forDur),
					Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{Metric: "it_load", High: &high,
						Matchers: []*monitorv1.LabelMatcher{{Name: "group", Value: g}}}}}},
			}})
			if err != nil {
				t.Fatalf("create group %s: %v", g, err)
			}
		}
	}
	pusher := &loadPusher{values: map[string]float64{}, alive: clients, ids: []string{a.id, b.id}, pushes: map[string]int{}}
	pctx, stopPush := context.WithCancel(ctx)
	var pushWG sync.WaitGroup
	pushWG.Add(1)
	go func() {
		defer pushWG.Done()
		pusher.run(pctx, t)
	}()
	defer func() {
		stopPush()
		pushWG.Wait()
	}()

	// Phase 1: both up. Each group evaluated by exactly one replica, both
	// evaluate some; alerts fire and resolve once.
	first := groupsOnBothParities("fire", 6)
	createGroups(first, time.Second)
	for _, g := range first {
		pusher.set(g, 1)
	}
	owner := map[string]int{}
	eventually(t, time.Minute, "each group evaluated by exactly one replica, both replicas evaluating", func() bool {
		per := map[int]int{}
		for _, g := range first {
			w := evaluator(ctx, clients, g+"-load")
			if w < 0 {
				return false
			}
			owner[g] = w
			per[w]++
		}
		return per[0] > 0 && per[1] > 0
	})
	t.Logf("groups per replica while both run: %v", owner)
	for _, g := range first {
		pusher.set(g, 20)
	}
	firing := map[string]*monitorv1.Alert{}
	eventually(t, time.Minute, "every alert firing, as seen through both replicas", func() bool {
		for _, g := range first {
			for _, c := range clients {
				al, _ := alertOf(ctx, c, g+"-load")
				if al.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
					return false
				}
				firing[g] = al
			}
		}
		return true
	})
	for _, g := range first {
		pusher.set(g, 0)
	}
	eventually(t, time.Minute, "every alert resolved, as seen through both replicas", func() bool {
		for _, g := range first {
			for _, c := range clients {
				al, _ := alertOf(ctx, c, g+"-load")
				if al.GetState() != monitorv1.AlertState_ALERT_STATE_RESOLVED {
					return false
				}
			}
		}
		return true
	})
	eventually(t, 30*time.Second, "a resolved webhook per alert", func() bool {
		for _, g := range first {
			if log.posts(firing[g].GetFingerprint(), "resolved") == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // room for doubles to show up
	for _, g := range first {
		al, n := alertOf(ctx, clients[0], g+"-load")
		if n != 1 {
			t.Errorf("%s: %d alert episodes, want 1", g, n)
		}
		for _, kind := range []string{"pending", "firing", "resolved"} {
			if st, wire := log.events(kind, al.GetId()); st != 1 || wire != 1 {
				t.Errorf("%s: %s event of %s %d times in the stream, %d on the wire; want once", g, kind, al.GetId(), st, wire)
			}
		}
		for _, status := range []string{"firing", "resolved"} {
			if n := log.posts(al.GetFingerprint(), status); n != 1 {
				t.Errorf("%s: %d %s webhook posts, want 1", g, n, status)
			}
		}
	}

	// Phase 2: alerts pending with a `for` longer than a takeover; kill
	// -9 the replica evaluating some of them in the middle of it.
	const forDur = 25 * time.Second
	second := groupsOnBothParities("hold", 6)
	createGroups(second, forDur)
	for _, g := range second {
		pusher.set(g, 1)
	}
	eventually(t, time.Minute, "each new group evaluated by exactly one replica", func() bool {
		for _, g := range second {
			w := evaluator(ctx, clients, g+"-load")
			if w < 0 {
				return false
			}
			owner[g] = w
		}
		return true
	})
	victim := owner[second[0]]
	survivor := 1 - victim
	var orphans []string
	for _, g := range second {
		if owner[g] == victim {
			orphans = append(orphans, g)
		}
	}
	for _, g := range second {
		pusher.set(g, 20)
	}
	pending := map[string]*monitorv1.Alert{}
	eventually(t, 30*time.Second, "every new alert pending on both replicas", func() bool {
		for _, g := range second {
			for _, c := range clients {
				al, _ := alertOf(ctx, c, g+"-load")
				if al.GetState() != monitorv1.AlertState_ALERT_STATE_PENDING {
					return false
				}
				pending[g] = al
			}
		}
		return true
	})
	time.Sleep(3 * time.Second)
	pusher.only(clients[survivor], procs[survivor].id)
	procs[victim].kill()
	killed := time.Now()
	t.Logf("killed %s in the middle of `for` (%s) of %d pending alerts, %d of them evaluated by it",
		procs[victim].id, forDur, len(second), len(orphans))

	takeover := map[string]time.Duration{}
	eventually(t, time.Minute, "the survivor evaluating every group of the killed replica", func() bool {
		for _, g := range orphans {
			if _, ok := takeover[g]; ok {
				continue
			}
			if evaluator(ctx, clients[survivor:survivor+1], g+"-load") == 0 {
				takeover[g] = time.Since(killed)
			}
		}
		return len(takeover) == len(orphans)
	})
	var slowest time.Duration
	for _, d := range takeover {
		slowest = max(slowest, d)
	}
	t.Logf("kill -9: the survivor evaluated all %d orphaned groups within %s (lease ttl 10s)", len(orphans), slowest.Round(time.Millisecond))
	if slowest > 20*time.Second {
		t.Errorf("takeover took %s, want about the lease TTL (10s)", slowest)
	}

	eventually(t, time.Minute, "every held alert firing on the survivor", func() bool {
		for _, g := range second {
			al, _ := alertOf(ctx, clients[survivor], g+"-load")
			if al.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
				return false
			}
		}
		return true
	})
	for _, g := range second {
		al, n := alertOf(ctx, clients[survivor], g+"-load")
		if n != 1 || al.GetId() != pending[g].GetId() {
			t.Errorf("%s: %d episodes, firing %s; want the one pending before the kill (%s)", g, n, al.GetId(), pending[g].GetId())
		}
		if !al.GetActiveAt().AsTime().Equal(pending[g].GetActiveAt().AsTime()) {
			t.Errorf("%s: active_at %s, was %s before the kill", g, al.GetActiveAt().AsTime(), pending[g].GetActiveAt().AsTime())
		}
		waited := al.GetFiredAt().AsTime().Sub(al.GetActiveAt().AsTime())
		if waited < forDur || waited > forDur+5*time.Second {
			t.Errorf("%s: fired %s after it became pending, want %s (the `for` kept its start)", g, waited, forDur)
		}
	}
	eventually(t, 30*time.Second, "a firing webhook per held alert", func() bool {
		for _, g := range second {
			if log.posts(pending[g].GetFingerprint(), "firing") == 0 {
				return false
			}
		}
		return true
	})
	for _, g := range second {
		pusher.set(g, 0)
	}
	eventually(t, time.Minute, "every held alert resolved", func() bool {
		for _, g := range second {
			al, _ := alertOf(ctx, clients[survivor], g+"-load")
			if al.GetState() != monitorv1.AlertState_ALERT_STATE_RESOLVED || log.posts(al.GetFingerprint(), "resolved") == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second)
	for _, g := range second {
		id := pending[g].GetId()
		for _, kind := range []string{"pending", "firing", "resolved"} {
			if st, wire := log.events(kind, id); st != 1 || wire != 1 {
				t.Errorf("%s (taken over: %v): %s event %d times in the stream, %d on the wire; want once", g, owner[g] == victim, kind, st, wire)
			}
		}
		for _, status := range []string{"firing", "resolved"} {
			if n := log.posts(pending[g].GetFingerprint(), status); n != 1 {
				t.Errorf("%s: %d %s webhook posts, want 1", g, n, status)
			}
		}
	}

	// Samples pushed to either replica are on the survivor: a query there
	// sees every group's series.
	r, err := clients[survivor].Query(ctx, &monitorv1.QueryRequest{Query: `count(count_over_time(it_load[10m]))`})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetResult().GetSeries(); len(got) != 1 || got[0].GetPoints()[0].GetValue() != float64(len(first)+len(second)) {
		t.Errorf("series of it_load on the survivor: %v, want %d", got, len(first)+len(second))
	}
	pusher.mu.Lock()
	t.Logf("pushes accepted per replica: %v", pusher.pushes)
	pusher.mu.Unlock()
}
