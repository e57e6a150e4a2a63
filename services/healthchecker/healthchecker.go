// Package healthchecker is the health-checker service: it checks targets over
// HTTP(S), TCP, gRPC health, exec and pushed heartbeats on a schedule, keeps
// their state with failure and success thresholds, persists targets in a
// JetStream KV bucket, streams transitions to watchers and publishes them as
// events. Replicas sharing one NATS split the targets between them by
// shard leases, each target checked by one replica (see replicas.go).
package healthchecker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/kvwatch"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Name is the service's name in health reports and event sources.
const Name = "healthchecker"

// Event types this service publishes.
const (
	EventTargetChanged    = "opsuite.health.target.changed"
	EventTargetRegistered = "opsuite.health.target.registered"
	EventTargetRemoved    = "opsuite.health.target.removed"
)

// Config tunes the service.
type Config struct {
	// MaxConcurrentChecks bounds checks running at once; default 1024.
	MaxConcurrentChecks int
	// StoreReplicas is the JetStream replica count of the targets bucket.
	StoreReplicas int
	// ReplicaID names this process among the health-checkers sharing one
	// NATS; it must be unique among live processes. Default
	// lease.DefaultHolder().
	ReplicaID string
	// LeaseTTL is how long a replica's claim on its shards of targets lasts
	// without renewal: a killed replica's targets are checked by another
	// about this long after it died. Default 10s.
	LeaseTTL time.Duration
	// Shards is the number of shards targets are spread over (by name);
	// every replica must use the same. Default 32.
	Shards int
}

// Publisher publishes domain events.
type Publisher interface {
	Publish(ctx context.Context, ev eventbus.Event) (string, error)
}

// Deps are the service's collaborators.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	JetStream  jetstream.JetStream
	Events     Publisher
	// ScheduleLag, when set, is told how late each scheduled check started.
	ScheduleLag func(time.Duration)
}

// Service implements opsuite.healthchecker.v1.HealthCheckerService.
type Service struct {
	hcv1.UnimplementedHealthCheckerServiceServer

	cfg         Config
	log         *slog.Logger
	js          jetstream.JetStream
	nc          *nats.Conn
	events      Publisher
	store       *store
	prober      *prober
	hub         *hub
	metrics     *metrics
	scheduleLag func(time.Duration)
	sem         chan struct{}

	ready     atomic.Bool
	readyCh   chan struct{}
	drainOnce sync.Once
	draining  chan struct{}

	mu      sync.RWMutex
	targets map[string]*target      // every target, mirrored from the bucket
	owned   map[int]context.Context // shards this replica checks → their ownership
	runCtx  context.Context         //nolint:containedctx // the Run context, for forwarded requests
	loops   sync.WaitGroup
	// mirror keeps targets current with the bucket; set once Run has
	// loaded it.
	mirror *kvwatch.Mirror
}

