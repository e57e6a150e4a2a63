package ingest

import (
	"errors"
	"math"
	"testing"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
)

// FuzzDecode feeds the push decoder arbitrary protobuf bytes: a request
// either decodes into valid series or is refused with field errors.
func FuzzDecode(f *testing.F) {
	seeds := []*monitorv1.PushMetricsRequest{
		{Samples: []*monitorv1.Sample{{Name: "m", Labels: map[string]string{"a": "b"}, Value: 1}}},
		{Batch: &monitorv1.SampleBatch{Symbols: []string{"", "__name__", "m", "a", "b"}, Series: []*monitorv1.SeriesSamples{
			{LabelRefs: []uint32{1, 2, 3, 4}, TimestampsMs: []int64{1, 0}, Values: []float64{1, math.NaN()}, HelpRef: 3}}}},
		{Batch: &monitorv1.SampleBatch{Symbols: []string{"x"}, Series: []*monitorv1.SeriesSamples{{LabelRefs: []uint32{9}}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	d := NewDecoder(NewRefCache())
	f.Fuzz(func(t *testing.T, data []byte) {
		var req monitorv1.PushMetricsRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		series, err := d.Decode(&req, 1000)
		if err != nil {
			var ve *validation.Error
			if !errors.As(err, &ve) || len(ve.Fields) == 0 {
				t.Fatalf("error %v is not a field validation error", err)
			}
			return
		}
		for _, s := range series {
			if !ValidMetricName(s.Labels.Get("__name__")) {
				t.Fatalf("series %s without a valid name", s.Labels)
			}
			if len(s.T) != len(s.V) {
				t.Fatalf("%s: %d timestamps, %d values", s.Field(), len(s.T), len(s.V))
			}
			for _, ts := range s.T {
				if ts == 0 {
					t.Fatalf("%s: zero timestamp not replaced", s.Field())
				}
			}
			if name, dup := s.Labels.HasDuplicateLabelNames(); dup {
				t.Fatalf("%s: label %q repeated", s.Field(), name)
			}
			if s.key != 0 {
				d.cache.store(s.key, s.Labels, 1)
			}
		}
		// Decoding again hits the cache and must give the same series.
		again, err := d.Decode(&req, 1000)
		if err != nil || len(again) != len(series) {
			t.Fatalf("second decode: %d series, %v; first %d", len(again), err, len(series))
		}
		for i := range series {
			if !labels.Equal(series[i].Labels, again[i].Labels) {
				t.Fatalf("%s: %s from the cache, %s validated", series[i].Field(), again[i].Labels, series[i].Labels)
			}
		}
	})
}
