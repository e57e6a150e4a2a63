package monitor

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/prometheus/common/model"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// maxQuerySeries is the server's maximum of series in a query result.
	maxQuerySeries = 10000
	// maxRangePoints bounds the steps of a range query, as Prometheus does.
	maxRangePoints = 11000
)

// PushMetrics validates and stores a batch of samples.
func (s *Service) PushMetrics(ctx context.Context, req *monitorv1.PushMetricsRequest) (*monitorv1.PushMetricsResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	res, err := s.push(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.PushMetricsResponse{Accepted: res.Accepted, Rejected: res.Rejected, Rejections: rejections(res)}, nil
}

func (s *Service) push(ctx context.Context, req *monitorv1.PushMetricsRequest) (ingest.Result, error) {
	d := s.decoders.Get().(*ingest.Decoder)
	defer s.decoders.Put(d)
	now := time.Now().UnixMilli()
	series, err := d.Decode(req, now)
	if err != nil {
		return ingest.Result{}, err
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		return ingest.Result{}, fmt.Errorf("encode samples: %w", err)
	}
	if err := s.publishRaw(ctx, kindPush, raw, now, series); err != nil {
		return ingest.Result{}, err
	}
	return s.store(ctx, series)
}

// store appends validated series and records their metadata.
func (s *Service) store(ctx context.Context, series []ingest.Series) (ingest.Result, error) {
	res, err := ingest.Append(s.db.Appender(ctx), series, s.refs)
	if err != nil {
		return res, err
	}
	for _, ser := range series {
		if ser.Type != "" || ser.Help != "" || ser.Unit != "" {
			s.db.SetMetadata(ser.Labels.Get(model.MetricNameLabel), metadataOf(ser))
		}
	}
	s.wakeGroupsReading(func(yield func(string) bool) {
		for _, ser := range series {
			if !yield(ser.Labels.Get(model.MetricNameLabel)) {
				return
			}
		}
	})
	return res, nil
}

// PushMetricsStream stores columnar batches sent over one stream.
func (s *Service) PushMetricsStream(stream monitorv1.MonitorService_PushMetricsStreamServer) error {
	if err := s.checkReady(); err != nil {
		return toStatus(err)
	}
	d := ingest.NewDecoder(s.refs)
	var total ingest.Result
	var batches uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&monitorv1.PushMetricsStreamResponse{
				Accepted: total.Accepted, Rejected: total.Rejected, Rejections: rejections(total), Batches: batches,
			})
		}
		if err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		series, err := d.DecodeBatch(streamPrefix(batches), msg.GetBatch(), now)
		if err != nil {
			return toStatus(err)
		}
		raw, err := proto.Marshal(msg)
		if err != nil {
			return toStatus(fmt.Errorf("encode samples: %w", err))
		}
		if err := s.publishRaw(stream.Context(), kindStream, raw, now, series); err != nil {
			return toStatus(err)
		}
		res, err := s.store(stream.Context(), series)
		if err != nil {
			return toStatus(err)
		}
		total.Add(res)
		batches++
	}
}

// streamPrefix names the batch of a stream's message in errors.
func streamPrefix(message uint64) string { return fmt.Sprintf("batch(message %d)", message) }

func rejections(r ingest.Result) []*monitorv1.SampleRejection {
	out := make([]*monitorv1.SampleRejection, 0, len(r.Rejections))
	for _, rj := range r.Rejections {
		out = append(out, &monitorv1.SampleRejection{Field: rj.Field, Reason: rj.Reason, Count: rj.Count})
	}
	return out
}

// parseQuery checks PromQL, naming the position of the first problem.
func (s *Service) parseQuery(field, q string) (parser.Expr, error) {
	if strings.TrimSpace(q) == "" {
		return nil, invalid("query", field, "a PromQL expression is required")
	}
	expr, err := s.db.Parser().ParseExpr(q)
	if err != nil {
		return nil, invalid("query", field, "%v", err)
	}
	return expr, nil
}

func (s *Service) queryTimeout(d interface{ AsDuration() time.Duration }, set bool) time.Duration {
	if !set || d.AsDuration() <= 0 || d.AsDuration() > s.cfg.QueryTimeout {
		return s.cfg.QueryTimeout
	}
	return d.AsDuration()
}

