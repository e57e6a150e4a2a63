package monitor

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// group is an installed rule group with its evaluation loop.
type group struct {
	spec     *monitorv1.RuleGroup
	rules    []*compiledRule
	interval time.Duration
	// loop is the evaluation loop, nil unless this replica holds the
	// group's shard.
	loop *loopHandle
	// wake asks for an evaluation now: samples of a metric the group's
	// rules read were pushed.
	wake chan struct{}
	// metrics the group's rules read (metric names of their selectors).
	metrics []string
}

// evalBuffers are what evaluating a group's rules reuses from one
// evaluation to the next; each group's loop has its own.
type evalBuffers struct {
	reader *tsstore.Reader
	vec    promql.Vector

	// What applyAlerts reuses from one evaluation to the next, so an alert
	// that stays as it was costs no allocation: the candidates, the
	// builders, and the label sets made in the last evaluation and this
	// one, by rule and hash.
	cands                 map[uint64]candidate
	builder               *labels.Builder
	scratchB              labels.ScratchBuilder
	scratch               labels.Labels
	labelsPrev, labelsCur map[activeKey]labels.Labels
}

func (s *Service) newEvalBuffers() *evalBuffers {
	return &evalBuffers{
		reader: s.db.NewReader(), cands: map[uint64]candidate{}, builder: labels.NewBuilder(labels.EmptyLabels()),
		labelsPrev: map[activeKey]labels.Labels{}, labelsCur: map[activeKey]labels.Labels{},
	}
}

// alertLabels returns the label set b holds and its hash: the one made for
// rule in this or the last evaluation when it is the same, else a new one.
func (buf *evalBuffers) alertLabels(rule string, b *labels.Builder) (labels.Labels, uint64) {
	buf.scratchB.Reset()
	b.Range(func(l labels.Label) { buf.scratchB.Add(l.Name, l.Value) })
	buf.scratchB.Sort()
	buf.scratchB.Overwrite(&buf.scratch)
	key := activeKey{rule: rule, fp: buf.scratch.Hash()}
	if ls, ok := buf.labelsCur[key]; ok && labels.Equal(ls, buf.scratch) {
		return ls, key.fp
	}
	ls, ok := buf.labelsPrev[key]
	if !ok || !labels.Equal(ls, buf.scratch) {
		ls = buf.scratch.Copy()
	}
	buf.labelsCur[key] = ls
	return ls, key.fp
}

// endEval forgets the label sets no alert used in the evaluation that
// ended.
func (buf *evalBuffers) endEval() {
	buf.labelsPrev, buf.labelsCur = buf.labelsCur, buf.labelsPrev
	clear(buf.labelsCur)
}

// minWakeSpacing bounds push-triggered evaluations of one group.
const minWakeSpacing = 100 * time.Millisecond

// ruleMetrics lists the metric names the selectors of expr name.
func (s *Service) ruleMetrics(expr string) []string {
	e, err := s.db.Parser().ParseExpr(expr)
	if err != nil {
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// wakeGroupsReading wakes the groups whose rules read any of the metrics
// named in series, so a threshold crossing is seen without waiting for the
// next interval.
func (s *Service) wakeGroupsReading(names func(yield func(string) bool)) {
	wp := s.watch.Load()
	if wp == nil || len(*wp) == 0 {
		return
	}
	watch := *wp
	last := ""
	for n := range names {
		if n == last {
			continue
		}
		last = n
		for _, g := range watch[n] {
			select {
			case g.wake <- struct{}{}:
			default:
			}
		}
	}
}

// rebuildWatchLocked recomputes the metric → groups index.
func (s *Service) rebuildWatchLocked() {
	w := map[string][]*group{}
	for _, g := range s.groups {
		for _, m := range g.metrics {
			w[m] = append(w[m], g)
		}
	}
	s.watch.Store(&w)
}

// activeKey finds a rule's active alert by the hash of its labels (the
// number its fingerprint spells in hex), so an evaluation looks alerts up
// without making a string per series.
type activeKey struct {
	rule string
	fp   uint64
}

// keyOf is a's key; a fingerprint that is not 16 hex digits (never made
// here) is hashed instead, so the alert still resolves when its rule no
// longer matches it.
func keyOf(a *monitorv1.Alert) activeKey {
	fp, err := strconv.ParseUint(a.GetFingerprint(), 16, 64)
	if err != nil || len(a.GetFingerprint()) != 16 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(a.GetFingerprint()))
		fp = h.Sum64()
	}
	return activeKey{rule: a.GetRule(), fp: fp}
}

