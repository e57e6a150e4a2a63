package ingest

import (
	"errors"
	"math"
	"testing"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// unpackedBatch encodes a PushMetricsRequest by hand with the batch's
// repeated fields unpacked and split, as protobuf allows.
func unpackedBatch() []byte {
	var s []byte
	for _, r := range []uint64{1, 2, 3, 4} {
		s = protowire.AppendTag(s, seriesRefsField, protowire.VarintType)
		s = protowire.AppendVarint(s, r)
	}
	s = protowire.AppendTag(s, seriesTimesField, protowire.VarintType)
	s = protowire.AppendVarint(s, 5)
	s = protowire.AppendTag(s, seriesValuesField, protowire.Fixed64Type)
	s = protowire.AppendFixed64(s, math.Float64bits(2.5))
	s = protowire.AppendTag(s, seriesTimesField, protowire.BytesType)
	s = protowire.AppendBytes(s, protowire.AppendVarint(nil, 6))
	s = protowire.AppendTag(s, seriesValuesField, protowire.BytesType)
	s = protowire.AppendBytes(s, protowire.AppendFixed64(nil, math.Float64bits(3)))
	s = protowire.AppendTag(s, 99, protowire.VarintType) // unknown field
	s = protowire.AppendVarint(s, 7)
	var b []byte
	for _, sym := range []string{"", "__name__", "m", "a", "b"} {
		b = protowire.AppendTag(b, batchSymbolsField, protowire.BytesType)
		b = protowire.AppendString(b, sym)
	}
	b = protowire.AppendTag(b, batchSeriesField, protowire.BytesType)
	b = protowire.AppendBytes(b, s)
	var req []byte
	req = protowire.AppendTag(req, pushBatchField, protowire.BytesType)
	return protowire.AppendBytes(req, b)
}

// FuzzDecode feeds the push decoders arbitrary protobuf bytes: a request
// either decodes into valid series or is refused with field errors, and the
// wire decoder gives exactly what unmarshalling and Decode give.
func FuzzDecode(f *testing.F) {
	seeds := []*monitorv1.PushMetricsRequest{
		{Samples: []*monitorv1.Sample{{Name: "m", Labels: map[string]string{"a": "b"}, Value: 1}}},
		{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "m", "a", "b"}, Series: []*monitorv1.SeriesSamples{
			{LabelRefs: []uint32{1, 2, 3, 4}, TimestampsMs: []int64{1, 0}, Values: []float64{1, math.NaN()}, HelpRef: 3}}}},
		{Batch: &monitorv1.SampleBatch{Symbols: []string{"x"}, Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{9}}}}},
		{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "m", "a", "b", "", "z"}, Series: []*monitorv1.SeriesSamples{
			{LabelRefs: []uint32{3, 4, 1, 2, 6, 0}, TimestampsMs: []int64{7}, Values: []float64{math.Inf(1)}, UnitRef: 6, Type: monitorv1.MetricType_METRIC_TYPE_GAUGE},
			{LabelRefs: []uint32{1, 2, 3, 4}, TimestampsMs: []int64{8}, Values: []float64{1}}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(unpackedBatch())
	cache := NewRefCache()
	d, wd := NewDecoder(cache), NewDecoder(cache)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req monitorv1.PushMetricsRequest
		uerr := proto.Unmarshal(data, &req)
		wire, werr := wd.DecodeWire(data, 1000)
		if uerr != nil {
			if !errors.Is(werr, ErrMalformed) {
				t.Fatalf("unmarshal: %v; wire decoder: %v", uerr, werr)
			}
			return
		}
		series, err := d.Decode(&req, 1000)
		if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
			t.Fatalf("Decode: %v; DecodeWire: %v", err, werr)
		}
		if err != nil {
			var ve *validation.Error
			if !errors.As(err, &ve) || len(ve.Fields) == 0 {
				t.Fatalf("error %v is not a field validation error", err)
			}
			return
		}
		sameSeries(t, series, wire)
		for _, s := range series {
			if !ValidMetricName(s.Labels.Get("__name__")) {
				t.Fatalf("series %s without a valid name", s.Labels)
			}
			if len(s.T) != len(s.V) {
				t.Fatalf("%s: %d timestamps, %d values", s.Field(), len(s.T), len(s.V))
			}
			// In a batch 0 means "now"; a sample's time of 0 is the epoch,
			// given explicitly (an unset time is now).
			for _, ts := range s.T {
				if ts == 0 && s.Prefix != "samples" {
					t.Fatalf("%s: zero timestamp not replaced", s.Field())
				}
			}
			if name, dup := s.Labels.HasDuplicateLabelNames(); dup {
				t.Fatalf("%s: label %q repeated", s.Field(), name)
			}
			if s.key != 0 {
				cache.store(s.key, s.pairs, s.Labels, 1)
			}
		}
		// Decoding again hits the cache and must give the same series.
		again, err := d.Decode(&req, 1000)
		if err != nil || len(again) != len(series) {
			t.Fatalf("second decode: %d series, %v; first %d", len(again), err, len(series))
		}
		sameSeries(t, series, again)
		// Twice more: the second learns the batch's shape, the third uses it.
		for range 2 {
			wire, err = wd.DecodeWire(data, 1000)
			if err != nil {
				t.Fatalf("wire decode from the cache: %v", err)
			}
			sameSeries(t, series, wire)
		}
	})
}

// sameSeries fails unless got is want (labels, samples bit for bit,
// metadata, position).
func sameSeries(t *testing.T, want, got []Series) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d series, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if !labels.Equal(g.Labels, w.Labels) || g.Field() != w.Field() || g.Type != w.Type || g.Help != w.Help || g.Unit != w.Unit {
			t.Fatalf("series %d: got %s %s %q %q %q, want %s %s %q %q %q", i, g.Field(), g.Labels, g.Type, g.Help, g.Unit,
				w.Field(), w.Labels, w.Type, w.Help, w.Unit)
		}
		if len(g.T) != len(w.T) || len(g.V) != len(w.V) {
			t.Fatalf("%s: %d/%d samples, want %d/%d", w.Field(), len(g.T), len(g.V), len(w.T), len(w.V))
		}
		for k := range w.T {
			if g.T[k] != w.T[k] || math.Float64bits(g.V[k]) != math.Float64bits(w.V[k]) {
				t.Fatalf("%s sample %d: got %d %v, want %d %v", w.Field(), k, g.T[k], g.V[k], w.T[k], w.V[k])
			}
		}
		if w.key != g.key {
			t.Fatalf("%s: cache key %x, want %x", w.Field(), g.key, w.key)
		}
	}
}
