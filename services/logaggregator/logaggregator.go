// Package logaggregator is the log-aggregator service: it ingests structured
// log records over gRPC and NATS (opsuite.logs.>), makes them durable in a
// JetStream stream used as its write-ahead log, indexes them exactly once
// into compressed column blocks on local disk, and answers filtered queries,
// live tails and error summaries with signatures tied to the application
// revision live when each first appeared.
//
// Write path: Ingest decodes and normalises a batch, publishes the
// validated records to the OPSUITE_LOGS stream in chunk form (see
// internal/record: column-wise, S2-compressed, at most 512 KiB of records
// per message, published asynchronously with the bytes in flight bounded,
// acknowledgements awaited) and answers once JetStream has stored every
// chunk. One indexer reads the stream in order, decodes chunks without
// protobuf, and commits records in groups (every CommitInterval or
// CommitRecords) to a bbolt file, together with the last indexed position,
// so a restart resumes exactly after it: no record is lost or indexed
// twice. Messages published straight to opsuite.logs.> (LogBatch protobuf)
// take the same path. When the stream is recreated behind the index (or
// loses its unsynced tail), the index is rebased: the new stream's messages
// get positions after the indexed ones and are indexed from its first
// message; a deleted stream is recreated by the indexer.
//
// Replicas: any number of processes may share one NATS, each with its own
// data dir and Config.ReplicaID. Each indexes the whole stream into its own
// index, so every replica answers every read. Everything that changes the
// index besides records (deletions, retention policy updates, live
// revisions learnt from deploy events) is written to the same stream as a
// control message (controlSubject) and applied by every indexer at its
// position, so all replicas go through the same sequence of changes. What
// leaves the process happens once: a new signature is announced by the
// replica that claims it in the shared bucket (SharedBucket), indexed
// messages are purged from the stream by the holder of one lease, and only
// below the position every replica has reported (see replicas.go).
//
// Durability: an acknowledged batch is in JetStream's file store (written to
// the operating system before the acknowledgement; JetStream fsyncs on its
// sync interval, every 2 minutes by default, so a process crash loses
// nothing and a power loss is covered by the sync interval). The index is
// fsynced on every commit.
//
// Limits: messages longer than Config.MaxMessageBytes (default 64 KiB) are
// cut at a UTF-8 boundary and marked truncated with their original size;
// see internal/record for the limits on sources, labels and metadata.
package logaggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Name is the service's name in health reports and event sources.
const Name = "logaggregator"

// Stream and subjects of log ingestion.
const (
	StreamName = "OPSUITE_LOGS"
	// SubjectPrefix starts every ingestion subject; the tokens after it
	// name the default source ("." for "/").
	SubjectPrefix = "opsuite.logs."
	// ingestSubject carries batches received over gRPC, whose records all
	// name their source.
	ingestSubject = SubjectPrefix + "_ingest"
)

// Event types this service publishes.
const (
	EventSignatureNew = "opsuite.logaggregator.signature.new"
	EventLogsDeleted  = "opsuite.logaggregator.logs.deleted"
)

// Config tunes the service. Zero values take the defaults.
type Config struct {
	// DataDir holds the index (DataDir/index.db). Required.
	DataDir string
	// ReplicaID names this process among the replicas sharing one NATS:
	// letters, digits, '-', '_' or '='; unique among live replicas and
	// stable across restarts (a restarted replica takes its leases back and
	// its reported position stays its own). Default: an id kept in
	// DataDir/replica-id.
	ReplicaID string
	// StreamReplicas of OPSUITE_LOGS; default 1.
	StreamReplicas int
	// StreamMaxAge and StreamMaxBytes bound the write-ahead stream; what
	// every replica has indexed is purged from it, so these only matter
	// when one falls far behind (or is stopped that long: a replica away
	// longer than StreamMaxAge misses records). Defaults 24h and 4 GiB.
	StreamMaxAge   time.Duration
	StreamMaxBytes int64
	// DuplicateWindow is how long a batch_id is remembered; default 10m.
	DuplicateWindow time.Duration
	// MaxMessageBytes cuts longer messages; default 64 KiB.
	MaxMessageBytes int
	// CommitInterval and CommitRecords bound how long and how many records
	// the indexer gathers before one durable commit; defaults 100ms, 65536.
	CommitInterval time.Duration
	CommitRecords  int
	// BlockRecords caps records per storage block; default 8192.
	BlockRecords int
	// RetentionInterval is how often retention runs, each replica reports
	// its indexed position and the purge of the stream runs; default 1m.
	RetentionInterval time.Duration
	// DefaultRetention applies until a policy is stored; default max age 7 days.
	DefaultRetention time.Duration
	// TailBuffer is how many batches a tail may fall behind before records
	// are dropped for it; default 256.
	TailBuffer int
	// RevisionsConsumer is the durable name of the deploy events consumer;
	// default "logaggregator-revisions". Replicas share it: each event is
	// handled by one of them, which writes the revision to the stream for
	// every indexer.
	RevisionsConsumer string
	// ClaimTimeout is how long a signature claimed by another replica may
	// stay unannounced before this one announces it; default 30s.
	ClaimTimeout time.Duration
	// MaxInflightBytes bounds the bytes of gRPC batches being published to
	// the stream at once (further batches wait); default 64 MiB.
	MaxInflightBytes int64
	// IndexerBufferBytes bounds the stream messages the indexer has fetched
	// and not yet read; default 16 MiB.
	IndexerBufferBytes int
	// UncompressedWAL stores gRPC batches in the stream without S2
	// compression (more stream bytes, less CPU per batch).
	UncompressedWAL bool
}

