package monitor

// Replicas. Any number of monitors may share one NATS.
//
//   - Every replica mirrors every bucket (rule groups, alerts, silences,
//     scrape targets, receivers, rollouts) through a KV watch, so reads —
//     ListAlerts, GetAlert, IsAlertFiring, rules, silences — answer the same
//     on any replica, and a change made through one reaches the others.
//   - Every replica holds every sample (fanout.go), so queries and canary
//     analyses answer the same on any replica.
//   - The work is split: rule groups and scrape targets are spread over
//     shards by name (lease.ShardOf), the replicas share the shards through
//     leases (lease.Shards), and only the holder of a group's shard
//     evaluates it, writes its alerts and announces their transitions; only
//     the holder of a target's shard scrapes it.
//   - Alert writes are revision-checked against the revision this replica
//     last saw, so a replica that lost its shard (or raced an
//     acknowledgement made on another replica) cannot overwrite a newer
//     state: its write fails, it reloads the alert and evaluates again.
//   - A replica taking a shard first waits for its mirrors to hold
//     everything the buckets hold, then goes on from the stored state:
//     firing alerts stay firing, pending ones keep their `for` start, and a
//     transition its previous holder stored but may not have announced is
//     announced again under the same event and notification ids, which the
//     streams' de-duplication drops if it went out.
//   - Webhook notifications go through one durable consumer per receiver,
//     shared by all replicas (notify.go): each is delivered by one of them.
//   - Rollout events reach one replica through the shared durable consumer
//     RolloutConsumer; it stores the rollout in its bucket, which every
//     replica mirrors.

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/kvwatch"
	"github.com/opsuite/opsuite/pkg/lease"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// catchUpWait bounds how long a replica taking a shard waits for its
// mirrors before it goes on with what it has (revision checks keep it from
// overwriting newer alerts).
const catchUpWait = 10 * time.Second

// shardOf is the shard of a rule group or scrape target.
func (s *Service) shardOf(name string) int { return lease.ShardOf(name, s.cfg.Shards) }

// ownsLocked returns the context of name's shard when this replica holds
// it; s.mu must be held.
func (s *Service) ownsLocked(name string) (context.Context, bool) {
	ctx, ok := s.owned[s.shardOf(name)]
	if !ok || ctx.Err() != nil {
		return nil, false
	}
	return ctx, true
}

// evaluates reports whether this replica evaluates the rule group named
// name now (holds its shard).
func (s *Service) evaluates(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ownsLocked(name)
	return ok
}

// loopHandle is a running loop: its cancel and its end.
type loopHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startLoop runs f under a child of parent until stopped.
func (s *Service) startLoop(parent context.Context, f func(ctx context.Context)) *loopHandle {
	ctx, cancel := context.WithCancel(parent)
	h := &loopHandle{cancel: cancel, done: make(chan struct{})}
	s.goLoop(func() {
		defer close(h.done)
		f(ctx)
	})
	return h
}

// stop ends the loop and waits for it; nil does nothing.
func (h *loopHandle) stop() {
	if h == nil {
		return
	}
	h.cancel()
	<-h.done
}

// restore mirrors every bucket: current values first (before Run reports
// ready), then changes until Run ends. Rule groups, scrape targets and
// receivers are installed as they come; their loops start when this
// replica holds their shard (runShard).
func (s *Service) restore(ctx context.Context) error {
	if err := mirror(ctx, s, s.silencesKV, s.applySilence); err != nil {
		return err
	}
	if err := mirror(ctx, s, s.rolloutsKV, s.applyRollout); err != nil {
		return err
	}
	if err := mirror(ctx, s, s.alertsKV, s.applyAlert); err != nil {
		return err
	}
	if err := mirror(ctx, s, s.ruleGroups, s.applyRuleGroup); err != nil {
		return err
	}
	if err := mirror(ctx, s, s.receiverKV, s.applyReceiver); err != nil {
		return err
	}
	return mirror(ctx, s, s.targetsKV, s.applyTarget)
}

// mirror hands t's current values to apply, then follows its changes in a
// loop of s.
func mirror[T proto.Message](ctx context.Context, s *Service, t *kvTable[T], apply func(jetstream.KeyValueEntry)) error {
	m, err := kvwatch.StartMirror(ctx, t.kv, apply, kvwatch.MirrorConfig{Log: s.log})
	if err != nil {
		return err
	}
	t.mirror = m
	s.goLoop(func() { m.Run(ctx) })
	return nil
}

// nameOf is the name an entry's key stands for, logged and "" when the
// key is not one of ours.
func (s *Service) nameOf(e jetstream.KeyValueEntry) string {
	name, err := kvName(e.Key())
	if err != nil {
		s.log.Warn("foreign key in bucket; skipped", "bucket", e.Bucket(), "err", err)
		return ""
	}
	return name
}

