// Package tsstore is the monitor's embedded time-series store: the
// Prometheus TSDB on local disk with retention, a PromQL engine over it and
// the metadata (type, help, unit) of pushed and scraped metrics.
package tsstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/common/model"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// lookbackDelta is how far back the engine's instant vector selectors look
// for a series' latest sample (PromQL's default).
const lookbackDelta = 5 * time.Minute

// Options configure Open.
type Options struct {
	// Dir holds the blocks and write-ahead log.
	Dir string
	// Retention is how long samples are kept; default 15 days.
	Retention time.Duration
	// QueryTimeout bounds one PromQL evaluation; default 2m.
	QueryTimeout time.Duration
	// MaxSamples bounds the samples one query may load; default 50M.
	MaxSamples int
	Logger     *slog.Logger
	// Registerer receives the TSDB's and engine's metrics; nil for none.
	Registerer prometheus.Registerer
}

// Metadata describes a metric name.
type Metadata struct {
	Type string // counter, gauge, histogram, summary or "" (unknown)
	Help string
	Unit string
}

// Store is an open TSDB with its PromQL engine.
type Store struct {
	db      *tsdb.DB
	engine  *promql.Engine
	parser  parser.Parser
	timeout time.Duration

	mu   sync.RWMutex
	meta map[string]Metadata

	latest latest
}

// Open opens (or creates) the store in opts.Dir; it replays the write-ahead
// log, so samples acknowledged before a crash are there again.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("tsstore: directory is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Retention <= 0 {
		opts.Retention = 15 * 24 * time.Hour
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 2 * time.Minute
	}
	if opts.MaxSamples <= 0 {
		opts.MaxSamples = 50_000_000
	}
	to := tsdb.DefaultOptions()
	to.RetentionDuration = opts.Retention.Milliseconds()
	to.WALCompression = "snappy"
	db, err := tsdb.Open(opts.Dir, opts.Logger.With("component", "tsdb"), opts.Registerer, to, nil)
	if err != nil {
		return nil, fmt.Errorf("tsstore: open %s: %w", opts.Dir, err)
	}
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{
		Logger:               opts.Logger.With("component", "promql"),
		Reg:                  opts.Registerer,
		MaxSamples:           opts.MaxSamples,
		Timeout:              opts.QueryTimeout,
		LookbackDelta:        lookbackDelta,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		Parser:               p,
	})
	return &Store{db: db, engine: engine, parser: p, timeout: opts.QueryTimeout, meta: map[string]Metadata{}}, nil
}

// Close flushes and closes the TSDB.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("tsstore: close: %w", err)
	}
	return nil
}

// Parser is the PromQL parser the store's engine uses.
func (s *Store) Parser() parser.Parser { return s.parser }

// Engine is the PromQL engine over the store.
func (s *Store) Engine() *promql.Engine { return s.engine }

// Queryable is the store for PromQL and direct reads.
func (s *Store) Queryable() storage.Queryable { return s.db }

// Appender starts an append transaction. Append through it, not through
// DB(): it keeps the newest sample of each series that Reader uses.
func (s *Store) Appender(ctx context.Context) storage.Appender {
	return s.latest.newAppender(s.db.Appender(ctx))
}

// DB is the underlying TSDB, for tests and benchmarks.
func (s *Store) DB() *tsdb.DB { return s.db }

// SetMetadata records what a metric is; empty fields keep what was known.
func (s *Store) SetMetadata(name string, m Metadata) {
	s.mu.RLock()
	old, ok := s.meta[name]
	s.mu.RUnlock()
	if ok && (m.Type == "" || m.Type == old.Type) && (m.Help == "" || m.Help == old.Help) && (m.Unit == "" || m.Unit == old.Unit) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.meta[name]
	if m.Type != "" {
		cur.Type = m.Type
	}
	if m.Help != "" {
		cur.Help = m.Help
	}
	if m.Unit != "" {
		cur.Unit = m.Unit
	}
	s.meta[name] = cur
}

// Metadata returns what is known about a metric.
func (s *Store) Metadata(name string) Metadata {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.meta[name]
}

// MetricCount is a metric name and its series in the head block.
type MetricCount struct {
	Name   string
	Series uint64
}

// Metrics lists metric names in [mint, maxt] with their head series counts,
// ordered by name.
func (s *Store) Metrics(ctx context.Context, mint, maxt int64) ([]MetricCount, error) {
	q, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, fmt.Errorf("tsstore: querier: %w", err)
	}
	defer q.Close()
	names, _, err := q.LabelValues(ctx, model.MetricNameLabel, nil)
	if err != nil {
		return nil, fmt.Errorf("tsstore: metric names: %w", err)
	}
	counts := map[string]uint64{}
	ir, err := s.db.Head().Index()
	if err == nil {
		defer ir.Close()
		for _, n := range names {
			p, err := ir.Postings(ctx, model.MetricNameLabel, n)
			if err != nil {
				continue
			}
			var c uint64
			for p.Next() {
				c++
			}
			counts[n] = c
		}
	}
	out := make([]MetricCount, 0, len(names))
	for _, n := range names {
		out = append(out, MetricCount{Name: n, Series: counts[n]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
