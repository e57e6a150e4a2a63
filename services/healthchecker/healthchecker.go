// Package healthchecker is the health-checker service: it checks targets over
// HTTP(S), TCP, gRPC health, exec and pushed heartbeats on a schedule, keeps
// their state with failure and success thresholds, persists targets in a
// JetStream KV bucket, streams transitions to watchers and publishes them as
// events.
package healthchecker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
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
	targets map[string]*target
	runCtx  context.Context //nolint:containedctx // the Run context, handed to target loops started by RPCs
	loops   sync.WaitGroup
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
	s := &Service{
		cfg:         cfg,
		log:         log,
		js:          deps.JetStream,
		events:      deps.Events,
		prober:      newProber(),
		hub:         newHub(),
		scheduleLag: deps.ScheduleLag,
		sem:         make(chan struct{}, cfg.MaxConcurrentChecks),
		readyCh:     make(chan struct{}),
		draining:    make(chan struct{}),
		targets:     map[string]*target{},
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

// Run loads stored targets, checks them until ctx ends, then stops every
// check and returns.
func (s *Service) Run(ctx context.Context) error {
	st, err := openStore(ctx, s.js, s.cfg.StoreReplicas)
	if err != nil {
		return fmt.Errorf("healthchecker: %w", err)
	}
	stored, err := st.loadAll(ctx)
	if err != nil {
		return fmt.Errorf("healthchecker: %w", err)
	}
	s.mu.Lock()
	s.store = st
	s.runCtx = ctx
	for _, e := range stored {
		cc, err := normalize(proto.CloneOf(e.target))
		if err != nil {
			s.log.Error("stored target no longer valid; skipped", "target", e.target.GetName(), "err", err)
			continue
		}
		status := e.target.GetStatus()
		spec := proto.CloneOf(e.target)
		spec.Status = nil
		t, err := newTarget(spec, cc, status, e.revision)
		if err != nil {
			s.log.Error("restore target", "target", spec.GetName(), "err", err)
			continue
		}
		s.startLocked(t)
	}
	n := len(s.targets)
	s.mu.Unlock()
	s.ready.Store(true)
	close(s.readyCh)
	s.log.Info("health-checker ready", "targets", n)

	<-ctx.Done()
	s.loops.Wait()
	s.mu.Lock()
	for _, t := range s.targets {
		if t.grpcConn != nil {
			_ = t.grpcConn.Close()
		}
	}
	s.mu.Unlock()
	s.prober.close()
	return nil
}

// startLocked registers t and starts its loop; s.mu must be held.
func (s *Service) startLocked(t *target) {
	s.targets[t.spec.GetName()] = t
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		s.run(s.runCtx, t)
	}()
}

// stopTarget stops t's loop and waits for it.
func (s *Service) stopTarget(t *target) {
	t.mu.Lock()
	t.removed = true
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	if t.grpcConn != nil {
		_ = t.grpcConn.Close()
	}
}

// transition persists a state change, publishes it and tells watchers.
func (s *Service) transition(ctx context.Context, t *target, tr *hcv1.TargetTransition) {
	s.log.Info("target state changed", "target", tr.GetName(), "group", tr.GetGroup(),
		"from", tr.GetPreviousState().String(), "to", tr.GetState().String(), "reason", tr.GetResult().GetMessage())
	if err := s.persist(ctx, t); err != nil {
		s.log.Warn("persist target status", "target", tr.GetName(), "err", err)
	}
	s.hub.publish(tr)
	if _, err := s.events.Publish(ctx, eventbus.Event{
		Type:    EventTargetChanged,
		Subject: tr.GetName(),
		Data:    &eventsv1.HealthTargetChanged{Transition: tr},
	}); err != nil {
		s.log.Warn("publish transition", "target", tr.GetName(), "err", err)
	}
}

// persist writes t's spec and current status to the store.
func (s *Service) persist(ctx context.Context, t *target) error {
	t.persistMu.Lock()
	defer t.persistMu.Unlock()
	t.mu.Lock()
	if t.removed {
		t.mu.Unlock()
		return nil
	}
	rev := t.revision
	t.mu.Unlock()
	snapshot := t.view()
	newRev, err := s.store.update(ctx, snapshot, rev)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.revision = newRev
	t.mu.Unlock()
	return nil
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
