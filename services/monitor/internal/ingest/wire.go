package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ErrMalformed means the request's bytes are not a valid protobuf encoding
// of its message.
var ErrMalformed = errors.New("malformed protobuf message")

// Field numbers of the columnar batch in the wire format
// (proto/opsuite/monitor/v1/monitor.proto).
const (
	pushSamplesField   = 1 // PushMetricsRequest.samples
	pushBatchField     = 2 // PushMetricsRequest.batch
	streamBatchField   = 1 // PushMetricsStreamRequest.batch
	batchSymbolsField  = 1 // SampleBatch.symbols
	batchSeriesField   = 2 // SampleBatch.series
	seriesRefsField    = 1 // SeriesSamples.label_refs
	seriesTimesField   = 2 // SeriesSamples.timestamps_ms
	seriesValuesField  = 3 // SeriesSamples.values
	seriesTypeField    = 4 // SeriesSamples.type
	seriesHelpRefField = 5 // SeriesSamples.help_ref
	seriesUnitRefField = 6 // SeriesSamples.unit_ref
)

// Per-symbol facts, each worked out once per batch.
const (
	symChecked    uint8 = 1 << iota
	symLabelName        // a valid label name (not reserved)
	symMetricName       // a valid metric name
	symNameLabel        // "__name__"
	symString           // strs holds the symbol as a string
)

// wireState is the decoder's scratch memory for wire batches, reused from
// request to request.
type wireState struct {
	syms   [][]byte // symbols, pointing into the request bytes
	flags  []uint8
	strs   []string
	series [][]byte // encoded SeriesSamples
	spans  []wireSpan
	refs   []uint32 // label refs of all series, concatenated
	ts     []int64  // timestamps of all series, concatenated
	vs     []float64
	out    []Series
}

// wireSpan locates one series' fields in the concatenated arrays.
type wireSpan struct {
	r0, r1, s0, s1 int
	typ            int32
	help, unit     uint32
}

// DecodeWire decodes and validates the protobuf encoding of a
// PushMetricsRequest. It gives exactly what proto.Unmarshal followed by
// Decode gives — the same series or the same field errors — but reads a
// columnar batch straight from the bytes: no message per series, no string
// per symbol, each symbol checked and hashed once, and series seen before
// found in the RefCache by the hashes of their pairs. Requests the fast path
// does not take (JSON-style samples, invalid input) go through Decode.
//
// The series returned, and their samples, are only valid until the
// decoder's next call: they share the decoder's memory. A request that is
// not valid protobuf is an error wrapping ErrMalformed.
func (d *Decoder) DecodeWire(raw []byte, now int64) ([]Series, error) {
	batch, ok := singleBatch(raw, pushBatchField, pushSamplesField)
	if ok {
		if out, ok := d.decodeBatchWire("batch", batch, now); ok {
			return out, nil
		}
	}
	var req monitorv1.PushMetricsRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return d.Decode(&req, now)
}

// DecodeWireStream is DecodeWire for one PushMetricsStreamRequest; prefix
// names its batch in errors, as in DecodeBatch.
func (d *Decoder) DecodeWireStream(prefix string, raw []byte, now int64) ([]Series, error) {
	batch, ok := singleBatch(raw, streamBatchField, 0)
	if ok {
		if out, ok := d.decodeBatchWire(prefix, batch, now); ok {
			return out, nil
		}
	}
	var req monitorv1.PushMetricsStreamRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return d.DecodeBatch(prefix, req.GetBatch(), now)
}

// singleBatch finds the one batch field of a message; ok is false when the
// message has none, more than one (protobuf merges them), the field
// avoid (samples), or is not well formed.
func singleBatch(b []byte, batchField, avoid protowire.Number) ([]byte, bool) {
	var batch []byte
	found := false
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		switch {
		case num == batchField && typ == protowire.BytesType && !found:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			batch, found, b = v, true, b[n:]
		case num == batchField || (avoid != 0 && num == avoid):
			return nil, false
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
		}
	}
	return batch, found
}

