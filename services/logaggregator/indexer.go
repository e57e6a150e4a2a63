package logaggregator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
	"google.golang.org/protobuf/proto"
)

// SubjectSource returns the default source a subject gives its records:
// the tokens after "opsuite.logs." with "." read as "/". The gRPC ingestion
// subject gives none.
func SubjectSource(subject string) string {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok || subject == ingestSubject {
		return ""
	}
	return strings.ReplaceAll(rest, ".", "/")
}

// index follows the stream from the last indexed sequence and commits
// records in groups until ctx ends.
func (s *Service) index(ctx context.Context, stream jetstream.Stream, st *store.Store) error {
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	startSeq := st.LastStreamSeq() + 1
	target := info.State.LastSeq
	if target < st.LastStreamSeq() {
		s.log.Error("write-ahead stream is behind the index: it was reset; records published before the reset are not re-indexed",
			"stream_last_seq", target, "indexed_seq", st.LastStreamSeq())
	}
	if target < startSeq {
		s.markReady()
	}
	startSeq = max(startSeq, info.State.FirstSeq)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   startSeq,
	})
	if err != nil {
		return fmt.Errorf("indexer consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("indexer messages: %w", err)
	}
	defer it.Stop()

	pending := make([]record.Record, 0, min(s.cfg.CommitRecords, 1<<16))
	var lastSeq uint64
	var firstAt time.Time
	flush := func() {
		if lastSeq == 0 || lastSeq <= st.LastStreamSeq() {
			return
		}
		start := time.Now()
		created, err := st.Commit(pending, lastSeq)
		if err != nil {
			// Nothing was committed: the records stay pending and the
			// commit is retried with the next flush.
			s.log.Error("index commit failed; will retry", "records", len(pending), "err", err)
			return
		}
		s.metrics.commits.Observe(time.Since(start).Seconds())
		s.metrics.indexed.Add(float64(len(pending)))
		s.hub.publish(pending, s.metrics.dropped)
		for _, sig := range created {
			select {
			case s.sigEvents <- sigEvent{sig: sig}:
			default:
				s.log.Warn("signature event queue full; event skipped", "signature", sig.ID)
			}
		}
		clear(pending) // drop references to committed messages
		pending = pending[:0]
		if !s.ready.Load() && lastSeq >= target {
			s.markReady()
		}
	}
	for {
		if ctx.Err() != nil {
			flush()
			return nil
		}
		wait := s.cfg.CommitInterval
		if len(pending) > 0 {
			wait = max(time.Millisecond, s.cfg.CommitInterval-time.Since(firstAt))
		}
		msg, err := it.Next(jetstream.NextMaxWait(wait))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) {
				flush()
				continue
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if ctx.Err() != nil {
					flush()
					return nil
				}
				return fmt.Errorf("indexer: %w", err)
			}
			s.log.Warn("indexer read", "err", err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			s.log.Warn("indexer: message without metadata skipped", "err", err)
			continue
		}
		seq := md.Sequence.Stream
		if seq <= st.LastStreamSeq() || seq <= lastSeq {
			continue
		}
		if len(pending) == 0 {
			firstAt = time.Now()
		}
		pending = s.decodeMessage(pending, msg.Subject(), msg.Data(), seq, md.Timestamp)
		lastSeq = seq
		if len(pending) >= s.cfg.CommitRecords || time.Since(firstAt) >= s.cfg.CommitInterval {
			flush()
		}
		if md.NumPending == 0 && !s.ready.Load() {
			flush()
		}
	}
}

// decodeMessage appends the records of one stream message, numbered from
// its stream sequence.
func (s *Service) decodeMessage(dst []record.Record, subject string, data []byte, seq uint64, ts time.Time) []record.Record {
	b := &lav1.LogBatch{}
	if err := proto.Unmarshal(data, b); err != nil {
		s.metrics.rejected.Inc()
		s.log.Warn("undecodable log batch skipped", "subject", subject, "stream_seq", seq, "err", err)
		return dst
	}
	n := len(dst)
	dst, res := s.dec.Decode(dst, b, SubjectSource(subject), ts)
	if len(dst)-n > record.MaxRecordsPerMessage {
		s.log.Warn("log batch over the record limit cut", "subject", subject, "records", len(dst)-n)
		dst = dst[:n+record.MaxRecordsPerMessage]
	}
	for i := n; i < len(dst); i++ {
		dst[i].Seq = record.Seq(seq, i-n)
	}
	if subject != ingestSubject {
		s.metrics.ingested.WithLabelValues("nats").Add(float64(res.Accepted))
		s.metrics.truncated.Add(float64(res.Truncated))
		s.metrics.rejected.Add(float64(res.Rejected))
		if res.Rejected > 0 {
			s.log.Warn("records refused from NATS", "subject", subject, "rejected", res.Rejected, "reason", res.Rejections[0].Reason)
		}
	}
	return dst
}

// retain applies the retention policy and purges indexed messages from the
// write-ahead stream once they are older than the duplicate window (so
// repeated batch ids are still recognised), until ctx ends.
func (s *Service) retain(ctx context.Context, stream jetstream.Stream, st *store.Store) {
	type mark struct {
		at  time.Time
		seq uint64
	}
	var marks []mark
	tick := time.NewTicker(s.cfg.RetentionInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.applyRetention(st)
		now := time.Now()
		marks = append(marks, mark{now, st.LastStreamSeq()})
		var purgeTo uint64
		for len(marks) > 0 && now.Sub(marks[0].at) > s.cfg.DuplicateWindow+s.cfg.RetentionInterval {
			purgeTo = marks[0].seq
			marks = marks[1:]
		}
		if purgeTo > 0 {
			if err := stream.Purge(ctx, jetstream.WithPurgeSequence(purgeTo+1)); err != nil {
				s.log.Warn("purge indexed messages from the stream", "up_to", purgeTo, "err", err)
			}
		}
	}
}

func (s *Service) applyRetention(st *store.Store) {
	res, err := st.ApplyRetention(st.Policy(), time.Now())
	if err != nil {
		s.log.Error("retention", "err", err)
		return
	}
	if res.Blocks > 0 {
		s.metrics.removed.Add(float64(res.Records))
		s.log.Info("retention removed records", "records", res.Records, "blocks", res.Blocks, "bytes", res.Bytes)
	}
}
