package monitor

// Sample fan-out. Every replica keeps every sample in its own TSDB, so a
// query, a canary analysis or a rule evaluation gives the same answer on
// any replica. A replica that stores samples (a push it accepted, a scrape
// of a target it owns, a recording rule it evaluates, its host's usage)
// also publishes them to the stream StreamSamples; every replica follows
// that stream with an ordered consumer and stores what the others
// published. The stream keeps samples for a short while only (limits
// retention): it carries samples between live replicas and lets a
// restarted one catch up, it is not a second store.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
)

const (
	// StreamSamples carries samples from the replica that stored them to
	// the others.
	StreamSamples = "OPSUITE_MONITOR_SAMPLES"

	samplesSubject = "opsuite.internal.monitor.samples"
	// hdrOrigin names the replica that published a message.
	hdrOrigin = "Opsuite-Replica"
	// hdrReceived is when the origin received the push (ms since the
	// epoch): the time of its samples that have none.
	hdrReceived = "Opsuite-Received-At"
	// hdrKind says how the body is encoded: kindPush, a
	// PushMetricsRequest, or kindStream, a PushMetricsStreamRequest.
	hdrKind    = "Opsuite-Kind"
	kindPush   = "push"
	kindStream = "stream"

	// positionFile keeps, in the data dir, the last stream sequence this
	// replica stored, so a restart resumes after it.
	positionFile = "samples-position"
)

// openSampleStream ensures the fan-out stream.
func (s *Service) openSampleStream(ctx context.Context) error {
	_, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamSamples,
		Description: "monitor samples on their way to every monitor replica",
		Subjects:    []string{samplesSubject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.cfg.StoreReplicas, 1),
		MaxAge:      s.cfg.SampleStreamMaxAge,
		MaxBytes:    s.cfg.SampleStreamMaxBytes,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("open stream %s: %w", StreamSamples, err)
	}
	return nil
}

// publishRaw hands a push's encoding to the other replicas. Bodies larger
// than the server takes are sent as batches of the decoded series.
func (s *Service) publishRaw(ctx context.Context, kind string, raw []byte, received int64, series []ingest.Series) error {
	if len(raw) > s.maxFanout() {
		return s.publishSeries(ctx, series)
	}
	return s.publishSamples(ctx, kind, raw, received)
}

func (s *Service) publishSamples(ctx context.Context, kind string, body []byte, received int64) error {
	m := nats.NewMsg(samplesSubject)
	m.Header.Set(hdrOrigin, s.cfg.ReplicaID)
	m.Header.Set(hdrKind, kind)
	m.Header.Set(hdrReceived, strconv.FormatInt(received, 10))
	m.Data = body
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("%w: hand samples to the other replicas: %v", ErrUnavailable, err)
	}
	return nil
}

// maxFanout is the largest body published as one message.
func (s *Service) maxFanout() int {
	limit := int(s.js.Conn().MaxPayload())
	if limit <= 0 {
		limit = 1 << 20
	}
	return limit - 4096 // headers
}

// publishSeries publishes series (with their timestamps resolved) as
// columnar batches, each under the server's message size.
func (s *Service) publishSeries(ctx context.Context, series []ingest.Series) error {
	limit := s.maxFanout() / 2
	var enc batchEncoder
	for _, ser := range series {
		enc.add(ser)
		if enc.size >= limit {
			if err := s.publishBatch(ctx, &enc); err != nil {
				return err
			}
		}
	}
	return s.publishBatch(ctx, &enc)
}

func (s *Service) publishBatch(ctx context.Context, enc *batchEncoder) error {
	if len(enc.batch.GetSeries()) == 0 {
		return nil
	}
	body, err := proto.Marshal(&monitorv1.PushMetricsRequest{Batch: enc.batch})
	*enc = batchEncoder{}
	if err != nil {
		return fmt.Errorf("encode samples: %w", err)
	}
	return s.publishSamples(ctx, kindPush, body, time.Now().UnixMilli())
}

// batchEncoder builds one SampleBatch.
type batchEncoder struct {
	batch *monitorv1.SampleBatch
	syms  map[string]uint32
	size  int
}

func (b *batchEncoder) sym(v string) uint32 {
	if b.batch == nil {
		b.batch = &monitorv1.SampleBatch{Symbols: []string{""}}
		b.syms = map[string]uint32{"": 0}
	}
	if i, ok := b.syms[v]; ok {
		return i
	}
	i := uint32(len(b.batch.Symbols))
	b.batch.Symbols = append(b.batch.Symbols, v)
	b.syms[v] = i
	b.size += len(v) + 2
	return i
}

