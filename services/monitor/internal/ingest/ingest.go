// Package ingest turns pushed samples (the JSON-friendly list and the
// columnar SampleBatch) into validated series for the store, and appends
// them, counting what the store refuses.
//
// NaN and ±Inf values are stored as given, as Prometheus does, with one
// exception: every NaN is stored as the ordinary NaN, never as the bit
// pattern Prometheus reserves for staleness markers, so a client cannot end
// a series by pushing that pattern. NaN never crosses a threshold (every
// comparison with NaN is false); +Inf and -Inf compare as infinities.
package ingest

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync/atomic"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

// maxProblems bounds the field errors collected from one request.
const maxProblems = 20

// Series is one validated series of a push and its samples.
type Series struct {
	Labels labels.Labels
	// Prefix and Index locate the series in the request: Prefix[Index],
	// e.g. "batch.series" and 3, or "samples" and 7.
	Prefix string
	Index  int
	T      []int64
	V      []float64
	// Type, Help and Unit are the metric's metadata when the push gave them.
	Type, Help, Unit string
	// Ref is the store's reference of the series when known (0 otherwise).
	Ref storage.SeriesRef
	// key is the RefCache key of a batch series (0 for none) and pairs the
	// encoding of its pushed pairs, set when the cache should learn it.
	key   uint64
	pairs string
	// slot, when not nil, is where a batch shape keeps the series' ref.
	slot *atomic.Uint64
}

// Field is the path of the series in the request, e.g. "batch.series[3]".
func (s Series) Field() string { return fmt.Sprintf("%s[%d]", s.Prefix, s.Index) }

// Decoder validates pushes. It is not safe for concurrent use; keep one per
// goroutine or stream.
type Decoder struct {
	b     labels.ScratchBuilder
	names map[string]struct{}
	cache *RefCache
	// hashes are the symbol hashes of the batch being decoded.
	hashes []uint64
	// w is the state of the wire decoder (wire.go).
	w wireState
}

// NewDecoder returns a Decoder; cache, when not nil, remembers series seen
// before (share one cache among the decoders of one store).
func NewDecoder(cache *RefCache) *Decoder {
	return &Decoder{b: labels.NewScratchBuilder(8), names: map[string]struct{}{}, cache: cache}
}