// Publisher publishes domain events.
type Publisher interface {
	Publish(ctx context.Context, ev eventbus.Event) (string, error)
}

// Consumer runs durable event consumers (an *eventbus.Bus).
type Consumer interface {
	Consume(ctx context.Context, cfg eventbus.ConsumerConfig, h eventbus.Handler) error
}

// Deps are the service's collaborators.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	JetStream  jetstream.JetStream
	// Events publishes signature.new and logs.deleted; optional.
	Events Publisher
	// Deploys consumes opsuite.deploy.> to learn live revisions; optional.
	Deploys Consumer
}

// Service implements opsuite.logaggregator.v1.LogAggregatorService.
type Service struct {
	lav1.UnimplementedLogAggregatorServiceServer

	cfg     Config
	log     *slog.Logger
	js      jetstream.JetStream
	events  Publisher
	deploys Consumer
	dec     *record.Decoder
	hub     *hub
	metrics *metrics

	ready     atomic.Bool
	readyCh   chan struct{}
	drainOnce sync.Once
	draining  chan struct{}

	mu    sync.RWMutex
	store *store.Store

	maxChunk  int
	sigEvents chan store.NewSignature

	// Control messages this replica wrote and waits to see applied, by id.
	ctlMu      sync.Mutex
	ctlWaiters map[string]chan controlResult

	// Ingestion: pooled record slices and chunk encoders, and the budget
	// of bytes being published.
	recPool     sync.Pool
	encPool     sync.Pool
	inflight    *semaphore.Weighted
	maxInflight int64
}

// maxPooledRecords caps the record slices kept for reuse.
const maxPooledRecords = 1 << 16

// New builds the service; Run opens the store and starts indexing.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.JetStream == nil {
		return nil, errors.New("logaggregator: JetStream is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("logaggregator: data dir is required")
	}
	if cfg.ReplicaID != "" {
		if err := lease.CheckHolder(cfg.ReplicaID); err != nil {
			return nil, fmt.Errorf("logaggregator: %w", err)
		}
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.StreamMaxAge, 24*time.Hour)
	def(&cfg.DuplicateWindow, 10*time.Minute)
	def(&cfg.CommitInterval, 100*time.Millisecond)
	def(&cfg.RetentionInterval, time.Minute)
	def(&cfg.DefaultRetention, 7*24*time.Hour)
	def(&cfg.ClaimTimeout, 30*time.Second)
	if cfg.StreamMaxBytes <= 0 {
		cfg.StreamMaxBytes = 4 << 30
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = record.DefaultMaxMessageBytes
	}
	if cfg.CommitRecords <= 0 {
		cfg.CommitRecords = 1 << 16
	}
	if cfg.TailBuffer <= 0 {
		cfg.TailBuffer = 256
	}
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = 64 << 20
	}
	if cfg.IndexerBufferBytes <= 0 {
		cfg.IndexerBufferBytes = 16 << 20
	}
	if cfg.RevisionsConsumer == "" {
		cfg.RevisionsConsumer = "logaggregator-revisions"
	}
	s := &Service{
		cfg:       cfg,
		log:       log,
		js:        deps.JetStream,
		events:    deps.Events,
		deploys:   deps.Deploys,
		dec:       record.NewDecoder(record.Limits{MaxMessageBytes: cfg.MaxMessageBytes}),
		hub:       newHub(cfg.TailBuffer),
		readyCh:   make(chan struct{}),
		draining:  make(chan struct{}),
		maxChunk:  512 << 10,
		sigEvents: make(chan store.NewSignature, 1024),

		ctlWaiters: map[string]chan controlResult{},

		recPool:     sync.Pool{New: func() any { return new([]record.Record) }},
		encPool:     sync.Pool{New: func() any { return new(record.ChunkEncoder) }},
		inflight:    semaphore.NewWeighted(cfg.MaxInflightBytes),
		maxInflight: cfg.MaxInflightBytes,
	}
	if nc := deps.JetStream.Conn(); nc != nil {
		if mp := int(nc.MaxPayload()); mp > 0 && mp/2 < s.maxChunk {
			s.maxChunk = mp / 2
		}
	}
	s.metrics = newMetrics()
	if deps.Registerer != nil {
		if err := s.metrics.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("logaggregator: register metrics: %w", err)
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	lav1.RegisterLogAggregatorServiceServer(r, s)
}