// decodeBatchWire decodes an encoded SampleBatch whose every series is
// valid; ok is false for anything else, left to the message decoder, which
// names the fields at fault.
func (d *Decoder) decodeBatchWire(prefix string, b []byte, now int64) ([]Series, bool) {
	w := &d.w
	w.syms, w.series = w.syms[:0], w.series[:0]
	// The symbol fields, when they are one run of the batch's bytes (as
	// encoders write them), are the key of the batch's shape.
	all := b
	symStart, symEnd, symRun := -1, -1, true
	for len(b) > 0 {
		pos := len(all) - len(b)
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		switch {
		case (num == batchSymbolsField || num == batchSeriesField) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			if num == batchSymbolsField {
				w.syms = append(w.syms, v)
				if symStart < 0 {
					symStart = pos
				} else if symEnd != pos {
					symRun = false
				}
				symEnd = len(all) - len(b)
			} else {
				w.series = append(w.series, v)
			}
		case num == batchSymbolsField || num == batchSeriesField:
			return nil, false
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
		}
	}
	nsym := len(w.syms)
	if len(w.series) > 0 && (nsym == 0 || len(w.syms[0]) != 0) {
		return nil, false
	}
	w.spans, w.refs, w.ts, w.vs = w.spans[:0], w.refs[:0], w.ts[:0], w.vs[:0]
	for _, sb := range w.series {
		sp, ok := w.parseSeries(sb)
		if !ok {
			return nil, false
		}
		w.spans = append(w.spans, sp)
	}
	n := uint32(nsym)
	seriesPrefix := prefix + ".series"
	var symbols []byte
	if d.cache != nil && symRun && symStart >= 0 && len(w.spans) > 0 {
		symbols = all[symStart:symEnd]
		if sh := d.cache.shapes.find(symbols, w.refs, w.spans); sh != nil {
			return d.shapeSeries(sh, seriesPrefix, n, now)
		}
	}
	w.flags = resize(w.flags, nsym)
	w.strs = resize(w.strs, nsym)
	if d.cache != nil {
		d.hashes = resize(d.hashes, nsym)
	}
	for i, s := range w.syms {
		if !utf8.Valid(s) {
			return nil, false
		}
		if d.cache != nil {
			d.hashes[i] = symHash(s)
		}
	}
	out := w.out[:0]
	allHit := true
	for i, sp := range w.spans {
		refs := w.refs[sp.r0:sp.r1]
		ts, vs := w.ts[sp.s0:sp.s1], w.vs[sp.s0:sp.s1]
		if len(refs)%2 != 0 || sp.help >= n || sp.unit >= n {
			return nil, false
		}
		s := Series{Prefix: seriesPrefix, Index: i, T: ts, V: vs, Type: metricType(monitorv1.MetricType(sp.typ))}
		var key uint64
		hit := false
		if d.cache != nil {
			var ok bool
			if key, ok = d.refsKey(refs, n); !ok {
				return nil, false
			}
			var e cacheEntry
			if e, hit = lookup(d.cache, key, w.syms, refs); hit {
				s.Labels, s.Ref, s.key, s.pairs = e.lbls, e.ref, key, e.pairs
			}
		}
		if !hit {
			allHit = false
			if !d.wireLabels(refs, n) {
				return nil, false
			}
			s.Labels = d.b.Labels()
			if key != 0 {
				s.key, s.pairs = key, pairsEncoding(w.str, refs)
			}
		}
		fixSamples(ts, vs, now)
		if sp.help != 0 {
			s.Help = w.str(sp.help)
		}
		if sp.unit != 0 {
			s.Unit = w.str(sp.unit)
		}
		out = append(out, s)
	}
	w.out = out
	if allHit && symbols != nil {
		d.cache.shapes.learn(symbols, w.refs, w.spans, out)
	}
	return out, true
}

// shapeSeries gives the series of a batch of a known shape.
func (d *Decoder) shapeSeries(sh *shape, seriesPrefix string, n uint32, now int64) ([]Series, bool) {
	w := &d.w
	out := w.out[:0]
	strs := false
	for i, sp := range w.spans {
		if sp.help >= n || sp.unit >= n {
			return nil, false
		}
		ss := &sh.series[i]
		ts, vs := w.ts[sp.s0:sp.s1], w.vs[sp.s0:sp.s1]
		fixSamples(ts, vs, now)
		s := Series{Labels: ss.lbls, Prefix: seriesPrefix, Index: i, T: ts, V: vs, Type: metricType(monitorv1.MetricType(sp.typ)),
			Ref: storage.SeriesRef(ss.ref.Load()), key: ss.key, pairs: ss.pairs, slot: &ss.ref}
		if sp.help != 0 || sp.unit != 0 {
			if !strs {
				w.flags = resize(w.flags, len(w.syms))
				w.strs = resize(w.strs, len(w.syms))
				strs = true
			}
			if sp.help != 0 {
				s.Help = w.str(sp.help)
			}
			if sp.unit != 0 {
				s.Unit = w.str(sp.unit)
			}
		}
		out = append(out, s)
	}
	w.out = out
	return out, true
}