func (b *batchEncoder) add(ser ingest.Series) {
	b.sym("")
	out := &monitorv1.SeriesSamples{
		TimestampsMs: ser.T, Values: ser.V, Type: metricTypeOf(ser.Type),
		HelpRef: b.sym(ser.Help), UnitRef: b.sym(ser.Unit),
	}
	ser.Labels.Range(func(l labels.Label) {
		out.LabelRefs = append(out.LabelRefs, b.sym(l.Name), b.sym(l.Value))
	})
	b.batch.Series = append(b.batch.Series, out)
	b.size += 4*len(out.LabelRefs) + 17*len(ser.T) + 8
}

// share hands samples this replica stored itself (scrapes, recording
// rules, host metrics) to the other replicas.
func (s *Service) share(ctx context.Context, series []ingest.Series) {
	if len(series) == 0 {
		return
	}
	if err := s.publishSeries(ctx, series); err != nil && ctx.Err() == nil {
		s.log.Warn("samples not handed to the other replicas", "series", len(series), "err", err)
	}
}

// followSamples stores what other replicas publish, from the position kept
// in the data dir (or the stream's start), until ctx ends. caughtUp is
// closed once it stored everything the stream held when it started.
func (s *Service) followSamples(ctx context.Context, caughtUp chan<- struct{}) {
	var once bool
	done := func() {
		if !once {
			once = true
			close(caughtUp)
		}
	}
	defer done()
	pos := s.readPosition()
	for ctx.Err() == nil {
		info, err := s.js.Stream(ctx, StreamSamples)
		var last uint64
		if err == nil {
			var si *jetstream.StreamInfo
			if si, err = info.Info(ctx); err == nil {
				last = si.State.LastSeq
				if pos > last {
					s.log.Warn("sample stream is behind this replica's position (recreated?); reading it from its start", "position", pos, "last", last)
					pos = 0
				}
				if pos+1 < si.State.FirstSeq && pos > 0 {
					s.log.Warn("samples lost: the stream dropped some before this replica read them", "from", pos+1, "to", si.State.FirstSeq-1)
				}
			}
		}
		if err == nil {
			pos, err = s.consumeSamples(ctx, pos, last, done)
		}
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("follow sample stream; retrying", "err", err)
		sleepCtx(ctx, time.Second)
	}
	s.writePosition(pos)
}

// consumeSamples reads the stream after pos with an ordered consumer and
// returns the last sequence stored when it stops.
func (s *Service) consumeSamples(ctx context.Context, pos, last uint64, caughtUp func()) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{samplesSubject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if pos > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos+1
	}
	cons, err := s.js.OrderedConsumer(ctx, StreamSamples, cfg)
	if err != nil {
		return pos, fmt.Errorf("sample consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return pos, fmt.Errorf("sample consumer: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	if pos >= last {
		caughtUp()
	}
	saved := time.Now()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return pos, ctx.Err()
			}
			return pos, err
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		if m.Headers().Get(hdrOrigin) != s.cfg.ReplicaID {
			s.applySamples(ctx, m)
		}
		pos = md.Sequence.Stream
		if pos >= last {
			caughtUp()
		}
		if time.Since(saved) > 5*time.Second {
			s.writePosition(pos)
			saved = time.Now()
		}
	}
}

// applySamples stores one message of another replica.
func (s *Service) applySamples(ctx context.Context, m jetstream.Msg) {
	received, err := strconv.ParseInt(m.Headers().Get(hdrReceived), 10, 64)
	if err != nil {
		received = time.Now().UnixMilli()
	}
	d := s.decoders.Get().(*ingest.Decoder)
	defer s.decoders.Put(d)
	var series []ingest.Series
	switch m.Headers().Get(hdrKind) {
	case kindStream:
		series, err = d.DecodeWireStream("batch", m.Data(), received)
	default:
		series, err = d.DecodeWire(m.Data(), received)
	}
	if err != nil {
		s.log.Warn("samples from another replica do not decode; skipped", "from", m.Headers().Get(hdrOrigin), "err", err)
		return
	}
	res, err := s.store(ctx, series)
	if err != nil {
		s.log.Warn("store samples from another replica", "from", m.Headers().Get(hdrOrigin), "err", err)
		return
	}
	if res.Rejected > 0 {
		s.log.Debug("samples from another replica refused", "from", m.Headers().Get(hdrOrigin), "rejected", res.Rejected)
	}
}

func (s *Service) readPosition() uint64 {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, positionFile))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func (s *Service) writePosition(pos uint64) {
	if pos == 0 {
		return
	}
	path := filepath.Join(s.cfg.DataDir, positionFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(pos, 10)+"\n"), 0o600); err != nil {
		s.log.Warn("keep sample stream position", "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		s.log.Warn("keep sample stream position", "err", err)
	}
}

// seriesOf turns appended samples into series for publishing.
func seriesOf(ls labels.Labels, t int64, v float64) ingest.Series {
	return ingest.Series{Labels: ls, T: []int64{t}, V: []float64{v}}
}