// transition is what happened to an alert in one evaluation.
type transition int

const (
	transNone transition = iota
	// transPersist changes durable state without a notification (the
	// keep_firing_for timer starting or stopping).
	transPersist
	transPending
	transFiring
	transResolved
)

func isActive(a *monitorv1.Alert) bool {
	return a.GetState() == monitorv1.AlertState_ALERT_STATE_PENDING || a.GetState() == monitorv1.AlertState_ALERT_STATE_FIRING
}

// transitionOf is the notifying transition that led to a's current state.
func transitionOf(a *monitorv1.Alert) transition {
	switch a.GetState() {
	case monitorv1.AlertState_ALERT_STATE_FIRING:
		return transFiring
	case monitorv1.AlertState_ALERT_STATE_RESOLVED:
		return transResolved
	}
	return transPending
}

// needsAnnouncement says a's firing or resolution may not have been
// published: its last notification is older than the transition.
func needsAnnouncement(a *monitorv1.Alert) bool {
	var at *timestamppb.Timestamp
	switch a.GetState() {
	case monitorv1.AlertState_ALERT_STATE_FIRING:
		at = a.GetFiredAt()
	case monitorv1.AlertState_ALERT_STATE_RESOLVED:
		at = a.GetResolvedAt()
	default:
		return false
	}
	last := a.GetLastNotificationTime()
	return last == nil || last.AsTime().Before(at.AsTime())
}

// alertID names an episode: the series' fingerprint and the moment it
// became active, so the same episode always has the same id.
func alertID(fingerprint string, activeAt time.Time) string {
	return fingerprint + "-" + strconv.FormatInt(activeAt.UnixMilli(), 10)
}

// eventID is the id of the event announcing tr of alert a; publishing it
// twice (after a restart) is dropped by the stream's de-duplication.
func eventID(a *monitorv1.Alert, tr transition) string {
	kind := map[transition]string{transPending: "pending", transFiring: "firing", transResolved: "resolved"}[tr]
	return "monitor-alert-" + a.GetId() + "-" + kind
}

// installGroup compiles g and (re)starts its evaluation loop when this
// replica evaluates it. Alerts of rules that disappeared or whose
// condition changed resolve (by the evaluating replica).
func (s *Service) installGroup(g *monitorv1.RuleGroup) error {
	rules, interval, err := s.compileGroup("rule_group", g)
	if err != nil {
		return err
	}
	ng := &group{spec: g, rules: rules, interval: interval, wake: make(chan struct{}, 1)}
	seen := map[string]bool{}
	for _, r := range rules {
		if r.spec.GetDisabled() || r.recording {
			continue
		}
		for _, m := range s.ruleMetrics(r.expr) {
			if !seen[m] {
				seen[m] = true
				ng.metrics = append(ng.metrics, m)
			}
		}
	}
	s.mu.Lock()
	old := s.groups[g.GetName()]
	s.groups[g.GetName()] = ng
	s.rebuildWatchLocked()
	keep := map[string]string{}
	for _, r := range rules {
		s.ruleGroup[r.spec.GetName()] = g.GetName()
		keep[r.spec.GetName()] = r.expr
	}
	var gone []string
	var oldLoop *loopHandle
	if old != nil {
		for _, r := range old.rules {
			expr, still := keep[r.spec.GetName()]
			if !still {
				delete(s.ruleGroup, r.spec.GetName())
				delete(s.ruleStatus, r.spec.GetName())
			}
			if !still || expr != r.expr {
				gone = append(gone, r.spec.GetName())
			}
		}
		oldLoop, old.loop = old.loop, nil
	}
	s.mu.Unlock()
	oldLoop.stop()
	if s.evaluates(g.GetName()) {
		for _, r := range gone {
			s.resolveRule(s.runCtx, r, time.Now())
		}
	}
	s.mu.Lock()
	if ctx, ok := s.ownsLocked(g.GetName()); ok && s.groups[g.GetName()] == ng && ng.loop == nil {
		s.startGroupLocked(ctx, ng)
	}
	s.mu.Unlock()
	return nil
}