func (s *Service) applySilence(e jetstream.KeyValueEntry) {
	name := s.nameOf(e)
	if name == "" || !s.silencesKV.advance(name, e.Revision()) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.mu.Lock()
		delete(s.silences, name)
		s.mu.Unlock()
		return
	}
	sl, err := s.silencesKV.decode(e)
	if err != nil {
		s.log.Error("stored silence does not decode; skipped", "err", err)
		return
	}
	s.mu.Lock()
	s.silences[name] = sl
	s.mu.Unlock()
}

func (s *Service) applyRollout(e jetstream.KeyValueEntry) {
	name := s.nameOf(e)
	if name == "" || !s.rolloutsKV.advance(name, e.Revision()) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		app, id, _ := strings.Cut(name, "/")
		s.mu.Lock()
		s.forgetRolloutLocked(app, id)
		s.mu.Unlock()
		return
	}
	r, err := s.rolloutsKV.decode(e)
	if err != nil {
		s.log.Error("stored rollout does not decode; skipped", "err", err)
		return
	}
	s.mu.Lock()
	s.addRolloutLocked(r)
	s.mu.Unlock()
}

// forgetRolloutLocked drops a rollout another replica pushed out.
func (s *Service) forgetRolloutLocked(app, id string) {
	list := s.rollouts[app]
	for i, r := range list {
		if r.GetId() == id {
			s.rollouts[app] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(s.rollouts[app]) == 0 {
		delete(s.rollouts, app)
	}
}

// applyAlert takes an alert state stored by any replica (or this one)
// unless this replica knows a newer one.
func (s *Service) applyAlert(e jetstream.KeyValueEntry) {
	id := s.nameOf(e)
	if id == "" {
		return
	}
	var a *monitorv1.Alert
	if e.Operation() == jetstream.KeyValuePut {
		var err error
		if a, err = s.alertsKV.decode(e); err != nil {
			s.log.Error("stored alert does not decode; skipped", "err", err)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.alertsKV.advance(id, e.Revision()) {
		return
	}
	s.adoptAlertLocked(id, a)
}

// adoptAlertLocked makes a (nil: deleted) the alert id; s.mu must be held.
func (s *Service) adoptAlertLocked(id string, a *monitorv1.Alert) {
	if old := s.alerts[id]; old != nil && isActive(old) {
		k := keyOf(old)
		if s.active[k] == id {
			delete(s.active, k)
		}
	}
	if a == nil {
		delete(s.alerts, id)
		return
	}
	if a.GetState() == monitorv1.AlertState_ALERT_STATE_RESOLVED && a.GetResolvedAt().AsTime().Before(time.Now().Add(-s.cfg.AlertHistory)) {
		delete(s.alerts, id)
		return
	}
	s.alerts[id] = a
	if isActive(a) {
		s.active[keyOf(a)] = id
	}
}

// reloadAlert reads alert id from the bucket after a write found it
// changed, so the next evaluation starts from the stored state.
func (s *Service) reloadAlert(ctx context.Context, id string) {
	a, rev, ok, err := s.alertsKV.get(ctx, id)
	if err != nil {
		s.log.Warn("reload alert", "alert", id, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.adoptAlertLocked(id, nil)
		return
	}
	if s.alertsKV.advance(id, rev) {
		s.adoptAlertLocked(id, a)
	}
}

// writeAlert stores a if its entry is still at rev, the revision its
// change was based on. A stale write reloads the alert and reports
// errStale: the transition did not happen.
func (s *Service) writeAlert(ctx context.Context, a *monitorv1.Alert, rev uint64) error {
	_, err := s.alertsKV.write(ctx, a.GetId(), a, rev)
	if errors.Is(err, errStale) {
		s.log.Info("alert changed elsewhere (another replica or an acknowledgement); reloaded", "alert", a.GetId())
		s.reloadAlert(ctx, a.GetId())
	}
	return err
}

func (s *Service) applyRuleGroup(e jetstream.KeyValueEntry) {
	name := s.nameOf(e)
	if name == "" {
		return
	}
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	if !s.ruleGroups.advance(name, e.Revision()) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.removeGroup(name)
		return
	}
	g, err := s.ruleGroups.decode(e)
	if err != nil {
		s.log.Error("stored rule group does not decode; skipped", "err", err)
		return
	}
	if cur, ok := s.groupSpec(name); ok && proto.Equal(cur, g) {
		return
	}
	if err := s.installGroup(g); err != nil {
		s.log.Error("stored rule group no longer valid; skipped", "group", name, "err", err)
	}
}

func (s *Service) applyReceiver(e jetstream.KeyValueEntry) {
	name := s.nameOf(e)
	if name == "" || !s.receiverKV.advance(name, e.Revision()) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.stopReceiverLoop(name)
		return
	}
	r, err := s.receiverKV.decode(e)
	if err != nil {
		s.log.Error("stored receiver does not decode; skipped", "err", err)
		return
	}
	s.mu.Lock()
	cur := s.receivers[name]
	same := cur != nil && proto.Equal(cur.spec, r)
	s.mu.Unlock()
	if !same {
		s.startReceiver(r)
	}
}

func (s *Service) applyTarget(e jetstream.KeyValueEntry) {
	name := s.nameOf(e)
	if name == "" || !s.targetsKV.advance(name, e.Revision()) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.stopScrape(name)
		return
	}
	t, err := s.targetsKV.decode(e)
	if err != nil {
		s.log.Error("stored scrape target does not decode; skipped", "err", err)
		return
	}
	s.mu.Lock()
	cur := s.targets[name]
	same := cur != nil && proto.Equal(cur.spec, t)
	s.mu.Unlock()
	if !same {
		s.startScrape(t)
	}
}

// runShard is the Work of one shard: evaluate its rule groups and scrape
// its targets until ctx ends (shard lost or handed over), then stop them.
func (s *Service) runShard(ctx context.Context, n int) {
	wctx, cancel := context.WithTimeout(ctx, catchUpWait)
	for _, m := range []*kvwatch.Mirror{s.alertsKV.mirror, s.ruleGroups.mirror} {
		if err := m.CaughtUp(wctx); err != nil && ctx.Err() == nil {
			s.log.Warn("taking a shard with mirrors behind", "shard", n, "err", err)
		}
	}
	cancel()
	if ctx.Err() != nil {
		return
	}

	// The previous holder's leftovers: transitions stored but perhaps not
	// announced, and alerts of rules that went away meanwhile.
	type leftover struct {
		alert *monitorv1.Alert
		rev   uint64
	}
	var unannounced, orphans []leftover
	now := time.Now()
	s.mu.Lock()
	s.owned[n] = ctx
	for id, a := range s.alerts {
		if s.shardOf(a.GetRuleGroup()) != n {
			continue
		}
		if isActive(a) && !s.ruleExistsLocked(a) {
			c := proto.CloneOf(a)
			c.State, c.ResolvedAt, c.KeepFiringSince = monitorv1.AlertState_ALERT_STATE_RESOLVED, timestamppb.New(now), nil
			c.SilencedBy = s.silencedByLocked(c.GetLabels(), now)
			orphans = append(orphans, leftover{c, s.alertsKV.rev(id)})
			continue
		}
		if needsAnnouncement(a) {
			unannounced = append(unannounced, leftover{proto.CloneOf(a), s.alertsKV.rev(id)})
		}
	}
	s.mu.Unlock()
	for _, o := range orphans {
		s.log.Info("alert of a rule that is gone resolved on takeover", "alert", o.alert.GetId(), "rule", o.alert.GetRule())
		s.commit(ctx, o.alert, transResolved, o.rev)
	}
	for _, u := range unannounced {
		s.announce(ctx, u.alert, transitionOf(u.alert))
	}

	s.mu.Lock()
	groups, targets := 0, 0
	for name, g := range s.groups {
		if s.shardOf(name) == n && g.loop == nil {
			s.startGroupLocked(ctx, g)
			groups++
		}
	}
	for name, st := range s.targets {
		if s.shardOf(name) == n && st.loop == nil && !st.spec.GetDisabled() {
			s.startScrapeLocked(ctx, st)
			targets++
		}
	}
	s.mu.Unlock()
	s.log.Debug("shard taken", "shard", n, "rule_groups", groups, "scrape_targets", targets)

	<-ctx.Done()
	var loops []*loopHandle
	s.mu.Lock()
	delete(s.owned, n)
	for name, g := range s.groups {
		if s.shardOf(name) == n && g.loop != nil {
			loops = append(loops, g.loop)
			g.loop = nil
			for _, r := range g.rules {
				delete(s.ruleStatus, r.spec.GetName())
			}
		}
	}
	for name, st := range s.targets {
		if s.shardOf(name) == n && st.loop != nil {
			loops = append(loops, st.loop)
			st.loop = nil
		}
	}
	s.mu.Unlock()
	for _, h := range loops {
		h.stop()
	}
	s.log.Debug("shard handed over", "shard", n)
}

// ruleExistsLocked reports whether a's rule is still in its group with the
// expression a was raised by.
func (s *Service) ruleExistsLocked(a *monitorv1.Alert) bool {
	g := s.groups[a.GetRuleGroup()]
	if g == nil {
		return false
	}
	for _, r := range g.rules {
		if r.spec.GetName() == a.GetRule() {
			return r.expr == a.GetExpr() && !r.spec.GetDisabled()
		}
	}
	return false
}