// Decode validates a push request and returns its series; now (ms) is the
// time of samples without one. A structurally invalid request is refused as
// a whole with a *validation.Error naming every field at fault (up to 20).
func (d *Decoder) Decode(req *monitorv1.PushMetricsRequest, now int64) ([]Series, error) {
	verr := validation.New("push")
	out := make([]Series, 0, len(req.GetSamples())+len(req.GetBatch().GetSeries()))
	for i, s := range req.GetSamples() {
		if len(verr.Fields) >= maxProblems {
			break
		}
		field := fmt.Sprintf("samples[%d]", i)
		ls, ok := d.sampleLabels(verr, field, s)
		if !ok {
			continue
		}
		t := now
		if s.GetTime() != nil {
			if err := s.GetTime().CheckValid(); err != nil {
				verr.Add(field+".time", "invalid timestamp: %v", err)
				continue
			}
			t = s.GetTime().AsTime().UnixMilli()
		}
		out = append(out, Series{Labels: ls, Prefix: "samples", Index: i, T: []int64{t}, V: []float64{normalizeValue(s.GetValue())}})
	}
	if b := req.GetBatch(); b != nil {
		out = d.decodeBatch(verr, "batch", b, now, out)
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeBatch validates one columnar batch; prefix names it in errors.
func (d *Decoder) DecodeBatch(prefix string, b *monitorv1.SampleBatch, now int64) ([]Series, error) {
	verr := validation.New("push")
	out := d.decodeBatch(verr, prefix, b, now, nil)
	if err := verr.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func (d *Decoder) sampleLabels(verr *validation.Error, field string, s *monitorv1.Sample) (labels.Labels, bool) {
	ok := true
	if !ValidMetricName(s.GetName()) {
		verr.Add(field+".name", "metric name %q must match [a-zA-Z_:][a-zA-Z0-9_:]*", s.GetName())
		ok = false
	}
	d.b.Reset()
	d.b.Add(model.MetricNameLabel, s.GetName())
	// In name order, so the errors of a request are always the same.
	for _, k := range slices.Sorted(maps.Keys(s.GetLabels())) {
		v := s.GetLabels()[k]
		if !validLabelName(k) {
			verr.Add(fmt.Sprintf("%s.labels[%q]", field, k), "label name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")
			ok = false
			continue
		}
		if !utf8.ValidString(v) {
			verr.Add(fmt.Sprintf("%s.labels[%q]", field, k), "label value is not valid UTF-8")
			ok = false
			continue
		}
		if v == "" {
			continue
		}
		d.b.Add(k, v)
	}
	if !ok {
		return labels.EmptyLabels(), false
	}
	d.b.Sort()
	return d.b.Labels(), true
}

func (d *Decoder) decodeBatch(verr *validation.Error, prefix string, b *monitorv1.SampleBatch, now int64, out []Series) []Series {
	syms := b.GetSymbols()
	if len(b.GetSeries()) > 0 && (len(syms) == 0 || syms[0] != "") {
		verr.Add(prefix+".symbols[0]", "must be the empty string")
		return out
	}
	for i, sym := range syms {
		if !utf8.ValidString(sym) {
			verr.Add(fmt.Sprintf("%s.symbols[%d]", prefix, i), "not valid UTF-8")
			return out
		}
	}
	n := uint32(len(syms))
	if d.cache != nil {
		d.hashes = d.hashes[:0]
		for _, sym := range syms {
			d.hashes = append(d.hashes, xxhash.Sum64String(sym))
		}
	}
	for i, ser := range b.GetSeries() {
		if len(verr.Fields) >= maxProblems {
			break
		}
		refs := ser.GetLabelRefs()
		var key uint64
		if d.cache != nil && len(refs)%2 == 0 && len(ser.GetTimestampsMs()) == len(ser.GetValues()) && ser.GetHelpRef() < n && ser.GetUnitRef() < n {
			if k, ok := d.refsKey(refs, n); ok {
				key = k
				if e, hit := lookup(d.cache, key, syms, refs); hit {
					s := d.batchSeries(prefix, i, ser, syms, e.lbls, e.ref, now)
					s.key, s.pairs = key, e.pairs
					out = append(out, s)
					continue
				}
			}
		}
		field := fmt.Sprintf("%s.series[%d]", prefix, i)
		if len(refs)%2 != 0 {
			verr.Add(field+".label_refs", "must hold name/value pairs (odd length %d)", len(refs))
			continue
		}
		if len(ser.GetTimestampsMs()) != len(ser.GetValues()) {
			verr.Add(field+".values", "%d values for %d timestamps", len(ser.GetValues()), len(ser.GetTimestampsMs()))
			continue
		}
		if ser.GetHelpRef() >= n || ser.GetUnitRef() >= n {
			verr.Add(field+".help_ref", "symbol index out of range (%d symbols)", n)
			continue
		}
		d.b.Reset()
		clear(d.names)
		ok, hasName := true, false
		for j := 0; j < len(refs); j += 2 {
			nr, vr := refs[j], refs[j+1]
			if nr >= n || vr >= n {
				verr.Add(fmt.Sprintf("%s.label_refs[%d]", field, j), "symbol index out of range (%d symbols)", n)
				ok = false
				break
			}
			name, val := syms[nr], syms[vr]
			if _, dup := d.names[name]; dup {
				verr.Add(fmt.Sprintf("%s.label_refs[%d]", field, j), "label %q repeated", name)
				ok = false
				break
			}
			d.names[name] = struct{}{}
			if name == model.MetricNameLabel {
				if !ValidMetricName(val) {
					verr.Add(fmt.Sprintf("%s.label_refs[%d]", field, j+1), "metric name %q must match [a-zA-Z_:][a-zA-Z0-9_:]*", val)
					ok = false
					break
				}
				hasName = true
			} else if !validLabelName(name) {
				verr.Add(fmt.Sprintf("%s.label_refs[%d]", field, j), "label name %q must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __", name)
				ok = false
				break
			}
			if val == "" {
				continue
			}
			d.b.Add(name, val)
		}
		if !ok {
			continue
		}
		if !hasName {
			verr.Add(field+".label_refs", "the metric name (label __name__) is required")
			continue
		}
		d.b.Sort()
		s := d.batchSeries(prefix, i, ser, syms, d.b.Labels(), 0, now)
		if key != 0 {
			s.key, s.pairs = key, pairsEncoding(func(r uint32) string { return syms[r] }, refs)
		}
		out = append(out, s)
	}
	return out
}

// batchSeries builds the Series of a validated batch entry.
func (d *Decoder) batchSeries(prefix string, i int, ser *monitorv1.SeriesSamples, syms []string, ls labels.Labels, ref storage.SeriesRef, now int64) Series {
	ts := ser.GetTimestampsMs()
	vs := ser.GetValues()
	for k := range vs {
		if math.IsNaN(vs[k]) {
			vs[k] = normalizeValue(vs[k])
		}
	}
	if hasZero(ts) {
		cp := make([]int64, len(ts))
		for k, t := range ts {
			if t == 0 {
				t = now
			}
			cp[k] = t
		}
		ts = cp
	}
	s := Series{Labels: ls, Prefix: prefix + ".series", Index: i, T: ts, V: vs, Type: metricType(ser.GetType()), Ref: ref}
	if r := ser.GetHelpRef(); r != 0 {
		s.Help = syms[r]
	}
	if r := ser.GetUnitRef(); r != 0 {
		s.Unit = syms[r]
	}
	return s
}

// refsKey is the cache key of pairs over the batch's symbol hashes; ok is
// false when an index is out of range.
func (d *Decoder) refsKey(refs []uint32, n uint32) (uint64, bool) {
	h := uint64(keySeed)
	for _, r := range refs {
		if r >= n {
			return 0, false
		}
		h = keyHash(h, d.hashes[r])
	}
	return finishKey(h), true
}

func hasZero(ts []int64) bool {
	for _, t := range ts {
		if t == 0 {
			return true
		}
	}
	return false
}

// normalizeValue maps every NaN, the staleness marker included, to the
// ordinary NaN.
func normalizeValue(v float64) float64 {
	if math.IsNaN(v) {
		return math.Float64frombits(value.NormalNaN)
	}
	return v
}

func metricType(t monitorv1.MetricType) string {
	switch t {
	case monitorv1.MetricType_METRIC_TYPE_COUNTER:
		return "counter"
	case monitorv1.MetricType_METRIC_TYPE_GAUGE:
		return "gauge"
	case monitorv1.MetricType_METRIC_TYPE_HISTOGRAM:
		return "histogram"
	case monitorv1.MetricType_METRIC_TYPE_SUMMARY:
		return "summary"
	}
	return ""
}

// ValidMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*.
func ValidMetricName(s string) bool { return validMetricName(s) }

func validMetricName[S []byte | string](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// ValidLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*.
func ValidLabelName(s string) bool { return anyLabelName(s) }

func anyLabelName[S []byte | string](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// validLabelName is ValidLabelName without the reserved "__" prefix.
func validLabelName[S []byte | string](s S) bool {
	return anyLabelName(s) && !(len(s) >= 2 && s[0] == '_' && s[1] == '_')
}

// Rejection counts samples the store refused for one reason.
type Rejection struct {
	Field  string
	Reason string
	Count  uint64
}

// Result is the outcome of appending series.
type Result struct {
	Accepted   uint64
	Rejected   uint64
	Rejections []Rejection
}

// Add folds o into r, keeping at most 10 reasons.
func (r *Result) Add(o Result) {
	r.Accepted += o.Accepted
	r.Rejected += o.Rejected
	for _, rj := range o.Rejections {
		r.reject(rj.Field, rj.Reason, rj.Count)
	}
}

func (r *Result) reject(field, reason string, n uint64) {
	for i := range r.Rejections {
		if r.Rejections[i].Reason == reason {
			r.Rejections[i].Count += n
			return
		}
	}
	if len(r.Rejections) < 10 {
		r.Rejections = append(r.Rejections, Rejection{Field: field, Reason: reason, Count: n})
	}
}

// Append writes series through app and commits. Samples the store refuses
// (out of order, too old, duplicate timestamp with another value) are
// counted by reason; the rest are stored. cache, when not nil, learns the
// store's reference of each batch series.
func Append(app storage.Appender, series []Series, cache *RefCache) (Result, error) {
	var res Result
	for _, s := range series {
		ref := s.Ref
		for k, t := range s.T {
			r, err := app.Append(ref, s.Labels, t, s.V[k])
			if err != nil {
				reason, known := rejectionReason(err)
				if !known {
					_ = app.Rollback()
					return Result{}, fmt.Errorf("append %s: %w", s.Field(), err)
				}
				res.Rejected++
				res.reject(fmt.Sprintf("%s.values[%d]", s.Field(), k), reason, 1)
				continue
			}
			if r != ref && cache != nil && s.key != 0 {
				cache.store(s.key, s.pairs, s.Labels, r)
				if s.slot != nil {
					s.slot.Store(uint64(r))
				}
			}
			ref = r
			res.Accepted++
		}
	}
	if err := app.Commit(); err != nil {
		return Result{}, fmt.Errorf("commit samples: %w", err)
	}
	return res, nil
}

func rejectionReason(err error) (string, bool) {
	switch {
	case errors.Is(err, storage.ErrOutOfOrderSample):
		return "out of order sample", true
	case errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrTooOldSample):
		return "too old for the store (before the head block or retention)", true
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return "another value already stored at this timestamp", true
	}
	return "", false
}