// fixSamples stores NaN as the ordinary NaN and gives samples without a
// time the time of receipt.
func fixSamples(ts []int64, vs []float64, now int64) {
	for k := range vs {
		if math.IsNaN(vs[k]) {
			vs[k] = normalizeValue(vs[k])
		}
	}
	for k := range ts {
		if ts[k] == 0 {
			ts[k] = now
		}
	}
}

// parseSeries reads one encoded SeriesSamples into the shared arrays,
// accepting packed and unpacked repeated fields as protobuf requires.
func (w *wireState) parseSeries(b []byte) (wireSpan, bool) {
	sp := wireSpan{r0: len(w.refs), s0: len(w.ts)}
	v0 := len(w.vs)
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return sp, false
		}
		b = b[n:]
		switch {
		case (num == seriesRefsField || num == seriesTimesField) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return sp, false
			}
			b = b[n:]
			for len(v) > 0 {
				x, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return sp, false
				}
				v = v[m:]
				w.appendVarint(num, x)
			}
		case num == seriesRefsField || num == seriesTimesField || num == seriesTypeField || num == seriesHelpRefField || num == seriesUnitRefField:
			if typ != protowire.VarintType {
				return sp, false
			}
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return sp, false
			}
			b = b[n:]
			switch num {
			case seriesTypeField:
				sp.typ = int32(x)
			case seriesHelpRefField:
				sp.help = uint32(x)
			case seriesUnitRefField:
				sp.unit = uint32(x)
			default:
				w.appendVarint(num, x)
			}
		case num == seriesValuesField && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v)%8 != 0 {
				return sp, false
			}
			b = b[n:]
			for ; len(v) > 0; v = v[8:] {
				w.vs = append(w.vs, math.Float64frombits(binary.LittleEndian.Uint64(v)))
			}
		case num == seriesValuesField && typ == protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return sp, false
			}
			b = b[n:]
			w.vs = append(w.vs, math.Float64frombits(x))
		case num == seriesValuesField:
			return sp, false
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return sp, false
			}
			b = b[n:]
		}
	}
	sp.r1, sp.s1 = len(w.refs), len(w.ts)
	if len(w.vs)-v0 != sp.s1-sp.s0 {
		return sp, false
	}
	return sp, true
}

func (w *wireState) appendVarint(num protowire.Number, x uint64) {
	if num == seriesRefsField {
		w.refs = append(w.refs, uint32(x))
	} else {
		w.ts = append(w.ts, int64(x))
	}
}

// wireLabels validates the pairs refs (indexes checked by the caller) and
// leaves their sorted labels in d.b; false when they are not valid.
func (d *Decoder) wireLabels(refs []uint32, n uint32) bool {
	w := &d.w
	d.b.Reset()
	manyLabels := len(refs) > 32
	if manyLabels {
		clear(d.names)
	}
	hasName := false
	for j := 0; j < len(refs); j += 2 {
		nr, vr := refs[j], refs[j+1]
		if nr >= n || vr >= n {
			return false
		}
		if manyLabels {
			name := w.str(nr)
			if _, dup := d.names[name]; dup {
				return false
			}
			d.names[name] = struct{}{}
		} else {
			for k := 0; k < j; k += 2 {
				if string(w.syms[refs[k]]) == string(w.syms[nr]) {
					return false
				}
			}
		}
		f := w.flag(nr)
		if f&symNameLabel != 0 {
			if w.flag(vr)&symMetricName == 0 {
				return false
			}
			hasName = true
		} else if f&symLabelName == 0 {
			return false
		}
		if len(w.syms[vr]) == 0 {
			continue
		}
		d.b.Add(w.str(nr), w.str(vr))
	}
	if !hasName {
		return false
	}
	d.b.Sort()
	return true
}

// flag returns what symbol i is, working it out the first time.
func (w *wireState) flag(i uint32) uint8 {
	f := w.flags[i]
	if f&symChecked == 0 {
		s := w.syms[i]
		f |= symChecked
		if validLabelName(s) {
			f |= symLabelName
		}
		if validMetricName(s) {
			f |= symMetricName
		}
		if string(s) == model.MetricNameLabel {
			f |= symNameLabel
		}
		w.flags[i] = f
	}
	return f
}

// str returns symbol i as a string, converting it once.
func (w *wireState) str(i uint32) string {
	if w.flags[i]&symString == 0 {
		w.strs[i] = string(w.syms[i])
		w.flags[i] |= symString
	}
	return w.strs[i]
}

// resize returns s with length n, zeroed.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// consumeTag is protowire.ConsumeTag refusing field numbers protobuf
// refuses (above 2^29-1), as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}
