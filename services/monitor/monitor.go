// Package monitor is the monitor service: it ingests metrics (pushed
// batches, Prometheus scrapes, host metrics) into an embedded Prometheus
// TSDB, answers PromQL queries and summaries, evaluates threshold and PromQL
// alert rules, keeps the alert lifecycle (pending, firing, resolved) in a
// JetStream KV bucket so a restart restores it exactly, ties alerts to the
// rollout that preceded them, notifies NATS and webhooks, and runs canary
// analyses for the deployer. Replicas sharing one NATS split rule
// evaluation and scraping between them and take over each other's share
// (replicas.go); every replica holds every sample (fanout.go).
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Name is the service's name in health reports and event sources.
const Name = "monitor"

// Event types this service publishes.
const (
	EventAlertPending      = "opsuite.monitor.alert.pending"
	EventAlertFiring       = "opsuite.monitor.alert.firing"
	EventAlertResolved     = "opsuite.monitor.alert.resolved"
	EventAlertAcknowledged = "opsuite.monitor.alert.acknowledged"
	EventCanaryAnalyzed    = "opsuite.monitor.analysis.completed"
)

// RolloutConsumer is the durable consumer of deployer rollout events.
const RolloutConsumer = "monitor-rollouts"

// Config tunes the service.
type Config struct {
	// DataDir holds the time-series store (in DataDir/tsdb). Required.
	DataDir string
	// Retention of samples; default 15 days.
	Retention time.Duration
	// StoreReplicas is the JetStream replica count of the KV buckets and
	// streams.
	StoreReplicas int
	// ReplicaID names this process among the monitors sharing one NATS
	// (letters, digits, '-', '_', '='); unique among live processes. By
	// default one is made up once and kept in DataDir/replica-id, so a
	// restarted process takes its shards back at once.
	ReplicaID string
	// LeaseTTL of the shard leases: a killed replica's rule groups and
	// scrape targets are taken over about this long after its last
	// renewal; default 10s.
	LeaseTTL time.Duration
	// Shards is the number of shards rule groups and scrape targets are
	// spread over (by name); default lease.DefaultShards. Every replica
	// must use the same number.
	Shards int
	// SampleStreamMaxAge and SampleStreamMaxBytes bound the stream that
	// carries samples between replicas (StreamSamples); defaults 10m and
	// 1 GiB. A replica stopped for longer misses the samples in between.
	SampleStreamMaxAge   time.Duration
	SampleStreamMaxBytes int64
	// DefaultEvalInterval of rule groups that set none; default 15s.
	DefaultEvalInterval time.Duration
	// MinEvalInterval is the shortest group interval accepted; default 1s.
	MinEvalInterval time.Duration
	// AlertHistory is how long resolved alerts stay listed; default 7 days.
	AlertHistory time.Duration
	// QueryTimeout bounds one PromQL evaluation; default 2m.
	QueryTimeout time.Duration
	// HostMetricsInterval is how often CPU and memory usage of this host are
	// recorded; default 15s, negative disables.
	HostMetricsInterval time.Duration
	// ExternalURL is the dashboard's base URL, for alerts' generator_url.
	ExternalURL string
	// WebhookBackoff is the first retry delay of a failed webhook delivery;
	// it doubles up to WebhookMaxBackoff. Defaults 1s and 5m.
	WebhookBackoff, WebhookMaxBackoff time.Duration
	// WebhookMaxAttempts bounds the attempts at one notification, across
	// restarts (besides the receiver's retry_for); default 30.
	WebhookMaxAttempts int
	// WebhookAckWait is how long a notification being delivered by a
	// monitor that stopped answering (killed) waits before another monitor
	// (or the restarted one) takes it; default 15s.
	WebhookAckWait time.Duration
}

// Publisher publishes domain events.
type Publisher interface {
	Publish(ctx context.Context, ev eventbus.Event) (string, error)
}