// startGroupLocked starts g's evaluation loop under ctx (its shard's
// holding); s.mu must be held.
func (s *Service) startGroupLocked(ctx context.Context, g *group) {
	g.loop = s.startLoop(ctx, func(ctx context.Context) { s.runGroup(ctx, g) })
}

// removeGroup stops a group and resolves its alerts (when this replica
// evaluates it).
func (s *Service) removeGroup(name string) {
	s.mu.Lock()
	g := s.groups[name]
	delete(s.groups, name)
	s.rebuildWatchLocked()
	var loop *loopHandle
	if g != nil {
		for _, r := range g.rules {
			delete(s.ruleGroup, r.spec.GetName())
			delete(s.ruleStatus, r.spec.GetName())
		}
		loop, g.loop = g.loop, nil
	}
	_, evaluates := s.ownsLocked(name)
	s.mu.Unlock()
	if g == nil {
		return
	}
	loop.stop()
	if !evaluates {
		return
	}
	for _, r := range g.rules {
		s.resolveRule(s.runCtx, r.spec.GetName(), time.Now())
	}
}

// runGroup evaluates g every interval, and also the moment a pending alert's
// `for` or a keep_firing_for ends, so firing is not delayed to the next tick.
func (s *Service) runGroup(ctx context.Context, g *group) {
	buf := s.newEvalBuffers()
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now().Add(g.interval)
	var last time.Time
	for {
		woken := false
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-g.wake:
			woken = true
			if wait := minWakeSpacing - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		now := time.Now()
		last = now
		// A push-triggered evaluation runs the alerting rules only;
		// recording rules keep the group's interval.
		s.evalGroup(ctx, g, now, woken && now.Before(next), buf)
		if !now.Before(next) {
			next = next.Add(g.interval * (now.Sub(next)/g.interval + 1))
		}
		wake := next
		if d := s.nextDeadline(g); !d.IsZero() && d.Before(wake) {
			wake = d
		}
		timer.Reset(max(time.Until(wake), 5*time.Millisecond))
	}
}

// nextDeadline is the earliest moment an alert of g changes state without
// its condition changing.
func (s *Service) nextDeadline(g *group) time.Time {
	var d time.Time
	earlier := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range g.rules {
		if r.recording || r.spec.GetDisabled() {
			continue
		}
		for k, id := range s.active {
			if k.rule != r.spec.GetName() {
				continue
			}
			a := s.alerts[id]
			if a.GetState() == monitorv1.AlertState_ALERT_STATE_PENDING {
				earlier(a.GetActiveAt().AsTime().Add(r.forDur))
			} else if a.GetKeepFiringSince() != nil {
				earlier(a.GetKeepFiringSince().AsTime().Add(r.keepFor))
			}
		}
	}
	return d
}

func (s *Service) evalGroup(ctx context.Context, g *group, now time.Time, alertsOnly bool, buf *evalBuffers) {
	defer buf.endEval()
	for _, r := range g.rules {
		if ctx.Err() != nil {
			return
		}
		if alertsOnly && r.recording {
			continue
		}
		if r.spec.GetDisabled() {
			s.resolveRule(ctx, r.spec.GetName(), now)
			continue
		}
		start := time.Now()
		vec, err := s.evalRule(ctx, r, now, buf)
		st := &monitorv1.RuleStatus{
			Health: monitorv1.RuleHealth_RULE_HEALTH_OK, EffectiveExpr: r.expr,
			LastEvaluationTime: timestamppb.New(now), EvaluationDuration: durationpb.New(time.Since(start)),
		}
		if err != nil {
			st.Health, st.LastError = monitorv1.RuleHealth_RULE_HEALTH_ERROR, err.Error()
			s.log.Warn("rule evaluation failed", "rule", r.spec.GetName(), "group", g.spec.GetName(), "err", err)
		}
		s.mu.Lock()
		s.ruleStatus[r.spec.GetName()] = st
		s.mu.Unlock()
		if err != nil {
			continue
		}
		if r.recording {
			s.record(ctx, g, r, vec, now)
			continue
		}
		s.applyAlerts(ctx, g, r, vec, now, buf)
	}
}

