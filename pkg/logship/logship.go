// Package logship ships a process's log/slog records to the log-aggregator.
//
// A Shipper gathers records from its Handler into batches, writes each batch
// to a spool directory on disk, and sends spooled batches in order with
// Ingest, deleting each once the aggregator has acknowledged it as durable.
// Logging never blocks and never fails because of the aggregator: while it
// is down, batches wait in the spool (bounded by MaxSpoolBytes, oldest
// dropped first and counted) and go out when it is back, with their batch
// id unchanged so a batch whose acknowledgement was lost is stored once.
// Batches left in the spool by a stopped or crashed process are sent by the
// next Shipper on the same directory.
//
// The Handler also passes every record to another handler (stderr, say), so
// the process's own output is unchanged.
package logship

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Client is the part of the aggregator's gRPC client the shipper uses;
// logaggregatorv1.LogAggregatorServiceClient implements it.
type Client interface {
	Ingest(ctx context.Context, in *lav1.IngestRequest, opts ...grpc.CallOption) (*lav1.IngestResponse, error)
}

// Config tunes a Shipper. Zero values take the defaults.
type Config struct {
	// Source of every record, e.g. "deployer". Required.
	Source string
	// Labels of every record, e.g. {"instance": "host-1"}.
	Labels map[string]string
	// SpoolDir holds batches not yet acknowledged. Required; one Shipper
	// per directory.
	SpoolDir string
	// MaxSpoolBytes bounds the spool; beyond it the oldest batches are
	// dropped (and counted). Default 64 MiB.
	MaxSpoolBytes int64
	// QueueSize bounds records held in memory before they reach the spool;
	// beyond it records are dropped (and counted) rather than block the
	// caller. Default 16384.
	QueueSize int
	// BatchRecords and FlushInterval bound a batch; defaults 512 and 200ms.
	BatchRecords  int
	FlushInterval time.Duration
	// Level is the lowest level shipped; default slog.LevelInfo.
	Level slog.Leveler
	// MaxMessageBytes cuts longer messages (marked truncated); default 64 KiB.
	MaxMessageBytes int
	// SendTimeout bounds one Ingest call; default 10s.
	SendTimeout time.Duration
	// SyncSpool fsyncs each spooled batch (survives power loss, not only a
	// process crash); default off.
	SyncSpool bool
	// Logger reports the shipper's own trouble. It must not ship through
	// this Shipper. Default: discard.
	Logger *slog.Logger
}

// Stats counts what the shipper did.
type Stats struct {
	// Sent records acknowledged by the aggregator.
	Sent uint64
	// Dropped records: queue full or spool over its bound.
	Dropped uint64
	// Spooled records waiting on disk.
	Spooled uint64
	// Rejected records the aggregator refused as malformed.
	Rejected uint64
}

// Shipper batches, spools and sends records. Run must be running for records
// to leave memory.
type Shipper struct {
	cfg    Config
	client Client
	log    *slog.Logger
	level  slog.Leveler
	queue  chan *lav1.LogEntry
	idBase string

	mu        sync.Mutex
	files     []spoolFile // oldest first
	spoolSize int64
	nextSeq   uint64
	wake      chan struct{}

	sent, dropped, rejected atomic.Uint64
}

type spoolFile struct {
	name  string
	seq   uint64
	count int
	size  int64
}

// New returns a Shipper sending to client; it reads what an earlier Shipper
// left in cfg.SpoolDir.
func New(cfg Config, client Client) (*Shipper, error) {
	if cfg.Source == "" {
		return nil, errors.New("logship: source is required")
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("logship: spool dir is required")
	}
	if client == nil {
		return nil, errors.New("logship: client is required")
	}
	if cfg.MaxSpoolBytes <= 0 {
		cfg.MaxSpoolBytes = 64 << 20
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 16384
	}
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 512
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 200 * time.Millisecond
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 10
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 10 * time.Second
	}
	level := cfg.Level
	if level == nil {
		level = slog.LevelInfo
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o750); err != nil {
		return nil, fmt.Errorf("logship: spool dir: %w", err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("logship: batch id: %w", err)
	}
	s := &Shipper{
		cfg: cfg, client: client, log: log, level: level,
		queue:  make(chan *lav1.LogEntry, cfg.QueueSize),
		idBase: cfg.Source + "-" + hex.EncodeToString(rnd[:]),
		wake:   make(chan struct{}, 1),
	}
	if err := s.loadSpool(); err != nil {
		return nil, err
	}
	return s, nil
}

// Spool files are named <seq>-<count>.batch; seq orders them.
const spoolExt = ".batch"