// Consumer runs durable consumers of other services' events;
// *eventbus.Bus implements it.
type Consumer interface {
	Consume(ctx context.Context, cfg eventbus.ConsumerConfig, h eventbus.Handler) error
}

// Deps are the service's collaborators.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	JetStream  jetstream.JetStream
	Events     Publisher
	// Consumer, when set, feeds deployer rollout events (deploy awareness).
	Consumer Consumer
	// HTTPClient for scrapes and webhooks; a default client when nil.
	HTTPClient *http.Client
}

// Service implements opsuite.monitor.v1.MonitorService.
type Service struct {
	monitorv1.UnimplementedMonitorServiceServer

	cfg      Config
	log      *slog.Logger
	reg      prometheus.Registerer
	js       jetstream.JetStream
	events   Publisher
	consumer Consumer
	http     *http.Client

	db       *tsstore.Store
	decoders sync.Pool
	refs     *ingest.RefCache

	ready   atomic.Bool
	readyCh chan struct{}

	ruleGroups *kvTable[*monitorv1.RuleGroup]
	alertsKV   *kvTable[*monitorv1.Alert]
	silencesKV *kvTable[*monitorv1.Silence]
	targetsKV  *kvTable[*monitorv1.ScrapeTarget]
	receiverKV *kvTable[*monitorv1.Receiver]
	rolloutsKV *kvTable[*deployerv1.Rollout]

	// webhooks queues webhook notifications; webhookSent records those
	// delivered (notify.go).
	webhooks    jetstream.Stream
	webhookSent jetstream.KeyValue

	runCtx context.Context //nolint:containedctx // the Run context, handed to loops started by RPCs
	loops  sync.WaitGroup
	shards *lease.Shards

	// ruleMu serialises changes to rules.
	ruleMu sync.Mutex

	// watch maps a metric name to the groups whose rules read it; pushes
	// read it without taking mu, so ingestion never waits on rule
	// evaluation. Replaced whole (under mu) when groups change.
	watch atomic.Pointer[map[string][]*group]

	// mu guards everything below.
	mu         sync.Mutex
	groups     map[string]*group
	ruleGroup  map[string]string // rule name → group name
	ruleStatus map[string]*monitorv1.RuleStatus
	alerts     map[string]*monitorv1.Alert   // by id: active and resolved within AlertHistory
	active     map[activeKey]string          // active alert id by rule and fingerprint
	silences   map[string]*monitorv1.Silence // by id
	targets    map[string]*scrapeTarget
	receivers  map[string]*receiver
	rollouts   map[string][]*deployerv1.Rollout // by application, oldest first
	// owned holds the context of each shard this replica holds (ended
	// when the shard is lost or handed over); replicas.go.
	owned map[int]context.Context
}