// Ready is closed once the store is open and the indexer has caught up with
// the stream as it was at start.
func (s *Service) Ready() <-chan struct{} { return s.readyCh }

// Drain ends open tails so a graceful stop of the server does not wait on
// them; ingestion and indexing go on until Run's context ends.
func (s *Service) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

func (s *Service) markReady() {
	if s.ready.CompareAndSwap(false, true) {
		close(s.readyCh)
		s.log.Info("log-aggregator ready", "indexed_stream_seq", s.getStore().LastStreamSeq())
	}
}

func (s *Service) getStore() *store.Store {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.store
}

// storeOrErr returns the store once the service serves queries.
func (s *Service) storeOrErr() (*store.Store, error) {
	st := s.getStore()
	if st == nil {
		return nil, ErrNotReady
	}
	return st, nil
}

// ensureStream creates or updates the write-ahead stream.
func (s *Service) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	sc := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Opsuite log ingestion (write-ahead log of the log-aggregator)",
		Subjects:    []string{SubjectPrefix + ">", controlSubject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.cfg.StreamReplicas, 1),
		MaxAge:      s.cfg.StreamMaxAge,
		MaxBytes:    s.cfg.StreamMaxBytes,
		Duplicates:  s.cfg.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
	}
	st, err := s.js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return st, nil
}

// Run opens the store, indexes the stream and applies retention until ctx
// ends.
func (s *Service) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("logaggregator: data dir: %w", err)
	}
	if s.cfg.ReplicaID == "" {
		id, err := lease.KeptHolder(s.cfg.DataDir)
		if err != nil {
			return fmt.Errorf("logaggregator: %w", err)
		}
		s.cfg.ReplicaID = id
	}
	stream, err := s.ensureStream(ctx)
	if err != nil {
		return fmt.Errorf("logaggregator: %w", err)
	}
	sh, err := s.openShared(ctx)
	if err != nil {
		return fmt.Errorf("logaggregator: %w", err)
	}
	st, err := store.Open(filepath.Join(s.cfg.DataDir, "index.db"), store.Options{BlockRecords: s.cfg.BlockRecords})
	if err != nil {
		return fmt.Errorf("logaggregator: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			s.log.Warn("close store", "err", err)
		}
	}()
	if st.Policy() == nil {
		if err := st.SetPolicy(s.defaultPolicy()); err != nil {
			return fmt.Errorf("logaggregator: %w", err)
		}
	}
	s.mu.Lock()
	s.store = st
	s.mu.Unlock()

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	wg.Add(4)
	go func() {
		defer wg.Done()
		if err := s.index(runCtx, stream, st); err != nil && runCtx.Err() == nil {
			select {
			case errc <- err:
			default:
			}
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		s.retain(runCtx, sh, st)
	}()
	go func() {
		defer wg.Done()
		sh.leases.Hold(runCtx, purgeLease, purgeLeaseTTL, func(ctx context.Context) { s.purge(ctx, sh) })
	}()
	go func() {
		defer wg.Done()
		s.publishSignatures(runCtx, sh)
	}()
	if s.deploys != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.followDeploys(runCtx)
		}()
	}
	<-runCtx.Done()
	wg.Wait()
	s.hub.closeAll()
	select {
	case err := <-errc:
		return fmt.Errorf("logaggregator: %w", err)
	default:
	}
	return nil
}

func (s *Service) defaultPolicy() *lav1.RetentionPolicy {
	return &lav1.RetentionPolicy{
		DefaultLimits: &lav1.RetentionLimits{MaxAge: durationpb.New(s.cfg.DefaultRetention)},
		UpdateTime:    timestamppb.Now(),
	}
}

type metrics struct {
	ingested  *prometheus.CounterVec
	rejected  prometheus.Counter
	truncated prometheus.Counter
	indexed   prometheus.Counter
	commits   prometheus.Histogram
	dropped   prometheus.Counter
	removed   prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsuite_logaggregator_ingested_records_total",
			Help: "Records accepted for storage, by path (grpc, nats).",
		}, []string{"path"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsuite_logaggregator_rejected_records_total",
			Help: "Records refused as malformed.",
		}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsuite_logaggregator_truncated_records_total",
			Help: "Records whose message the server cut at the size limit.",
		}),
		indexed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsuite_logaggregator_indexed_records_total",
			Help: "Records committed to the index.",
		}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "opsuite_logaggregator_commit_seconds",
			Help:    "Duration of index commits (including fsync).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsuite_logaggregator_tail_dropped_records_total",
			Help: "Records skipped for tails that read too slowly.",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsuite_logaggregator_retention_removed_records_total",
			Help: "Records removed by retention.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.ingested, m.rejected, m.truncated, m.indexed, m.commits, m.dropped, m.removed} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