// evalRule evaluates r's expression at ts: straight from the store when it
// has a direct plan (threshold rules, and PromQL alerts of the same shape),
// else with the PromQL engine. The vector is buf's, valid until the next
// evaluation with buf.
func (s *Service) evalRule(ctx context.Context, r *compiledRule, ts time.Time, buf *evalBuffers) (promql.Vector, error) {
	if r.plan == nil {
		return s.evalExpr(ctx, r.expr, ts)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	var err error
	buf.vec, err = r.plan.Eval(ctx, buf.reader, ts, buf.vec)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", r.expr, err)
	}
	return buf.vec, nil
}

func (s *Service) evalExpr(ctx context.Context, expr string, ts time.Time) (promql.Vector, error) {
	return s.queryFunc()(ctx, expr, ts)
}

// record writes a recording rule's result as series named by the rule.
func (s *Service) record(ctx context.Context, g *group, r *compiledRule, vec promql.Vector, now time.Time) {
	app := s.db.Appender(ctx)
	b := labels.NewBuilder(labels.EmptyLabels())
	var shared []ingest.Series
	for _, smp := range vec {
		if smp.H != nil {
			continue
		}
		b.Reset(smp.Metric)
		for k, v := range g.spec.GetLabels() {
			b.Set(k, v)
		}
		for k, v := range r.spec.GetLabels() {
			b.Set(k, v)
		}
		b.Set(model.MetricNameLabel, r.spec.GetRecord())
		ls := b.Labels()
		if _, err := app.Append(0, ls, now.UnixMilli(), smp.F); err != nil {
			s.log.Debug("recording rule sample refused", "rule", r.spec.GetName(), "err", err)
			continue
		}
		shared = append(shared, seriesOf(ls, now.UnixMilli(), smp.F))
	}
	if err := app.Commit(); err != nil {
		s.log.Warn("recording rule commit", "rule", r.spec.GetName(), "err", err)
		return
	}
	s.share(ctx, shared)
}

// candidate is one series of an alerting rule's result.
type candidate struct {
	labels labels.Labels
	// annotations expanded for this series; nil when the rule's
	// annotations hold no template (they are the rule's own then).
	annotations map[string]string
	value       float64
}

// fingerprint names a label set: the hash as 16 hex digits.
func fingerprint(h uint64) string {
	var b [16]byte
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = digits[h&0xf]
		h >>= 4
	}
	return string(b[:])
}

// sameLabels reports whether m holds exactly ls.
func sameLabels(m map[string]string, ls labels.Labels) bool {
	if len(m) != ls.Len() {
		return false
	}
	same := true
	ls.Range(func(l labels.Label) {
		if same {
			v, ok := m[l.Name]
			same = ok && v == l.Value
		}
	})
	return same
}