// New builds the service; Run opens the store, restores state and starts
// evaluating.
func New(cfg Config, deps Deps) (*Service, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("monitor: DataDir is required")
	}
	if deps.JetStream == nil {
		return nil, errors.New("monitor: JetStream is required")
	}
	if deps.Events == nil {
		return nil, errors.New("monitor: event publisher is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 15 * 24 * time.Hour
	}
	if cfg.MinEvalInterval <= 0 {
		cfg.MinEvalInterval = time.Second
	}
	if cfg.DefaultEvalInterval <= 0 {
		cfg.DefaultEvalInterval = 15 * time.Second
	}
	cfg.DefaultEvalInterval = max(cfg.DefaultEvalInterval, cfg.MinEvalInterval)
	if cfg.AlertHistory <= 0 {
		cfg.AlertHistory = 7 * 24 * time.Hour
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 2 * time.Minute
	}
	if cfg.HostMetricsInterval == 0 {
		cfg.HostMetricsInterval = 15 * time.Second
	}
	if cfg.WebhookBackoff <= 0 {
		cfg.WebhookBackoff = time.Second
	}
	if cfg.WebhookMaxBackoff <= 0 {
		cfg.WebhookMaxBackoff = 5 * time.Minute
	}
	if cfg.WebhookMaxAttempts <= 0 {
		cfg.WebhookMaxAttempts = 30
	}
	if cfg.WebhookAckWait <= 0 {
		cfg.WebhookAckWait = 15 * time.Second
	}
	if cfg.ReplicaID == "" {
		id, err := lease.KeptHolder(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
		cfg.ReplicaID = id
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = lease.DefaultShardTTL
	}
	if cfg.Shards <= 0 {
		cfg.Shards = lease.DefaultShards
	}
	if cfg.SampleStreamMaxAge <= 0 {
		cfg.SampleStreamMaxAge = 10 * time.Minute
	}
	if cfg.SampleStreamMaxBytes <= 0 {
		cfg.SampleStreamMaxBytes = 1 << 30
	}
	log = log.With("replica", cfg.ReplicaID)
	hc := deps.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	s := &Service{
		cfg: cfg, log: log, reg: deps.Registerer, js: deps.JetStream, events: deps.Events,
		consumer: deps.Consumer, http: hc,
		readyCh:    make(chan struct{}),
		groups:     map[string]*group{},
		ruleGroup:  map[string]string{},
		ruleStatus: map[string]*monitorv1.RuleStatus{},
		alerts:     map[string]*monitorv1.Alert{},
		active:     map[activeKey]string{},
		silences:   map[string]*monitorv1.Silence{},
		targets:    map[string]*scrapeTarget{},
		receivers:  map[string]*receiver{},
		rollouts:   map[string][]*deployerv1.Rollout{},
		owned:      map[int]context.Context{},
	}
	s.refs = ingest.NewRefCache()
	s.decoders.New = func() any { return ingest.NewDecoder(s.refs) }
	return s, nil
}

// Register adds the service to a gRPC server.
//
// PushMetrics and PushMetricsStream are registered with handlers that take
// the request's bytes as they arrived and decode the columnar batch straight
// from them (ingest.Decoder.DecodeWire), instead of unmarshalling a message
// per series first; see wire.go.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	r.RegisterService(wireServiceDesc(), s)
}

// Ready is closed once the store is open and state restored.
func (s *Service) Ready() <-chan struct{} { return s.readyCh }

