package logaggregator

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ingestResult is what storing one batch did.
type ingestResult struct {
	res       record.Result
	lastSeq   uint64
	duplicate bool
}

// ingest decodes b and stores its records durably in the stream.
func (s *Service) ingest(ctx context.Context, b *lav1.LogBatch) (ingestResult, error) {
	var out ingestResult
	if b == nil {
		return out, invalid("batch", "batch", "is required")
	}
	if len(b.GetBatchId()) > 128 {
		return out, invalid("batch", "batch.batch_id", "longer than 128 bytes")
	}
	recv := time.Now()
	rp := s.recPool.Get().(*[]record.Record)
	recs, res := s.dec.Decode((*rp)[:0], b, "", recv)
	defer func() {
		clear(recs) // drop references to the request's messages
		if cap(recs) <= maxPooledRecords {
			*rp = recs[:0]
			s.recPool.Put(rp)
		}
	}()
	out.res = res
	s.metrics.rejected.Add(float64(res.Rejected))
	if len(recs) == 0 {
		return out, nil
	}
	// Chunks of at most maxChunk bytes in chunk form (validated records,
	// column-wise, S2-compressed), published asynchronously and
	// acknowledged together. A chunk's buffer goes back to the pool only
	// once its publication is settled: the client may republish it until
	// then. The bytes of batches being published are bounded as a whole
	// (one acquisition per batch, so batches never hold part of the budget
	// while waiting for more).
	var bounds []int
	start, size, total := 0, 0, int64(0)
	for i := range recs {
		rs := record.ChunkSize(&recs[i])
		if i > start && (size+rs > s.maxChunk || i-start >= record.MaxRecordsPerMessage) {
			bounds = append(bounds, i)
			start, size = i, 0
		}
		size += rs
		total += int64(rs)
	}
	bounds = append(bounds, len(recs))
	budget := min(total, s.maxInflight)
	if err := s.inflight.Acquire(ctx, budget); err != nil {
		return out, err
	}
	defer s.inflight.Release(budget)
	type chunk struct {
		fut  jetstream.PubAckFuture
		enc  *record.ChunkEncoder
		n    int
		done bool // acknowledged or failed
	}
	var chunks []chunk
	defer func() {
		for _, c := range chunks {
			if c.done {
				s.encPool.Put(c.enc)
				continue
			}
			select {
			case <-c.fut.Ok():
			case <-c.fut.Err():
			default:
				// Still in flight (the request ended first): the client
				// may republish its buffer, so it is left to the
				// collector.
				continue
			}
			s.encPool.Put(c.enc)
		}
	}()
	publish := func(part []record.Record, idx int) error {
		enc := s.encPool.Get().(*record.ChunkEncoder)
		data := enc.Encode(part, recv.UnixNano(), !s.cfg.UncompressedWAL)
		msg := &nats.Msg{Subject: ingestSubject, Data: data, Header: nats.Header{"Content-Type": chunkContentType}}
		var opts []jetstream.PublishOpt
		if id := b.GetBatchId(); id != "" {
			opts = append(opts, jetstream.WithMsgID(id+"#"+strconv.Itoa(idx)))
		}
		fut, err := s.js.PublishMsgAsync(msg, opts...)
		if err != nil {
			s.encPool.Put(enc)
			return fmt.Errorf("publish batch: %w", err)
		}
		chunks = append(chunks, chunk{fut: fut, enc: enc, n: len(part)})
		return nil
	}
	start = 0
	for _, end := range bounds {
		if err := publish(recs[start:end], len(chunks)); err != nil {
			return out, err
		}
		start = end
	}
	var base uint64 // positions of the stream's sequences (see store.SetStream)
	if st := s.getStore(); st != nil {
		_, base = st.Stream()
	}
	dups := 0
	for i, c := range chunks {
		select {
		case ack := <-c.fut.Ok():
			chunks[i].done = true
			if ack.Duplicate {
				dups++
			}
			out.lastSeq = record.Seq(base+ack.Sequence, c.n-1)
		case err := <-c.fut.Err():
			chunks[i].done = true
			return out, fmt.Errorf("store batch in %s: %w", StreamName, err)
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	out.duplicate = dups == len(chunks)
	s.metrics.ingested.WithLabelValues("grpc").Add(float64(res.Accepted))
	s.metrics.truncated.Add(float64(res.Truncated))
	return out, nil
}

// chunkContentType marks stream messages in chunk form.
var chunkContentType = []string{"application/x-opsuite-log-chunk"}

func rejectionsProto(rs []record.Rejection) []*lav1.RecordRejection {
	out := make([]*lav1.RecordRejection, 0, len(rs))
	for _, r := range rs {
		out = append(out, &lav1.RecordRejection{Field: r.Field, Reason: r.Reason, Count: r.Count})
	}
	return out
}

// Ingest stores one batch and answers once it is durable.
func (s *Service) Ingest(ctx context.Context, req *lav1.IngestRequest) (*lav1.IngestResponse, error) {
	r, err := s.ingest(ctx, req.GetBatch())
	if err != nil {
		return nil, toStatus(err)
	}
	return &lav1.IngestResponse{
		Accepted: r.res.Accepted, Rejected: r.res.Rejected, Rejections: rejectionsProto(r.res.Rejections),
		Truncated: r.res.Truncated, LastSequence: r.lastSeq, Duplicate: r.duplicate,
	}, nil
}

// IngestStream stores every batch of the stream and answers once at the end.
func (s *Service) IngestStream(stream grpc.ClientStreamingServer[lav1.IngestStreamRequest, lav1.IngestStreamResponse]) error {
	resp := &lav1.IngestStreamResponse{}
	var rejections []record.Rejection
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		r, err := s.ingest(stream.Context(), req.GetBatch())
		if err != nil {
			return toStatus(err)
		}
		resp.Batches++
		resp.Accepted += r.res.Accepted
		resp.Rejected += r.res.Rejected
		resp.Truncated += r.res.Truncated
		if r.lastSeq > 0 {
			resp.LastSequence = r.lastSeq
		}
		if r.duplicate {
			resp.DuplicateBatches++
		}
		for _, rj := range r.res.Rejections {
			i := slices.IndexFunc(rejections, func(x record.Rejection) bool { return x.Reason == rj.Reason })
			switch {
			case i >= 0:
				rejections[i].Count += rj.Count
			case len(rejections) < 10:
				rejections = append(rejections, rj)
			}
		}
	}
	resp.Rejections = rejectionsProto(rejections)
	return stream.SendAndClose(resp)
}

// Query defaults and bounds.
const (
	defaultPageSize = 100
	maxPageSize     = 10000
	defaultSince    = time.Hour
)

// pageToken pins a query's resolved time range and position.
type pageToken struct {
	Key   string `json:"k"`
	Start int64  `json:"s"`
	End   int64  `json:"e"`
	Time  int64  `json:"t"`
	Seq   uint64 `json:"q"`
}

func encodeToken(t pageToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (pageToken, error) {
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return t, err
	}
	err = json.Unmarshal(b, &t)
	return t, err
}

// compileQuery validates req and returns its filter and resolved range.
func compileQuery(req *lav1.QueryLogsRequest, now time.Time) (*filter.Filter, *pageToken, error) {
	const subject = "query"
	var start, end int64
	if req.GetEndTime() != nil {
		if err := req.GetEndTime().CheckValid(); err != nil {
			return nil, nil, invalid(subject, "end_time", "invalid timestamp")
		}
		end = req.GetEndTime().AsTime().UnixNano()
	} else {
		end = now.UnixNano()
	}
	if req.GetStartTime() != nil {
		if err := req.GetStartTime().CheckValid(); err != nil {
			return nil, nil, invalid(subject, "start_time", "invalid timestamp")
		}
		start = req.GetStartTime().AsTime().UnixNano()
	} else {
		since := defaultSince
		if req.GetSince() != nil {
			if err := req.GetSince().CheckValid(); err != nil || req.GetSince().AsDuration() < 0 {
				return nil, nil, invalid(subject, "since", "must be a positive duration")
			}
			if d := req.GetSince().AsDuration(); d > 0 {
				since = d
			}
		}
		start = end - int64(since)
	}
	if end < start {
		return nil, nil, invalid(subject, "end_time", "before start_time")
	}
	if req.GetPageSize() < 0 {
		return nil, nil, invalid(subject, "page_size", "must not be negative")
	}
	if req.GetOrder() < 0 || req.GetOrder() > lav1.TimeOrder_TIME_ORDER_DESCENDING {
		return nil, nil, invalid(subject, "order", "unknown order")
	}
	var tok *pageToken
	if req.GetPageToken() != "" {
		t, err := decodeToken(req.GetPageToken())
		if err != nil {
			return nil, nil, invalid(subject, "page_token", "not a token from a previous response")
		}
		tok = &t
		start, end = t.Start, t.End
	}
	spec := filter.Spec{
		Levels: req.GetLevels(), MinLevel: req.GetMinLevel(), Sources: req.GetSources(), Matchers: req.GetMatchers(),
		Contains: req.GetContains(), IgnoreCase: req.GetIgnoreCase(), Regex: req.GetRegex(), TraceID: req.GetTraceId(),
		Start: start, End: end,
	}
	f, err := filter.Compile(spec)
	if err != nil {
		return nil, nil, filterError(subject, err)
	}
	if tok != nil && tok.Key != queryKey(f, req) {
		return nil, nil, invalid(subject, "page_token", "the query changed since the token was issued")
	}
	return f, tok, nil
}

func queryKey(f *filter.Filter, req *lav1.QueryLogsRequest) string {
	return fmt.Sprintf("%s|%d", f.Key(), orderOf(req.GetOrder()))
}

func orderOf(o lav1.TimeOrder) int {
	if o == lav1.TimeOrder_TIME_ORDER_ASCENDING {
		return 1
	}
	return 0
}

// QueryLogs returns matching records in time order, one page at a time.
func (s *Service) QueryLogs(ctx context.Context, req *lav1.QueryLogsRequest) (*lav1.QueryLogsResponse, error) {
	begin := time.Now()
	f, tok, err := compileQuery(req, begin)
	if err != nil {
		return nil, toStatus(err)
	}
	st, err := s.storeOrErr()
	if err != nil {
		return nil, toStatus(err)
	}
	limit := int(req.GetPageSize())
	if limit == 0 {
		limit = defaultPageSize
	}
	limit = min(limit, maxPageSize)
	q := store.Query{Filter: f, Limit: limit, Ascending: req.GetOrder() == lav1.TimeOrder_TIME_ORDER_ASCENDING}
	if tok != nil {
		q.After = &store.Cursor{Time: tok.Time, Seq: tok.Seq}
	}
	recs, next, stats, err := st.Query(ctx, q)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &lav1.QueryLogsResponse{
		Records: make([]*lav1.LogRecord, len(recs)),
		Stats: &lav1.QueryStats{RecordsScanned: stats.RecordsScanned, BytesScanned: stats.BytesScanned,
			Duration: durationpb.New(time.Since(begin))},
	}
	for i := range recs {
		resp.Records[i] = recs[i].Proto()
	}
	if next != nil {
		resp.NextPageToken = encodeToken(pageToken{Key: queryKey(f, req), Start: f.Start, End: f.End, Time: next.Time, Seq: next.Seq})
	}
	return resp, nil
}

// TailLogs streams matching records as they are stored.
func (s *Service) TailLogs(req *lav1.TailLogsRequest, stream grpc.ServerStreamingServer[lav1.TailLogsResponse]) error {
	const subject = "tail"
	if req.GetBackfillLimit() < 0 {
		return toStatus(invalid(subject, "backfill_limit", "must not be negative"))
	}
	if req.GetSince() != nil && (req.GetSince().CheckValid() != nil || req.GetSince().AsDuration() < 0) {
		return toStatus(invalid(subject, "since", "must be a positive duration"))
	}
	f, err := filter.Compile(filter.Spec{
		Levels: req.GetLevels(), MinLevel: req.GetMinLevel(), Sources: req.GetSources(), Matchers: req.GetMatchers(),
		Contains: req.GetContains(), IgnoreCase: req.GetIgnoreCase(), Regex: req.GetRegex(), TraceID: req.GetTraceId(),
	})
	if err != nil {
		return toStatus(filterError(subject, err))
	}
	st, err := s.storeOrErr()
	if err != nil {
		return toStatus(err)
	}
	sub := s.hub.subscribe(f)
	defer s.hub.unsubscribe(sub)
	ctx := stream.Context()
	// Records indexed up to here come from the backfill; later ones from
	// the subscription.
	seen := st.LastStreamSeq()
	if since := req.GetSince().AsDuration(); req.GetSince() != nil && since > 0 {
		limit := int(req.GetBackfillLimit())
		if limit == 0 {
			limit = defaultPageSize
		}
		now := time.Now()
		bf, err := filter.Compile(filter.Spec{
			Levels: req.GetLevels(), MinLevel: req.GetMinLevel(), Sources: req.GetSources(), Matchers: req.GetMatchers(),
			Contains: req.GetContains(), IgnoreCase: req.GetIgnoreCase(), Regex: req.GetRegex(), TraceID: req.GetTraceId(),
			Start: now.Add(-since).UnixNano(),
		})
		if err != nil {
			return toStatus(filterError(subject, err))
		}
		recs, _, _, err := st.Query(ctx, store.Query{Filter: bf, Limit: min(limit, maxPageSize)})
		if err != nil {
			return toStatus(err)
		}
		slices.Reverse(recs)
		if len(recs) > 0 {
			resp := &lav1.TailLogsResponse{Records: make([]*lav1.LogRecord, len(recs))}
			for i := range recs {
				resp.Records[i] = recs[i].Proto()
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.draining:
			return nil
		case <-sub.closed:
			return nil
		case recs := <-sub.ch:
			resp := &lav1.TailLogsResponse{Dropped: sub.dropped.Swap(0)}
			for i := range recs {
				if recs[i].Seq>>record.SeqShift <= seen {
					continue
				}
				resp.Records = append(resp.Records, recs[i].Proto())
			}
			if len(resp.Records) == 0 && resp.Dropped == 0 {
				continue
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// ListSources lists stored sources and their volume.
func (s *Service) ListSources(_ context.Context, req *lav1.ListSourcesRequest) (*lav1.ListSourcesResponse, error) {
	const subject = "list sources request"
	prefix := req.GetSource()
	if prefix != "" {
		if reason := record.CheckSource(prefix); reason != "" {
			return nil, toStatus(invalid(subject, "source", "%s", reason))
		}
	}
	if req.GetPageSize() < 0 {
		return nil, toStatus(invalid(subject, "page_size", "must not be negative"))
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	size = min(size, 1000)
	after := ""
	if req.GetPageToken() != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
		if err != nil {
			return nil, toStatus(invalid(subject, "page_token", "not a token from a previous response"))
		}
		after = string(b)
	}
	st, err := s.storeOrErr()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &lav1.ListSourcesResponse{}
	for _, src := range st.Sources(prefix) {
		if after != "" && src.Source <= after {
			continue
		}
		if len(resp.Sources) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(resp.Sources[size-1].GetSource()))
			break
		}
		resp.Sources = append(resp.Sources, &lav1.SourceStats{
			Source: src.Source, RecordCount: src.Records, StoredBytes: src.Bytes,
			FirstTime: tsOf(src.FirstTime), LastTime: tsOf(src.LastTime),
		})
	}
	return resp, nil
}