// New builds the service; Run loads the stored targets and starts checking.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.JetStream == nil {
		return nil, errors.New("healthchecker: JetStream is required")
	}
	if deps.Events == nil {
		return nil, errors.New("healthchecker: event publisher is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConcurrentChecks <= 0 {
		cfg.MaxConcurrentChecks = 1024
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = lease.DefaultHolder()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.Shards <= 0 {
		cfg.Shards = lease.DefaultShards
	}
	s := &Service{
		cfg:         cfg,
		log:         log.With("replica", cfg.ReplicaID),
		js:          deps.JetStream,
		nc:          deps.JetStream.Conn(),
		events:      deps.Events,
		prober:      newProber(cfg.ReplicaID),
		hub:         newHub(),
		scheduleLag: deps.ScheduleLag,
		sem:         make(chan struct{}, cfg.MaxConcurrentChecks),
		readyCh:     make(chan struct{}),
		draining:    make(chan struct{}),
		targets:     map[string]*target{},
		owned:       map[int]context.Context{},
	}
	s.metrics = newMetrics(s)
	if deps.Registerer != nil {
		if err := s.metrics.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("healthchecker: register metrics: %w", err)
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	hcv1.RegisterHealthCheckerServiceServer(r, s)
}

// Ready is closed once stored targets are loaded and being checked.
func (s *Service) Ready() <-chan struct{} { return s.readyCh }

// Drain ends open Watch streams so a graceful stop of the server does not
// wait on them; checks go on until Run's context ends.
func (s *Service) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// Run mirrors the stored targets, joins the replicas sharing the targets'
// shards, checks the targets of the shards it holds until ctx ends, then
// stops every check, hands its shards back and returns.
func (s *Service) Run(ctx context.Context) error {
	st, err := openStore(ctx, s.js, s.cfg.StoreReplicas)
	if err != nil {
		return fmt.Errorf("healthchecker: %w", err)
	}
	leases, err := lease.Open(ctx, s.js, lease.Config{Holder: s.cfg.ReplicaID, Replicas: s.cfg.StoreReplicas, Logger: s.log})
	if err != nil {
		return fmt.Errorf("healthchecker: %w", err)
	}
	shards, err := leases.Shards(lease.ShardsConfig{Group: Name, Count: s.cfg.Shards, TTL: s.cfg.LeaseTTL, Work: s.runShard})
	if err != nil {
		return fmt.Errorf("healthchecker: %w", err)
	}
	s.mu.Lock()
	s.store = st
	s.runCtx = ctx
	s.mu.Unlock()
	targets, err := kvwatch.StartMirror(ctx, st.kv, s.apply, kvwatch.MirrorConfig{Log: s.log})
	if err != nil {
		return fmt.Errorf("healthchecker: %w", err)
	}
	s.mu.Lock()
	s.mirror = targets
	s.mu.Unlock()

	var wg sync.WaitGroup
	shardErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		targets.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		shardErr <- shards.Run(ctx)
	}()
	select {
	case <-shards.Ready():
	case err := <-shardErr:
		wg.Wait()
		return fmt.Errorf("healthchecker: %w", err)
	case <-ctx.Done():
	}
	s.mu.RLock()
	n := len(s.targets)
	s.mu.RUnlock()
	s.ready.Store(true)
	close(s.readyCh)
	s.log.Info("health-checker ready", "targets", n, "shards", shards.Owned(), "replicas", shards.Members())

	<-ctx.Done()
	wg.Wait()
	s.loops.Wait()
	s.mu.Lock()
	for _, t := range s.targets {
		if t.grpcConn != nil {
			_ = t.grpcConn.Close()
		}
	}
	s.mu.Unlock()
	s.prober.close()
	select {
	case err := <-shardErr:
		if err != nil {
			return fmt.Errorf("healthchecker: %w", err)
		}
	default:
	}
	return nil
}

// stopTarget marks t removed and stops its loop, if it runs here.
func (s *Service) stopTarget(t *target) {
	t.mu.Lock()
	t.removed = true
	t.mu.Unlock()
	s.mu.Lock()
	lp := t.loop
	t.loop = nil
	s.mu.Unlock()
	if lp != nil {
		lp.halt()
	}
	if t.grpcConn != nil {
		_ = t.grpcConn.Close()
	}
}

// transition persists a state change, then publishes it and tells
// watchers: only the replica checking the target does, once per change.
func (s *Service) transition(ctx context.Context, t *target, tr *hcv1.TargetTransition, res *hcv1.CheckResult) {
	tr, ok := s.persistTransition(ctx, t, tr, res)
	if !ok {
		return
	}
	s.log.Info("target state changed", "target", tr.GetName(), "group", tr.GetGroup(),
		"from", tr.GetPreviousState().String(), "to", tr.GetState().String(), "reason", tr.GetResult().GetMessage())
	s.hub.publish(tr)
	if _, err := s.events.Publish(ctx, eventbus.Event{
		Type:    EventTargetChanged,
		Subject: tr.GetName(),
		Data:    &eventsv1.HealthTargetChanged{Transition: tr},
	}); err != nil {
		s.log.Warn("publish transition", "target", tr.GetName(), "err", err)
	}
}

// persistTransition writes t's status after tr. It reports false when the
// transition must not be announced: this replica no longer checks t, t was
// removed or changed, or — after re-applying res to a status another
// replica stored last — the state does not change after all.
func (s *Service) persistTransition(ctx context.Context, t *target, tr *hcv1.TargetTransition, res *hcv1.CheckResult) (*hcv1.TargetTransition, bool) {
	t.persistMu.Lock()
	defer t.persistMu.Unlock()
	for attempt := 0; ; attempt++ {
		if !s.checksHere(t.spec.GetName()) {
			return nil, false
		}
		t.mu.Lock()
		if t.removed {
			t.mu.Unlock()
			return nil, false
		}
		rev := t.revision
		t.mu.Unlock()
		newRev, err := s.store.update(ctx, t.view(), rev)
		if err == nil {
			t.mu.Lock()
			t.revision = newRev
			t.mu.Unlock()
			return tr, true
		}
		if !errors.Is(err, ErrConflict) || attempt == 3 {
			// Watchers and subscribers still learn of it; the stored
			// status catches up at the next transition.
			s.log.Warn("persist target status", "target", tr.GetName(), "err", err)
			return tr, true
		}
		// Another replica wrote last (it checked the target before this
		// one took over): continue from what it stored.
		stored, rev, err := s.store.get(ctx, t.spec.GetName())
		if err != nil {
			s.log.Warn("reload target status", "target", tr.GetName(), "err", err)
			return nil, false
		}
		spec := proto.CloneOf(stored)
		spec.Status = nil
		if !proto.Equal(spec, t.spec) {
			return nil, false // changed meanwhile; its new loop takes over
		}
		t.mu.Lock()
		next := t.status.GetNextCheckTime()
		t.status = stored.GetStatus()
		if t.status == nil {
			t.status = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING}
		}
		t.revision = rev
		prev := t.status.GetState()
		changed := applyResult(t.status, t.spec.GetFailureThreshold(), t.spec.GetSuccessThreshold(), res)
		t.status.NextCheckTime = next
		state := t.status.GetState()
		t.mu.Unlock()
		if !changed {
			return nil, false
		}
		tr.PreviousState, tr.State = prev, state
	}
}

