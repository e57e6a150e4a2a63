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

// errStreamChanged ends an indexing pass: the write-ahead stream was
// recreated (or lost its tail) behind the index, or its consumer ended.
var errStreamChanged = errors.New("write-ahead stream changed")

// streamCheckInterval is how often an idle indexer checks that the stream
// is still the one it follows.
const streamCheckInterval = 2 * time.Second

// streamID identifies one incarnation of the stream.
func streamID(info *jetstream.StreamInfo) string { return info.Created.UTC().Format(time.RFC3339Nano) }

// index follows the stream from the last indexed position and commits
// records in groups until ctx ends. When the stream is recreated behind the
// index (deleted and created again, or its tail lost), the index continues
// with what the new stream holds from its first message: new positions
// follow the indexed ones, so nothing is indexed twice.
func (s *Service) index(ctx context.Context, stream jetstream.Stream, st *store.Store) error {
	for pass := 0; ; pass++ {
		err := s.indexPass(ctx, stream, st)
		if ctx.Err() != nil {
			return nil
		}
		delay := 100 * time.Millisecond
		switch {
		case errors.Is(err, errStreamChanged):
			s.log.Warn("write-ahead stream changed; indexing resumes from what it holds", "err", err)
		case pass == 0 && !errors.Is(err, errIndexRetry):
			return err // failing from the start: Run reports it
		default:
			s.log.Error("indexer failed; retrying", "err", err)
			delay = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		// The stream is gone: whichever comes next is new, so the index
		// is rebased before the stream exists again and acknowledgements
		// of the new stream already carry positions after the indexed ones.
		if _, err := s.js.Stream(ctx, StreamName); errors.Is(err, jetstream.ErrStreamNotFound) {
			if err := st.SetStream("", true, 0); err != nil {
				s.log.Error("rebase index on a new stream", "err", err)
				continue
			}
		}
		if next, err := s.ensureStream(ctx); err != nil {
			s.log.Error("indexer: recreate stream", "err", err)
		} else {
			stream = next
		}
	}
}

// reconcile checks the stream against the one the index follows, rebasing
// the index on a new stream, and returns the stream's state and the indexed
// stream sequence.
func (s *Service) reconcile(ctx context.Context, stream jetstream.Stream, st *store.Store) (*jetstream.StreamInfo, uint64, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("stream info: %w", err)
	}
	id := streamID(info)
	known, base := st.Stream()
	indexed := st.LastStreamSeq() - base
	behind := info.State.LastSeq < indexed
	switch {
	case !behind && (known == id || known == ""):
		if known == "" {
			if err := st.SetStream(id, false, 0); err != nil {
				return nil, 0, err
			}
		}
		return info, indexed, nil
	case known == id:
		// The same stream lost messages the index holds (its tail was not
		// yet synced when the machine stopped): what it stores from now on
		// is new.
		s.log.Warn("write-ahead stream lost messages behind the index; indexing what it stores from now on",
			"stream_last_seq", info.State.LastSeq, "indexed_seq", indexed)
		if err := st.SetStream(id, true, info.State.LastSeq); err != nil {
			return nil, 0, err
		}
		return info, info.State.LastSeq, nil
	default:
		// A new stream (or, for an index that never recorded one, a stream
		// behind it, taken as recreated): everything it holds is new.
		s.log.Warn("write-ahead stream was recreated behind the index; indexing everything it holds",
			"stream_created", id, "stream_first_seq", info.State.FirstSeq, "stream_last_seq", info.State.LastSeq,
			"indexed_seq", indexed, "position", st.LastStreamSeq())
		if err := st.SetStream(id, true, 0); err != nil {
			return nil, 0, err
		}
		return info, 0, nil
	}
}

// pendingMsg marks where one stream message's records start in pending.
type pendingMsg struct {
	start int
	seq   uint64
	time  time.Time
}