// Run opens the store, restores rules, alerts, silences, scrape targets and
// receivers, evaluates and scrapes until ctx ends, then closes the store.
func (s *Service) Run(ctx context.Context) error {
	var reg prometheus.Registerer
	if s.reg != nil {
		reg = prometheus.WrapRegistererWithPrefix("opsuite_monitor_", s.reg)
	}
	db, err := tsstore.Open(tsstore.Options{
		Dir: filepath.Join(s.cfg.DataDir, "tsdb"), Retention: s.cfg.Retention,
		QueryTimeout: s.cfg.QueryTimeout, Logger: s.log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	s.db = db
	defer func() {
		if err := db.Close(); err != nil {
			s.log.Warn("close store", "err", err)
		}
	}()
	if err := s.openTables(ctx); err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	leases, err := lease.Open(ctx, s.js, lease.Config{Holder: s.cfg.ReplicaID, Replicas: s.cfg.StoreReplicas, Logger: s.log})
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	s.shards, err = leases.Shards(lease.ShardsConfig{Group: Name, Count: s.cfg.Shards, TTL: s.cfg.LeaseTTL, Work: s.runShard})
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	// Loops end before the store closes (deferred above).
	defer s.loops.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	if err := s.restore(ctx); err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	caughtUp := make(chan struct{})
	s.goLoop(func() { s.followSamples(ctx, caughtUp) })
	select {
	case <-caughtUp:
	case <-ctx.Done():
		return nil
	}
	shardErr := make(chan error, 1)
	s.goLoop(func() { shardErr <- s.shards.Run(ctx) })
	select {
	case <-s.shards.Ready():
	case err := <-shardErr:
		return fmt.Errorf("monitor: %w", err)
	case <-ctx.Done():
		return nil
	}
	s.ready.Store(true)
	close(s.readyCh)
	s.mu.Lock()
	s.log.Info("monitor ready", "rule_groups", len(s.groups), "alerts", len(s.alerts), "shards", len(s.owned), "replicas", s.shards.Members())
	s.mu.Unlock()

	if s.consumer != nil {
		s.goLoop(func() { s.consumeRollouts(ctx) })
	}
	if s.cfg.HostMetricsInterval > 0 {
		s.goLoop(func() { s.hostMetricsLoop(ctx) })
	}
	s.goLoop(func() { s.housekeeping(ctx) })
	s.goLoop(func() { s.repeatLoop(ctx) })
	<-ctx.Done()
	s.loops.Wait()
	select {
	case err := <-shardErr:
		if err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
	default:
	}
	return nil
}

func (s *Service) goLoop(f func()) {
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		f()
	}()
}

func (s *Service) openTables(ctx context.Context) error {
	var err error
	r := s.cfg.StoreReplicas
	if s.ruleGroups, err = openTable(ctx, s.js, BucketRules, "monitor rule groups with their rules", r, func() *monitorv1.RuleGroup { return &monitorv1.RuleGroup{} }); err != nil {
		return err
	}
	if s.alertsKV, err = openTable(ctx, s.js, BucketAlerts, "monitor alerts: active state and recent history", r, func() *monitorv1.Alert { return &monitorv1.Alert{} }); err != nil {
		return err
	}
	if s.silencesKV, err = openTable(ctx, s.js, BucketSilences, "monitor silences", r, func() *monitorv1.Silence { return &monitorv1.Silence{} }); err != nil {
		return err
	}
	if s.targetsKV, err = openTable(ctx, s.js, BucketScrapeTargets, "monitor scrape targets", r, func() *monitorv1.ScrapeTarget { return &monitorv1.ScrapeTarget{} }); err != nil {
		return err
	}
	if s.receiverKV, err = openTable(ctx, s.js, BucketReceivers, "monitor webhook receivers", r, func() *monitorv1.Receiver { return &monitorv1.Receiver{} }); err != nil {
		return err
	}
	if s.rolloutsKV, err = openTable(ctx, s.js, BucketRollouts, "recent rollouts per application, for deploy context", r, func() *deployerv1.Rollout { return &deployerv1.Rollout{} }); err != nil {
		return err
	}
	if err := s.openSampleStream(ctx); err != nil {
		return err
	}
	return s.openWebhookQueue(ctx)
}

func (s *Service) checkReady() error {
	if !s.ready.Load() {
		return ErrNotReady
	}
	return nil
}

// housekeeping prunes resolved alerts and silences that ended more than
// AlertHistory ago.
func (s *Service) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		horizon := time.Now().Add(-s.cfg.AlertHistory)
		var drop []string
		s.mu.Lock()
		for id, a := range s.alerts {
			if a.GetState() == monitorv1.AlertState_ALERT_STATE_RESOLVED && a.GetResolvedAt().AsTime().Before(horizon) {
				delete(s.alerts, id)
				if _, here := s.ownsLocked(a.GetRuleGroup()); here {
					drop = append(drop, id) // once, by the evaluating replica
				}
			}
		}
		var dropSilences []string
		for id, sl := range s.silences {
			if sl.GetEndTime().AsTime().Before(horizon) {
				delete(s.silences, id)
				dropSilences = append(dropSilences, id)
			}
		}
		s.mu.Unlock()
		for _, id := range drop {
			if err := s.alertsKV.delete(ctx, id); err != nil {
				s.log.Warn("prune alert", "alert", id, "err", err)
			}
		}
		for _, id := range dropSilences {
			if err := s.silencesKV.delete(ctx, id); err != nil {
				s.log.Warn("prune silence", "silence", id, "err", err)
			}
		}
	}
}