// applyAlerts runs the alert state machine of rule r over its result. An
// alert that stays as it was costs its fingerprint and a look-up: its label
// map (fixed by the fingerprint) and annotations without templates are
// kept, not rebuilt.
func (s *Service) applyAlerts(ctx context.Context, g *group, r *compiledRule, vec promql.Vector, now time.Time, buf *evalBuffers) {
	cands := buf.cands
	clear(cands)
	b := buf.builder
	for _, smp := range vec {
		if smp.H != nil {
			continue
		}
		var seriesLabels map[string]string
		if r.templated {
			seriesLabels = smp.Metric.Map()
		}
		b.Reset(smp.Metric)
		b.Del(model.MetricNameLabel)
		for k, v := range g.spec.GetLabels() {
			b.Set(k, v)
		}
		for k, v := range r.spec.GetLabels() {
			b.Set(k, s.expand(ctx, r.spec.GetName(), v, seriesLabels, smp, now))
		}
		b.Set(labels.AlertName, r.alertName)
		ls, fp := buf.alertLabels(r.spec.GetName(), b)
		if _, dup := cands[fp]; dup {
			continue
		}
		c := candidate{labels: ls, value: smp.F}
		if r.templatedAnnotations {
			c.annotations = make(map[string]string, len(r.spec.GetAnnotations()))
			for k, v := range r.spec.GetAnnotations() {
				c.annotations[k] = s.expand(ctx, r.spec.GetName(), v, seriesLabels, smp, now)
			}
		}
		cands[fp] = c
	}

	type change struct {
		alert *monitorv1.Alert
		tr    transition
		rev   uint64 // the stored revision the change is based on
	}
	var changes []change
	nowPB := timestamppb.New(now)
	s.mu.Lock()
	for fp, c := range cands {
		key := activeKey{rule: r.spec.GetName(), fp: fp}
		a := s.alerts[s.active[key]]
		tr := transNone
		if a == nil {
			fps := fingerprint(fp)
			a = &monitorv1.Alert{
				Id: alertID(fps, now), Fingerprint: fps, State: monitorv1.AlertState_ALERT_STATE_PENDING,
				Rule: r.spec.GetName(), RuleGroup: g.spec.GetName(), Expr: r.expr, ActiveAt: nowPB,
			}
			a.GeneratorUrl = s.generatorURL(a.GetId())
			tr = transPending
			s.alerts[a.GetId()] = a
			s.active[key] = a.GetId()
		}
		if !sameLabels(a.GetLabels(), c.labels) {
			a.Labels = c.labels.Map()
		}
		switch {
		case c.annotations != nil:
			a.Annotations = c.annotations
		case !maps.Equal(a.GetAnnotations(), r.spec.GetAnnotations()):
			a.Annotations = maps.Clone(r.spec.GetAnnotations())
		}
		a.Value, a.LastEvaluationTime = c.value, nowPB
		if a.GetDeploy() == nil {
			a.Deploy = s.deployContextLocked(a)
		}
		if a.GetKeepFiringSince() != nil {
			a.KeepFiringSince = nil
			tr = max(tr, transPersist)
		}
		if a.GetState() == monitorv1.AlertState_ALERT_STATE_PENDING && !now.Before(a.GetActiveAt().AsTime().Add(r.forDur)) {
			a.State, a.FiredAt = monitorv1.AlertState_ALERT_STATE_FIRING, nowPB
			if d := a.GetDeploy(); d != nil && d.GetRolloutStartTime() != nil {
				d.TimeToFire = durationpb.New(now.Sub(d.GetRolloutStartTime().AsTime()))
			}
			tr = transFiring
		}
		if tr != transNone {
			a.SilencedBy = s.silencedByLocked(a.GetLabels(), now)
			changes = append(changes, change{proto.CloneOf(a), tr, s.alertsKV.rev(a.GetId())})
		}
	}
	for key, id := range s.active {
		if key.rule != r.spec.GetName() {
			continue
		}
		if _, ok := cands[key.fp]; ok {
			continue
		}
		a := s.alerts[id]
		a.LastEvaluationTime = nowPB
		a.Value = math.NaN()
		if a.GetState() == monitorv1.AlertState_ALERT_STATE_FIRING && r.keepFor > 0 {
			if a.GetKeepFiringSince() == nil {
				a.KeepFiringSince = nowPB
				changes = append(changes, change{proto.CloneOf(a), transPersist, s.alertsKV.rev(id)})
				continue
			}
			if now.Before(a.GetKeepFiringSince().AsTime().Add(r.keepFor)) {
				continue
			}
		}
		a.State, a.ResolvedAt = monitorv1.AlertState_ALERT_STATE_RESOLVED, nowPB
		delete(s.active, key)
		a.SilencedBy = s.silencedByLocked(a.GetLabels(), now)
		changes = append(changes, change{proto.CloneOf(a), transResolved, s.alertsKV.rev(id)})
	}
	s.mu.Unlock()
	for _, c := range changes {
		s.commit(ctx, c.alert, c.tr, c.rev)
	}
}