// Query evaluates PromQL at one instant.
func (s *Service) Query(ctx context.Context, req *monitorv1.QueryRequest) (*monitorv1.QueryResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.parseQuery("query", req.GetQuery()); err != nil {
		return nil, toStatus(err)
	}
	ts := time.Now()
	if req.GetTime() != nil {
		ts = req.GetTime().AsTime()
	}
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout(req.GetTimeout(), req.GetTimeout() != nil))
	defer cancel()
	q, err := s.db.Engine().NewInstantQuery(ctx, s.db.Queryable(), nil, req.GetQuery(), ts)
	if err != nil {
		return nil, toStatus(invalid("query", "query", "%v", err))
	}
	defer q.Close()
	res, warnings, err := s.result(q.Exec(ctx), int(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.QueryResponse{Result: res, Warnings: warnings}, nil
}

// QueryRange evaluates PromQL at each step of a range.
func (s *Service) QueryRange(ctx context.Context, req *monitorv1.QueryRangeRequest) (*monitorv1.QueryRangeResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.parseQuery("query", req.GetQuery()); err != nil {
		return nil, toStatus(err)
	}
	end := time.Now()
	if req.GetEndTime() != nil {
		end = req.GetEndTime().AsTime()
	}
	if req.GetStartTime() == nil {
		return nil, toStatus(invalid("query", "start_time", "required"))
	}
	start := req.GetStartTime().AsTime()
	if end.Before(start) {
		return nil, toStatus(invalid("query", "end_time", "must not be before start_time"))
	}
	step := req.GetStep().AsDuration()
	if step <= 0 {
		return nil, toStatus(invalid("query", "step", "must be positive"))
	}
	if n := end.Sub(start) / step; n > maxRangePoints {
		return nil, toStatus(invalid("query", "step", "%d points per series exceed %d; use a longer step", n, maxRangePoints))
	}
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout(req.GetTimeout(), req.GetTimeout() != nil))
	defer cancel()
	q, err := s.db.Engine().NewRangeQuery(ctx, s.db.Queryable(), nil, req.GetQuery(), start, end, step)
	if err != nil {
		return nil, toStatus(invalid("query", "query", "%v", err))
	}
	defer q.Close()
	res, warnings, err := s.result(q.Exec(ctx), int(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.QueryRangeResponse{Result: res, Warnings: warnings}, nil
}

// result converts an engine result, applying a series limit.
func (s *Service) result(r *promql.Result, limit int) (*monitorv1.QueryResult, []string, error) {
	if r.Err != nil {
		return nil, nil, queryError(r.Err)
	}
	if limit <= 0 || limit > maxQuerySeries {
		limit = maxQuerySeries
	}
	var warnings []string
	for _, w := range r.Warnings {
		warnings = append(warnings, w.Error())
	}
	out := &monitorv1.QueryResult{}
	truncated := false
	switch v := r.Value.(type) {
	case promql.Vector:
		out.ResultType = monitorv1.ResultType_RESULT_TYPE_VECTOR
		for _, smp := range v {
			if len(out.Series) >= limit {
				truncated = true
				break
			}
			if smp.H != nil {
				continue
			}
			out.Series = append(out.Series, &monitorv1.TimeSeries{
				Labels: smp.Metric.Map(),
				Points: []*monitorv1.Point{{Time: msTime(smp.T), Value: smp.F}},
			})
		}
	case promql.Matrix:
		out.ResultType = monitorv1.ResultType_RESULT_TYPE_MATRIX
		for _, ser := range v {
			if len(out.Series) >= limit {
				truncated = true
				break
			}
			ts := &monitorv1.TimeSeries{Labels: ser.Metric.Map(), Points: make([]*monitorv1.Point, 0, len(ser.Floats))}
			for _, p := range ser.Floats {
				ts.Points = append(ts.Points, &monitorv1.Point{Time: msTime(p.T), Value: p.F})
			}
			out.Series = append(out.Series, ts)
		}
	case promql.Scalar:
		out.ResultType = monitorv1.ResultType_RESULT_TYPE_SCALAR
		out.Series = []*monitorv1.TimeSeries{{Points: []*monitorv1.Point{{Time: msTime(v.T), Value: v.V}}}}
	case promql.String:
		out.ResultType = monitorv1.ResultType_RESULT_TYPE_STRING
		out.StringValue = v.V
	}
	if truncated {
		warnings = append(warnings, fmt.Sprintf("result truncated to %d series", limit))
	}
	return out, warnings, nil
}

func queryError(err error) error {
	var (
		timeout  promql.ErrQueryTimeout
		canceled promql.ErrQueryCanceled
		samples  promql.ErrTooManySamples
		storErr  promql.ErrStorage
	)
	switch {
	case errors.As(err, &timeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.As(err, &canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.As(err, &samples):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.As(err, &storErr):
		return status.Error(codes.Internal, err.Error())
	}
	return invalid("query", "query", "evaluation failed: %v", err)
}

func msTime(ms int64) *timestamppb.Timestamp { return timestamppb.New(time.UnixMilli(ms)) }

// parseMatchers parses matcher strings such as `job="api"`, naming the
// position of a problem as field[i]: line:column.
func (s *Service) parseMatchers(subject, field string, in []string) ([]*labels.Matcher, error) {
	var out []*labels.Matcher
	for i, m := range in {
		ms, err := s.db.Parser().ParseMetricSelector("{" + m + "}")
		if err != nil {
			return nil, invalid(subject, fmt.Sprintf("%s[%d]", field, i), "%q: %v (positions count the added opening brace)", m, err)
		}
		out = append(out, ms...)
	}
	return out, nil
}

// parseSelectors parses series selectors such as `up{job="api"}`.
func (s *Service) parseSelectors(subject, field string, in []string) ([][]*labels.Matcher, error) {
	var out [][]*labels.Matcher
	for i, sel := range in {
		ms, err := s.db.Parser().ParseMetricSelector(sel)
		if err != nil {
			return nil, invalid(subject, fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
		out = append(out, ms)
	}
	return out, nil
}

// page slices n items by a size and an offset token.
func page(n int, size int32, token string, maxSize int) (start, end int, next string, err error) {
	sz := int(size)
	if sz <= 0 {
		sz = defaultPageSize
	}
	sz = min(sz, maxSize)
	if token != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(token)
		off, perr := strconv.Atoi(string(raw))
		if derr != nil || perr != nil || off < 0 {
			return 0, 0, "", invalid("page", "page_token", "not a token from a previous response")
		}
		start = min(off, n)
	}
	end = min(start+sz, n)
	if end < n {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return start, end, next, nil
}

func timeRange(start, end *timestamppb.Timestamp, def time.Duration) (int64, int64) {
	e := time.Now()
	if end != nil {
		e = end.AsTime()
	}
	st := e.Add(-def)
	if start != nil {
		st = start.AsTime()
	}
	return st.UnixMilli(), e.UnixMilli()
}

// ListMetrics lists metric names with metadata and series counts.
func (s *Service) ListMetrics(ctx context.Context, req *monitorv1.ListMetricsRequest) (*monitorv1.ListMetricsResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	all, err := s.db.Metrics(ctx, math.MinInt64, math.MaxInt64)
	if err != nil {
		return nil, toStatus(err)
	}
	var infos []*monitorv1.MetricInfo
	for _, m := range all {
		if !strings.HasPrefix(m.Name, req.GetNamePrefix()) {
			continue
		}
		md := s.db.Metadata(m.Name)
		infos = append(infos, &monitorv1.MetricInfo{Name: m.Name, Type: metricTypeOf(md.Type), Help: md.Help, Unit: md.Unit, SeriesCount: m.Series})
	}
	start, end, next, err := page(len(infos), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListMetricsResponse{Metrics: infos[start:end], NextPageToken: next}, nil
}

// GetMetricSummary computes current, avg, min, max, count and sum per series
// over a window.
func (s *Service) GetMetricSummary(ctx context.Context, req *monitorv1.GetMetricSummaryRequest) (*monitorv1.GetMetricSummaryResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if !ingest.ValidMetricName(req.GetName()) {
		return nil, toStatus(invalid("summary", "name", "metric name %q must match [a-zA-Z_:][a-zA-Z0-9_:]*", req.GetName()))
	}
	ms, err := s.parseMatchers("summary", "matchers", req.GetMatchers())
	if err != nil {
		return nil, toStatus(err)
	}
	window := time.Hour
	if req.GetWindow() != nil {
		if window = req.GetWindow().AsDuration(); window <= 0 {
			return nil, toStatus(invalid("summary", "window", "must be positive"))
		}
	}
	end := time.Now()
	if req.GetEndTime() != nil {
		end = req.GetEndTime().AsTime()
	}
	start := end.Add(-window)
	sums, err := s.summarize(ctx, req.GetName(), ms, start, end)
	if err != nil {
		return nil, toStatus(err)
	}
	from, to, next, err := page(len(sums), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.GetMetricSummaryResponse{
		Series: sums[from:to], WindowStart: timestamppb.New(start), WindowEnd: timestamppb.New(end), NextPageToken: next,
	}, nil
}

// summarize reads every sample of matching series in [start, end].
func (s *Service) summarize(ctx context.Context, name string, ms []*labels.Matcher, start, end time.Time) ([]*monitorv1.SeriesSummary, error) {
	mint, maxt := start.UnixMilli(), end.UnixMilli()
	q, err := s.db.Queryable().Querier(mint, maxt)
	if err != nil {
		return nil, fmt.Errorf("open querier: %w", err)
	}
	defer q.Close()
	all := append([]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, name)}, ms...)
	set := q.Select(ctx, true, &storage.SelectHints{Start: mint, End: maxt}, all...)
	var out []*monitorv1.SeriesSummary
	var it chunkenc.Iterator
	for set.Next() {
		ser := set.At()
		it = ser.Iterator(it)
		sum := &monitorv1.SeriesSummary{Min: math.Inf(1), Max: math.Inf(-1)}
		var lastT int64
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				continue
			}
			t, v := it.At()
			if t < mint || t > maxt {
				continue
			}
			sum.Count++
			sum.Sum += v
			sum.Min = math.Min(sum.Min, v)
			sum.Max = math.Max(sum.Max, v)
			sum.Current, lastT = v, t
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", ser.Labels(), err)
		}
		if sum.Count == 0 {
			continue
		}
		sum.Avg = sum.Sum / float64(sum.Count)
		sum.LastSampleTime = msTime(lastT)
		sum.Labels = ser.Labels().Map()
		out = append(out, sum)
	}
	if err := set.Err(); err != nil {
		return nil, fmt.Errorf("select %s: %w", name, err)
	}
	return out, nil
}

// ListSeries lists label sets of series matching any selector.
func (s *Service) ListSeries(ctx context.Context, req *monitorv1.ListSeriesRequest) (*monitorv1.ListSeriesResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if len(req.GetSelectors()) == 0 {
		return nil, toStatus(invalid("series", "selectors", "at least one selector is required"))
	}
	sets, err := s.parseSelectors("series", "selectors", req.GetSelectors())
	if err != nil {
		return nil, toStatus(err)
	}
	mint, maxt := timeRange(req.GetStartTime(), req.GetEndTime(), time.Hour)
	q, err := s.db.Queryable().Querier(mint, maxt)
	if err != nil {
		return nil, toStatus(err)
	}
	defer q.Close()
	seen := map[uint64]labels.Labels{}
	for _, ms := range sets {
		set := q.Select(ctx, false, &storage.SelectHints{Start: mint, End: maxt, Func: "series"}, ms...)
		for set.Next() {
			l := set.At().Labels()
			seen[l.Hash()] = l
		}
		if err := set.Err(); err != nil {
			return nil, toStatus(fmt.Errorf("select series: %w", err))
		}
	}
	list := make([]labels.Labels, 0, len(seen))
	for _, l := range seen {
		list = append(list, l)
	}
	slices.SortFunc(list, labels.Compare)
	start, end, next, err := page(len(list), req.GetPageSize(), req.GetPageToken(), 10000)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &monitorv1.ListSeriesResponse{NextPageToken: next}
	for _, l := range list[start:end] {
		resp.Series = append(resp.Series, &monitorv1.SeriesLabels{Labels: l.Map()})
	}
	return resp, nil
}

// ListLabelNames lists label names of matching series.
func (s *Service) ListLabelNames(ctx context.Context, req *monitorv1.ListLabelNamesRequest) (*monitorv1.ListLabelNamesResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	names, err := s.labelQuery(ctx, req.GetSelectors(), req.GetStartTime(), req.GetEndTime(), func(q storage.Querier, ms []*labels.Matcher) ([]string, error) {
		v, _, err := q.LabelNames(ctx, nil, ms...)
		return v, err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListLabelNamesResponse{Names: names}, nil
}

// ListLabelValues lists the values of one label in matching series.
func (s *Service) ListLabelValues(ctx context.Context, req *monitorv1.ListLabelValuesRequest) (*monitorv1.ListLabelValuesResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if req.GetName() != model.MetricNameLabel && !ingest.ValidLabelName(req.GetName()) {
		return nil, toStatus(invalid("labels", "name", "label name %q must match [a-zA-Z_][a-zA-Z0-9_]*", req.GetName()))
	}
	values, err := s.labelQuery(ctx, req.GetSelectors(), req.GetStartTime(), req.GetEndTime(), func(q storage.Querier, ms []*labels.Matcher) ([]string, error) {
		v, _, err := q.LabelValues(ctx, req.GetName(), nil, ms...)
		return v, err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	ps := req.GetPageSize()
	if ps <= 0 {
		ps = 1000
	}
	start, end, next, err := page(len(values), ps, req.GetPageToken(), 10000)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListLabelValuesResponse{Values: values[start:end], NextPageToken: next}, nil
}

// labelQuery runs f once per selector (or once with none) and returns the
// sorted union.
func (s *Service) labelQuery(_ context.Context, selectors []string, start, end *timestamppb.Timestamp, f func(storage.Querier, []*labels.Matcher) ([]string, error)) ([]string, error) {
	sets, err := s.parseSelectors("labels", "selectors", selectors)
	if err != nil {
		return nil, err
	}
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{nil}
	}
	mint, maxt := timeRange(start, end, time.Hour)
	q, err := s.db.Queryable().Querier(mint, maxt)
	if err != nil {
		return nil, fmt.Errorf("open querier: %w", err)
	}
	defer q.Close()
	seen := map[string]struct{}{}
	for _, ms := range sets {
		vals, err := f(q, ms)
		if err != nil {
			return nil, fmt.Errorf("label query: %w", err)
		}
		for _, v := range vals {
			seen[v] = struct{}{}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}