// indexPass indexes the stream until ctx ends or the stream changes.
func (s *Service) indexPass(ctx context.Context, stream jetstream.Stream, st *store.Store) error {
	info, indexed, err := s.reconcile(ctx, stream, st)
	if err != nil {
		return err
	}
	id := streamID(info)
	_, base := st.Stream()
	target := info.State.LastSeq
	if target <= indexed {
		s.markReady()
	}
	startSeq := max(indexed+1, info.State.FirstSeq)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   startSeq,
		// A consumer that cannot be recreated (the stream is gone) ends
		// the pass instead of retrying for ever inside Next.
		MaxResetAttempts: 3,
	})
	if err != nil {
		return fmt.Errorf("indexer consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(s.cfg.IndexerBufferBytes))
	if err != nil {
		return fmt.Errorf("indexer messages: %w", err)
	}
	defer it.Stop()
	defer context.AfterFunc(ctx, it.Stop)()

	pending := make([]record.Record, 0, min(s.cfg.CommitRecords, 1<<16))
	var msgs []pendingMsg
	chunks := record.NewChunkDecoder(s.dec.Limits())
	var lastSeq uint64 // stream sequence of the last pending message
	var firstAt time.Time
	commit := func(n int, last uint64) {
		if last == 0 || base+last <= st.LastStreamSeq() {
			return
		}
		start := time.Now()
		created, err := st.Commit(pending[:n], base+last)
		if err != nil {
			// Nothing was committed: the records stay pending and the
			// commit is retried with the next flush.
			s.log.Error("index commit failed; will retry", "records", n, "err", err)
			return
		}
		s.metrics.commits.Observe(time.Since(start).Seconds())
		s.metrics.indexed.Add(float64(n))
		s.hub.publish(pending[:n], s.metrics.dropped)
		for _, ns := range created {
			select {
			case s.sigEvents <- ns:
			default:
				s.log.Warn("signature event queue full; event skipped", "signature", ns.Signature.ID)
			}
		}
		clear(pending) // drop references to committed messages
		pending, msgs = pending[:0], msgs[:0]
		if !s.ready.Load() && last >= target {
			s.markReady()
		}
	}
	// changed reports whether the stream is no longer the one this pass
	// follows; then the pending messages of the old stream (stored before
	// the new one was created) are committed and the rest dropped, to be
	// read again from the new stream.
	changed := func() bool {
		cur, err := stream.Info(ctx)
		switch {
		case err == nil && streamID(cur) == id && cur.State.LastSeq >= lastSeq:
			return false
		case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
			return false // cannot tell (shutting down, NATS away): go on
		}
		keep, last := len(pending), lastSeq
		if err == nil {
			for i, m := range msgs {
				if !m.time.Before(cur.Created) {
					keep, last = m.start, 0
					if i > 0 {
						last = msgs[i-1].seq
					}
					break
				}
			}
		}
		commit(keep, last)
		return true
	}
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if changed() {
			return errStreamChanged
		}
		commit(len(pending), lastSeq)
		return nil
	}
	lastCheck := time.Now()
	for {
		if ctx.Err() != nil {
			commit(len(pending), lastSeq)
			return nil
		}
		wait := s.cfg.CommitInterval
		if len(pending) > 0 {
			wait = max(time.Millisecond, s.cfg.CommitInterval-time.Since(firstAt))
		}
		msg, err := it.Next(jetstream.NextMaxWait(wait))
		if err != nil {
			if ctx.Err() != nil {
				commit(len(pending), lastSeq)
				return nil
			}
			if err := flush(); err != nil {
				return err
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("%w: indexer consumer closed", errStreamChanged)
			}
			if !errors.Is(err, nats.ErrTimeout) {
				s.log.Warn("indexer read", "err", err)
			}
			if time.Since(lastCheck) >= streamCheckInterval {
				lastCheck = time.Now()
				if changed() {
					return errStreamChanged
				}
			}
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			s.log.Warn("indexer: message without metadata skipped", "err", err)
			continue
		}
		seq := md.Sequence.Stream
		if base+seq <= st.LastStreamSeq() || seq <= lastSeq {
			continue
		}
		if msg.Subject() == controlSubject {
			// Applied between the records before and after it.
			if err := flush(); err != nil {
				return err
			}
			if len(msgs) > 0 {
				return fmt.Errorf("%w: records before the control message at %d not committed", errIndexRetry, base+seq)
			}
			if err := s.applyControl(st, msg.Data(), base+seq); err != nil {
				return fmt.Errorf("%w: apply control message at %d: %w", errIndexRetry, base+seq, err)
			}
			lastSeq = seq
			if !s.ready.Load() && (seq >= target || md.NumPending == 0) {
				s.markReady()
			}
			continue
		}
		if len(pending) == 0 {
			firstAt = time.Now()
		}
		msgs = append(msgs, pendingMsg{start: len(pending), seq: seq, time: md.Timestamp})
		pending = s.decodeMessage(pending, chunks, msg.Subject(), msg.Data(), base+seq, md.Timestamp)
		lastSeq = seq
		if len(pending) >= s.cfg.CommitRecords || time.Since(firstAt) >= s.cfg.CommitInterval ||
			(md.NumPending == 0 && !s.ready.Load()) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// decodeMessage appends the records of one stream message, numbered from
// its stream sequence.
func (s *Service) decodeMessage(dst []record.Record, chunks *record.ChunkDecoder, subject string, data []byte, seq uint64, ts time.Time) []record.Record {
	if record.IsChunk(data) {
		// Records the ingestion path validated: no protobuf, no
		// per-record allocation.
		n := len(dst)
		dst, err := chunks.Decode(dst, data)
		if err != nil {
			s.metrics.rejected.Inc()
			s.log.Warn("undecodable log chunk skipped", "subject", subject, "stream_seq", seq, "err", err)
			return dst
		}
		for i := n; i < len(dst); i++ {
			dst[i].Seq = record.Seq(seq, i-n)
		}
		if subject != ingestSubject {
			s.metrics.ingested.WithLabelValues("nats").Add(float64(len(dst) - n))
		}
		return dst
	}
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
