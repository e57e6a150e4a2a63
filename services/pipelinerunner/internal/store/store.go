// Package store keeps the pipeline-runner's durable state in JetStream:
// pipelines, pipeline sources by digest, runs (one KV entry per run, written
// with revision checks after every change), secrets, webhook deliveries and
// request ids (24 h), and run output in a stream, one subject per run.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/kvproto"
	"github.com/opsuite/opsuite/pkg/kvwatch"
	"google.golang.org/protobuf/proto"
)

// Bucket and stream names.
const (
	PipelinesBucket  = "opsuite_pipelinerunner_pipelines"
	SourcesBucket    = "opsuite_pipelinerunner_sources"
	RunsBucket       = "opsuite_pipelinerunner_runs"
	SecretsBucket    = "opsuite_pipelinerunner_secrets"
	DeliveriesBucket = "opsuite_pipelinerunner_deliveries"
	LogStream        = "OPSUITE_PIPELINE_LOGS"
	logSubjectPrefix = "pipelinerunner.logs."
	// HeaderRunEnd marks the last line of a run's output.
	HeaderRunEnd = "Opsuite-Run-End"
)

// Sentinel errors.
var (
	ErrNotFound = kvproto.ErrNotFound
	ErrExists   = kvproto.ErrExists
	ErrConflict = kvproto.ErrConflict
)

// Store is the runner's state.
type Store struct {
	js                                          jetstream.JetStream
	pipelines, sources, runs, secrets, delivery jetstream.KeyValue
	logs                                        jetstream.Stream
}

// Open creates the buckets and the log stream if needed.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, logMaxAge time.Duration) (*Store, error) {
	replicas = max(replicas, 1)
	open := func(name, desc string, ttl time.Duration) (jetstream.KeyValue, error) {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: desc, History: 1, TTL: ttl,
			Storage: jetstream.FileStorage, Replicas: replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", name, err)
		}
		return kv, nil
	}
	s := &Store{js: js}
	var err error
	if s.pipelines, err = open(PipelinesBucket, "pipeline-runner pipelines", 0); err != nil {
		return nil, err
	}
	if s.sources, err = open(SourcesBucket, "pipeline sources by sha256", 0); err != nil {
		return nil, err
	}
	if s.runs, err = open(RunsBucket, "pipeline runs, key <pipeline>.<number>", 0); err != nil {
		return nil, err
	}
	if s.secrets, err = open(SecretsBucket, "pipeline secrets", 0); err != nil {
		return nil, err
	}
	if s.delivery, err = open(DeliveriesBucket, "webhook deliveries and RunPipeline request ids seen", 24*time.Hour); err != nil {
		return nil, err
	}
	if logMaxAge <= 0 {
		logMaxAge = 30 * 24 * time.Hour
	}
	s.logs, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: LogStream, Description: "pipeline run output, one subject per run",
		Subjects: []string{logSubjectPrefix + ">"}, Storage: jetstream.FileStorage, Replicas: replicas,
		MaxAge: logMaxAge, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", LogStream, err)
	}
	return s, nil
}

// Versioned is a value with the KV revision it was read at.
type Versioned[T proto.Message] = kvproto.Versioned[T]

var (
	create = kvproto.Create
	update = kvproto.Update
	keys   = kvproto.Keys
)

func get[T proto.Message](ctx context.Context, kv jetstream.KeyValue, key string, v T) (Versioned[T], error) {
	return kvproto.Get(ctx, kv, key, v)
}

func del(ctx context.Context, kv jetstream.KeyValue, key string) error {
	if err := kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s %q: %w", kv.Bucket(), key, err)
	}
	return nil
}

// CreatePipeline stores a new pipeline.
func (s *Store) CreatePipeline(ctx context.Context, p *pb.Pipeline) (uint64, error) {
	return create(ctx, s.pipelines, p.GetName(), p)
}

// Pipeline reads a pipeline.
func (s *Store) Pipeline(ctx context.Context, name string) (Versioned[*pb.Pipeline], error) {
	return get(ctx, s.pipelines, name, &pb.Pipeline{})
}

// UpdatePipeline replaces a pipeline read at rev.
func (s *Store) UpdatePipeline(ctx context.Context, p *pb.Pipeline, rev uint64) (uint64, error) {
	return update(ctx, s.pipelines, p.GetName(), p, rev)
}

// DeletePipeline removes a pipeline record.
func (s *Store) DeletePipeline(ctx context.Context, name string) error {
	return del(ctx, s.pipelines, name)
}