func (s *Service) lookup(name string) (*target, error) {
	if !s.ready.Load() {
		return nil, ErrNotReady
	}
	s.mu.RLock()
	t, ok := s.targets[name]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return t, nil
}

// snapshot returns the targets, optionally of one group, ordered by name.
func (s *Service) snapshot(group string) []*target {
	s.mu.RLock()
	out := make([]*target, 0, len(s.targets))
	for _, t := range s.targets {
		if group == "" || t.spec.GetGroup() == group {
			out = append(out, t)
		}
	}
	s.mu.RUnlock()
	sortTargets(out)
	return out
}

type metrics struct {
	checks *prometheus.CounterVec
	// byKind holds the checks counters resolved once, indexed by outcome.
	byKind map[string][]prometheus.Counter
	lag    prometheus.Histogram
	states *prometheus.Desc
	svc    *Service
}

func newMetrics(s *Service) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsuite_healthchecker_checks_total",
			Help: "Checks run, by kind and outcome.",
		}, []string{"kind", "outcome"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "opsuite_healthchecker_schedule_lag_seconds",
			Help:    "How late scheduled checks started.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1},
		}),
		states: prometheus.NewDesc("opsuite_healthchecker_targets", "Targets by state.", []string{"state"}, nil),
		svc:    s,
		byKind: map[string][]prometheus.Counter{},
	}
	for _, kind := range []string{"http", "tcp", "grpc", "exec", "ttl", "none"} {
		cs := make([]prometheus.Counter, len(hcv1.CheckOutcome_name))
		for o := range cs {
			cs[o] = m.checks.WithLabelValues(kind, hcv1.CheckOutcome(o).String())
		}
		m.byKind[kind] = cs
	}
	return m
}

// checked counts one check of kind with outcome o.
func (m *metrics) checked(kind string, o hcv1.CheckOutcome) {
	if cs := m.byKind[kind]; int(o) >= 0 && int(o) < len(cs) {
		cs[o].Inc()
		return
	}
	m.checks.WithLabelValues(kind, o.String()).Inc()
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.checks, m.lag, m} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Describe and Collect report the count of targets per state.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.states }

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counts := map[hcv1.CheckState]int{}
	for _, t := range m.svc.snapshot("") {
		t.mu.Lock()
		counts[t.status.GetState()]++
		t.mu.Unlock()
	}
	for _, st := range []hcv1.CheckState{hcv1.CheckState_CHECK_STATE_PENDING, hcv1.CheckState_CHECK_STATE_PASSING, hcv1.CheckState_CHECK_STATE_WARNING, hcv1.CheckState_CHECK_STATE_CRITICAL} {
		ch <- prometheus.MustNewConstMetric(m.states, prometheus.GaugeValue, float64(counts[st]), stateLabel(st))
	}
}

func stateLabel(st hcv1.CheckState) string {
	switch st {
	case hcv1.CheckState_CHECK_STATE_PASSING:
		return "passing"
	case hcv1.CheckState_CHECK_STATE_WARNING:
		return "warning"
	case hcv1.CheckState_CHECK_STATE_CRITICAL:
		return "critical"
	}
	return "pending"
}
