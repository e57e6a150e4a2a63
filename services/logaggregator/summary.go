package logaggregator

import (
	"context"
	"sort"
	"strconv"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/opsuite/opsuite/services/logaggregator/internal/signature"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
)

// signatureProto converts a stored signature; window counts are set by the
// caller.
func signatureProto(sig *store.Signature, windowCount uint64, windowStart int64) *lav1.ErrorSignature {
	type sc struct {
		src string
		n   uint64
	}
	var srcs []sc
	for k, v := range sig.Sources {
		srcs = append(srcs, sc{k, v})
	}
	sort.Slice(srcs, func(i, j int) bool {
		return srcs[i].n > srcs[j].n || srcs[i].n == srcs[j].n && srcs[i].src < srcs[j].src
	})
	out := &lav1.ErrorSignature{
		Id: sig.ID, Template: sig.Template, Application: sig.Application, Environment: sig.Environment,
		Level: sig.Level, Count: windowCount, TotalCount: sig.Total,
		FirstSeen: tsOf(sig.FirstSeen), LastSeen: tsOf(sig.LastSeen),
		SampleMessage: sig.Sample, SampleTraceId: sig.SampleTrace,
		FirstSeenRevision: sig.FirstRevision, FirstSeenRolloutId: sig.FirstRollout,
		NewInWindow: windowStart != 0 && sig.FirstSeen >= windowStart,
	}
	for i, s := range srcs {
		if i == 10 {
			break
		}
		out.Sources = append(out.Sources, s.src)
	}
	return out
}

// GetErrorSummary counts errors per source over a window and groups them
// into signatures.
func (s *Service) GetErrorSummary(ctx context.Context, req *lav1.GetErrorSummaryRequest) (*lav1.GetErrorSummaryResponse, error) {
	const subject = "error summary request"
	window := time.Hour
	if w := req.GetWindow(); w != nil {
		if w.CheckValid() != nil || w.AsDuration() < 0 {
			return nil, toStatus(invalid(subject, "window", "must be a positive duration"))
		}
		if w.AsDuration() > 0 {
			window = w.AsDuration()
		}
	}
	end := time.Now()
	if t := req.GetEndTime(); t != nil {
		if t.CheckValid() != nil {
			return nil, toStatus(invalid(subject, "end_time", "invalid timestamp"))
		}
		end = t.AsTime()
	}
	if req.GetSignatureLimit() < 0 {
		return nil, toStatus(invalid(subject, "signature_limit", "must not be negative"))
	}
	limit := int(req.GetSignatureLimit())
	if limit == 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	minLevel := req.GetMinLevel()
	if minLevel == lav1.LogLevel_LOG_LEVEL_UNSPECIFIED {
		minLevel = lav1.LogLevel_LOG_LEVEL_ERROR
	}
	start := end.Add(-window)
	spec := filter.Spec{MinLevel: minLevel, Sources: req.GetSources(), Start: start.UnixNano(), End: end.UnixNano()}
	if app := req.GetApplication(); app != "" {
		spec.Matchers = []string{"app=" + strconv.Quote(app)}
	}
	f, err := filter.Compile(spec)
	if err != nil {
		return nil, toStatus(filterError(subject, err))
	}
	st, err := s.storeOrErr()
	if err != nil {
		return nil, toStatus(err)
	}
	type srcAgg struct {
		count, fatal uint64
		sigs         map[string]struct{}
		last         int64
	}
	type sigAgg struct {
		count       uint64
		tmpl        string
		scope       string
		app, env    string
		level       lav1.LogLevel
		first, last int64
		sample      string
		trace       string
		sources     map[string]uint64
	}
	bySrc := map[string]*srcAgg{}
	bySig := map[string]*sigAgg{}
	var total uint64
	if _, err := st.Scan(ctx, f, func(r *record.Record) bool {
		total++
		sa := bySrc[r.Source]
		if sa == nil {
			sa = &srcAgg{sigs: map[string]struct{}{}}
			bySrc[r.Source] = sa
		}
		sa.count++
		if r.Level == lav1.LogLevel_LOG_LEVEL_FATAL {
			sa.fatal++
		}
		sa.last = max(sa.last, r.Time)
		scope, app, env := store.SignatureScope(r)
		tmpl := signature.Template(r.Message)
		id := signature.ID(scope, tmpl)
		sa.sigs[id] = struct{}{}
		g := bySig[id]
		if g == nil {
			g = &sigAgg{tmpl: tmpl, scope: scope, app: app, env: env, first: r.Time, last: r.Time, sources: map[string]uint64{}}
			bySig[id] = g
		}
		g.count++
		g.level = max(g.level, r.Level)
		g.first = min(g.first, r.Time)
		if r.Time >= g.last {
			g.last, g.sample, g.trace = r.Time, r.Message, r.TraceID
		}
		g.sources[r.Source]++
		return true
	}); err != nil {
		return nil, toStatus(err)
	}
	resp := &lav1.GetErrorSummaryResponse{WindowStart: tsOf(start.UnixNano()), WindowEnd: tsOf(end.UnixNano()), TotalCount: total}
	for src, a := range bySrc {
		resp.Sources = append(resp.Sources, &lav1.SourceErrorCount{
			Source: src, Count: a.count, FatalCount: a.fatal, SignatureCount: uint32(len(a.sigs)), LastSeen: tsOf(a.last),
		})
	}
	sort.Slice(resp.Sources, func(i, j int) bool {
		a, b := resp.Sources[i], resp.Sources[j]
		return a.Count > b.Count || a.Count == b.Count && a.Source < b.Source
	})
	ids := make([]string, 0, len(bySig))
	for id := range bySig {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := bySig[ids[i]], bySig[ids[j]]
		return a.count > b.count || a.count == b.count && ids[i] < ids[j]
	})
	if len(ids) > limit {
		ids = ids[:limit]
	}
	for _, id := range ids {
		g := bySig[id]
		stored, ok := st.Signature(id)
		if !ok {
			// Below the tracked level: what the window shows is all there is.
			stored = store.Signature{ID: id, Template: g.tmpl, Scope: g.scope, Application: g.app, Environment: g.env,
				Level: g.level, Total: g.count, FirstSeen: g.first, LastSeen: g.last, Sample: g.sample, SampleTrace: g.trace}
		}
		stored.Sources = g.sources
		stored.Level = max(stored.Level, g.level)
		sig := signatureProto(&stored, g.count, start.UnixNano())
		resp.Signatures = append(resp.Signatures, sig)
	}
	return resp, nil
}