// resolveRule resolves every active alert of a rule (deleted, disabled or
// changed).
func (s *Service) resolveRule(ctx context.Context, rule string, now time.Time) {
	var resolved []*monitorv1.Alert
	var revs []uint64
	s.mu.Lock()
	for key, id := range s.active {
		if key.rule != rule {
			continue
		}
		a := s.alerts[id]
		a.State, a.ResolvedAt, a.KeepFiringSince = monitorv1.AlertState_ALERT_STATE_RESOLVED, timestamppb.New(now), nil
		delete(s.active, key)
		resolved = append(resolved, proto.CloneOf(a))
		revs = append(revs, s.alertsKV.rev(id))
	}
	s.mu.Unlock()
	for i, a := range resolved {
		s.commit(ctx, a, transResolved, revs[i])
	}
}

// commit persists an alert's new state, then announces it. The state is
// written first so a crash never loses a transition that was announced;
// a transition written but not yet announced is announced by whoever
// evaluates the group next (a restart or another replica). The write is
// checked against rev, the stored revision the change was based on: when
// another writer got there first the transition did not happen, the alert
// is reloaded and the next evaluation decides again.
func (s *Service) commit(ctx context.Context, a *monitorv1.Alert, tr transition, rev uint64) {
	if err := s.writeAlert(ctx, a, rev); errors.Is(err, errStale) {
		return
	} else if err != nil {
		s.log.Error("persist alert", "alert", a.GetId(), "err", err)
	}
	if tr == transPersist {
		return
	}
	s.log.Info("alert "+map[transition]string{transPending: "pending", transFiring: "firing", transResolved: "resolved"}[tr],
		"alert", a.GetId(), "alertname", a.GetLabels()[labels.AlertName], "rule", a.GetRule())
	s.announce(ctx, a, tr)
}

// announce publishes tr of a with its deterministic event id, notifies
// webhooks, and records the notification time.
func (s *Service) announce(ctx context.Context, a *monitorv1.Alert, tr transition) {
	var data proto.Message
	var typ string
	switch tr {
	case transPending:
		typ, data = EventAlertPending, &eventsv1.AlertPending{Alert: a}
	case transFiring:
		typ, data = EventAlertFiring, &eventsv1.AlertFiring{Alert: a}
	case transResolved:
		typ, data = EventAlertResolved, &eventsv1.AlertResolved{Alert: a}
	default:
		return
	}
	at := time.Now()
	if _, err := s.events.Publish(ctx, eventbus.Event{Type: typ, Subject: a.GetId(), ID: eventID(a, tr), Data: data}); err != nil {
		s.log.Warn("publish alert event", "alert", a.GetId(), "type", typ, "err", err)
		return
	}
	if tr == transPending {
		return
	}
	if len(a.GetSilencedBy()) == 0 && (tr == transFiring || a.GetFiredAt() != nil) {
		s.notifyReceivers(ctx, a, tr)
	}
	s.mu.Lock()
	cur := s.alerts[a.GetId()]
	var rev uint64
	if cur != nil && cur.GetState() == a.GetState() {
		cur.LastNotificationTime = timestamppb.New(at)
		a, rev = proto.CloneOf(cur), s.alertsKV.rev(cur.GetId())
	} else {
		a = nil
	}
	s.mu.Unlock()
	if a != nil {
		if err := s.writeAlert(ctx, a, rev); err != nil && !errors.Is(err, errStale) {
			s.log.Warn("persist alert notification time", "alert", a.GetId(), "err", err)
		}
	}
}

func (s *Service) generatorURL(id string) string {
	if s.cfg.ExternalURL == "" {
		return ""
	}
	u, err := url.JoinPath(s.cfg.ExternalURL, "alerts", id)
	if err != nil {
		return ""
	}
	return u
}

// alertView returns a copy of a with its silences computed now.
func (s *Service) alertViewLocked(a *monitorv1.Alert, now time.Time) *monitorv1.Alert {
	out := proto.CloneOf(a)
	if isActive(a) {
		out.SilencedBy = s.silencedByLocked(a.GetLabels(), now)
	}
	out.Labels = maps.Clone(a.GetLabels())
	return out
}