// Pipelines lists pipelines by name.
func (s *Store) Pipelines(ctx context.Context) ([]Versioned[*pb.Pipeline], error) {
	names, err := keys(ctx, s.pipelines, "")
	if err != nil {
		return nil, err
	}
	var out []Versioned[*pb.Pipeline]
	for _, n := range names {
		v, err := s.Pipeline(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// PutSource stores a pipeline source under its digest ("sha256:<hex>").
func (s *Store) PutSource(ctx context.Context, digest, source string) error {
	key := strings.TrimPrefix(digest, "sha256:")
	if _, err := s.sources.Create(ctx, key, []byte(source)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("store source %s: %w", digest, err)
	}
	return nil
}

// Source reads a pipeline source by digest.
func (s *Store) Source(ctx context.Context, digest string) (string, error) {
	e, err := s.sources.Get(ctx, strings.TrimPrefix(digest, "sha256:"))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("source %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("read source %s: %w", digest, err)
	}
	return string(e.Value()), nil
}

// RunID is the id of run number n of pipeline.
func RunID(pipeline string, n int64) string { return pipeline + "-" + strconv.FormatInt(n, 10) }

// ParseRunID splits a run id into pipeline and number.
func ParseRunID(id string) (string, int64, bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || n <= 0 {
		return "", 0, false
	}
	return id[:i], n, true
}

func runKey(id string) (string, error) {
	p, n, ok := ParseRunID(id)
	if !ok {
		return "", fmt.Errorf("run %q: %w", id, ErrNotFound)
	}
	return fmt.Sprintf("%s.%012d", p, n), nil
}

// CreateRun stores a new run.
func (s *Store) CreateRun(ctx context.Context, r *pb.Run) (uint64, error) {
	k, err := runKey(r.GetId())
	if err != nil {
		return 0, err
	}
	return create(ctx, s.runs, k, r)
}

// Run reads a run.
func (s *Store) Run(ctx context.Context, id string) (Versioned[*pb.Run], error) {
	k, err := runKey(id)
	if err != nil {
		return Versioned[*pb.Run]{}, err
	}
	return get(ctx, s.runs, k, &pb.Run{})
}

// UpdateRun replaces a run read at rev.
func (s *Store) UpdateRun(ctx context.Context, r *pb.Run, rev uint64) (uint64, error) {
	k, err := runKey(r.GetId())
	if err != nil {
		return 0, err
	}
	return update(ctx, s.runs, k, r, rev)
}

// DeleteRun removes a run record and its output.
func (s *Store) DeleteRun(ctx context.Context, id string) error {
	k, err := runKey(id)
	if err != nil {
		return err
	}
	if err := s.logs.Purge(ctx, jetstream.WithPurgeSubject(LogSubject(id))); err != nil {
		return fmt.Errorf("purge output of %s: %w", id, err)
	}
	return del(ctx, s.runs, k)
}

// Runs lists the runs of pipeline (all when empty), oldest first per pipeline.
func (s *Store) Runs(ctx context.Context, pipeline string) ([]Versioned[*pb.Run], error) {
	prefix := ""
	if pipeline != "" {
		prefix = pipeline + "."
	}
	ks, err := keys(ctx, s.runs, prefix)
	if err != nil {
		return nil, err
	}
	var out []Versioned[*pb.Run]
	for _, k := range ks {
		v, err := get(ctx, s.runs, k, &pb.Run{})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// WatchRun streams the run's record as it changes, starting with its
// current value.
func (s *Store) WatchRun(ctx context.Context, id string) (jetstream.KeyWatcher, error) {
	k, err := runKey(id)
	if err != nil {
		return nil, err
	}
	w, err := s.runs.Watch(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("watch run %s: %w", id, err)
	}
	return w, nil
}

// MirrorRuns hands every current run record to apply, then (once the
// mirror runs) every change; deletions come as entries whose operation is
// not a put. RunFromEntry decodes a put.
func (s *Store) MirrorRuns(ctx context.Context, apply func(jetstream.KeyValueEntry), log *slog.Logger) (*kvwatch.Mirror, error) {
	m, err := kvwatch.StartMirror(ctx, s.runs, apply, kvwatch.MirrorConfig{Log: log})
	if err != nil {
		return nil, fmt.Errorf("runs: %w", err)
	}
	return m, nil
}

// RunFromEntry decodes a run record from a watched entry.
func RunFromEntry(e jetstream.KeyValueEntry) (*pb.Run, error) {
	r := &pb.Run{}
	if err := proto.Unmarshal(e.Value(), r); err != nil {
		return nil, fmt.Errorf("decode run %s: %w", e.Key(), err)
	}
	return r, nil
}

// CreateSecret stores a new secret.
func (s *Store) CreateSecret(ctx context.Context, sec *pb.Secret) (uint64, error) {
	return create(ctx, s.secrets, sec.GetName(), sec)
}

// Secret reads a secret with its value.
func (s *Store) Secret(ctx context.Context, name string) (Versioned[*pb.Secret], error) {
	return get(ctx, s.secrets, name, &pb.Secret{})
}

// UpdateSecret replaces a secret read at rev.
func (s *Store) UpdateSecret(ctx context.Context, sec *pb.Secret, rev uint64) (uint64, error) {
	return update(ctx, s.secrets, sec.GetName(), sec, rev)
}

// DeleteSecret removes a secret.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	if _, err := s.Secret(ctx, name); err != nil {
		return err
	}
	return del(ctx, s.secrets, name)
}

// Secrets lists secrets by name, with their values.
func (s *Store) Secrets(ctx context.Context) ([]*pb.Secret, error) {
	names, err := keys(ctx, s.secrets, "")
	if err != nil {
		return nil, err
	}
	var out []*pb.Secret
	for _, n := range names {
		v, err := s.Secret(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v.Value)
	}
	return out, nil
}

// Claim records key (a delivery or request id) with value unless it was
// seen in the last 24 h; then it returns the value recorded first.
func (s *Store) Claim(ctx context.Context, key string, value []byte) (prior []byte, fresh bool, err error) {
	_, err = s.delivery.Create(ctx, key, value)
	if err == nil {
		return nil, true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, false, fmt.Errorf("record %s: %w", key, err)
	}
	e, err := s.delivery.Get(ctx, key)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", key, err)
	}
	return e.Value(), false, nil
}

// SetClaim overwrites the value of a claimed key.
func (s *Store) SetClaim(ctx context.Context, key string, value []byte) error {
	if _, err := s.delivery.Put(ctx, key, value); err != nil {
		return fmt.Errorf("record %s: %w", key, err)
	}
	return nil
}

// LogSubject is the subject of a run's output.
func LogSubject(runID string) string {
	p, n, _ := ParseRunID(runID)
	return fmt.Sprintf("%s%s.%d", logSubjectPrefix, p, n)
}

// AppendLog stores one line; end marks the run's last line.
func (s *Store) AppendLog(ctx context.Context, runID string, line *pb.LogLine, end bool) error {
	data, err := proto.Marshal(line)
	if err != nil {
		return fmt.Errorf("encode log line: %w", err)
	}
	msg := &nats.Msg{Subject: LogSubject(runID), Data: data, Header: nats.Header{}}
	if end {
		msg.Header.Set(HeaderRunEnd, "true")
	}
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("store output of %s: %w", runID, err)
	}
	return nil
}

// LastLogSeq returns the seq of the run's last stored line, 0 when none.
func (s *Store) LastLogSeq(ctx context.Context, runID string) (uint64, error) {
	m, err := s.logs.GetLastMsgForSubject(ctx, LogSubject(runID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read output of %s: %w", runID, err)
	}
	var l pb.LogLine
	if err := proto.Unmarshal(m.Data, &l); err != nil {
		return 0, fmt.Errorf("decode output of %s: %w", runID, err)
	}
	return l.GetSeq(), nil
}

// ReadLogs calls fn for each stored line of the run in order. With follow
// it waits for new lines until the run's end marker or ctx ends; without,
// it stops after the lines stored now. skip drops the first lines.
func (s *Store) ReadLogs(ctx context.Context, runID string, follow bool, skip uint64, fn func(line *pb.LogLine) error) error {
	cons, err := s.logs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{LogSubject(runID)}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("read output of %s: %w", runID, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read output of %s: %w", runID, err)
	}
	if !follow && info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read output of %s: %w", runID, err)
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Stop()
	}()
	var n uint64
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read output of %s: %w", runID, err)
		}
		n++
		md, _ := m.Metadata()
		end := m.Headers().Get(HeaderRunEnd) == "true"
		if n > skip {
			var l pb.LogLine
			if err := proto.Unmarshal(m.Data(), &l); err != nil {
				return fmt.Errorf("decode output of %s: %w", runID, err)
			}
			if err := fn(&l); err != nil {
				return err
			}
		}
		if end && follow {
			return nil
		}
		if !follow && md != nil && md.NumPending == 0 {
			return nil
		}
	}
}

// CountLogs returns how many lines of the run are stored.
func (s *Store) CountLogs(ctx context.Context, runID string) (uint64, error) {
	info, err := s.logs.Info(ctx, jetstream.WithSubjectFilter(LogSubject(runID)))
	if err != nil {
		return 0, fmt.Errorf("count output of %s: %w", runID, err)
	}
	return info.State.Subjects[LogSubject(runID)], nil
}