func (s *Shipper) loadSpool() error {
	entries, err := os.ReadDir(s.cfg.SpoolDir)
	if err != nil {
		return fmt.Errorf("logship: read spool: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(s.cfg.SpoolDir, name))
			continue
		}
		base, ok := strings.CutSuffix(name, spoolExt)
		if !ok {
			continue
		}
		seqStr, countStr, ok := strings.Cut(base, "-")
		seq, err1 := strconv.ParseUint(seqStr, 10, 64)
		count, err2 := strconv.Atoi(countStr)
		info, err3 := e.Info()
		if !ok || err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		s.files = append(s.files, spoolFile{name: name, seq: seq, count: count, size: info.Size()})
		s.spoolSize += info.Size()
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	slices.SortFunc(s.files, func(a, b spoolFile) int { return cmp.Compare(a.seq, b.seq) })
	return nil
}

// Stats returns the counters.
func (s *Shipper) Stats() Stats {
	s.mu.Lock()
	var spooled uint64
	for _, f := range s.files {
		spooled += uint64(f.count)
	}
	s.mu.Unlock()
	return Stats{Sent: s.sent.Load(), Dropped: s.dropped.Load(), Spooled: spooled + uint64(len(s.queue)), Rejected: s.rejected.Load()}
}

// enqueue hands an entry to the batcher without blocking.
func (s *Shipper) enqueue(e *lav1.LogEntry) {
	select {
	case s.queue <- e:
	default:
		s.dropped.Add(1)
	}
}

// Run batches queued records into the spool and sends spooled batches
// until ctx ends; then it writes what is still queued to the spool, for a
// later Shipper on the same directory.
func (s *Shipper) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.send(ctx)
	}()
	s.batch(ctx)
	wg.Wait()
	return nil
}

func (s *Shipper) batch(ctx context.Context) {
	var pending []*lav1.LogEntry
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if err := s.spool(pending); err != nil {
			s.log.Warn("logship: spool batch; records dropped", "records", len(pending), "err", err)
			s.dropped.Add(uint64(len(pending)))
		}
		pending = nil
	}
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case e := <-s.queue:
					pending = append(pending, e)
					if len(pending) >= s.cfg.BatchRecords {
						flush()
					}
				default:
					flush()
					return
				}
			}
		case e := <-s.queue:
			pending = append(pending, e)
			if len(pending) >= s.cfg.BatchRecords {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// spool writes one batch file and makes room under the bound.
func (s *Shipper) spool(entries []*lav1.LogEntry) error {
	s.mu.Lock()
	seq := s.nextSeq
	s.nextSeq++
	s.mu.Unlock()
	b := &lav1.LogBatch{
		BatchId: fmt.Sprintf("%s-%d", s.idBase, seq),
		Streams: []*lav1.LogStream{{Source: s.cfg.Source, Labels: s.cfg.Labels, Entries: entries}},
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	name := fmt.Sprintf("%020d-%d%s", seq, len(entries), spoolExt)
	tmp := filepath.Join(s.cfg.SpoolDir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && s.cfg.SyncSpool {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.cfg.SpoolDir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write spool file: %w", err)
	}
	s.mu.Lock()
	s.files = append(s.files, spoolFile{name: name, seq: seq, count: len(entries), size: int64(len(data))})
	s.spoolSize += int64(len(data))
	for s.spoolSize > s.cfg.MaxSpoolBytes && len(s.files) > 1 {
		old := s.files[0]
		s.files = s.files[1:]
		s.spoolSize -= old.size
		s.dropped.Add(uint64(old.count))
		_ = os.Remove(filepath.Join(s.cfg.SpoolDir, old.name))
		s.log.Warn("logship: spool full; oldest batch dropped", "records", old.count)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// send delivers spooled batches oldest first, retrying with backoff.
func (s *Shipper) send(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		s.mu.Lock()
		var f spoolFile
		ok := len(s.files) > 0
		if ok {
			f = s.files[0]
		}
		s.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		err := s.sendFile(ctx, f)
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("logship: send failed; will retry", "batch", f.name, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Shipper) sendFile(ctx context.Context, f spoolFile) error {
	path := filepath.Join(s.cfg.SpoolDir, f.name)
	data, err := os.ReadFile(path)
	b := &lav1.LogBatch{}
	if err == nil {
		err = proto.Unmarshal(data, b)
	}
	if err != nil {
		// Unreadable (or dropped meanwhile): nothing can be sent from it.
		s.log.Warn("logship: unreadable spool file dropped", "file", f.name, "err", err)
		s.remove(f)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	resp, err := s.client.Ingest(cctx, &lav1.IngestRequest{Batch: b})
	cancel()
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			s.log.Warn("logship: batch refused; dropped", "file", f.name, "err", err)
			s.rejected.Add(uint64(f.count))
			s.remove(f)
			return nil
		}
		return err
	}
	s.rejected.Add(resp.GetRejected())
	s.sent.Add(resp.GetAccepted())
	s.remove(f)
	return nil
}

func (s *Shipper) remove(f spoolFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.files, func(x spoolFile) bool { return x.seq == f.seq })
	if i < 0 {
		return // dropped by the bound meanwhile
	}
	s.files = slices.Delete(s.files, i, i+1)
	s.spoolSize -= f.size
	_ = os.Remove(filepath.Join(s.cfg.SpoolDir, f.name))
}
