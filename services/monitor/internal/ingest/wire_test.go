package ingest

import (
	"errors"
	"strings"
	"testing"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestDecodeWireFastPath checks that valid batches take the wire path (not
// the fallback) and give what Decode gives, on first sight and from the
// cache.
func TestDecodeWireFastPath(t *testing.T) {
	packed, err := proto.Marshal(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{
		Symbols: []string{"", "__name__", "m", "a", "b", "help", "c", ""},
		Series: []*monitorv1.SeriesSamples{
			{LabelRefs: []uint32{1, 2, 3, 4}, TimestampsMs: []int64{1, 0}, Values: []float64{1, 2}, HelpRef: 5},
			{LabelRefs: []uint32{6, 4, 1, 2, 3, 7}, TimestampsMs: []int64{3}, Values: []float64{4}},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{{"packed", packed}, {"unpacked", unpackedBatch()}} {
		t.Run(tc.name, func(t *testing.T) {
			cache := NewRefCache()
			wd := NewDecoder(cache)
			var req monitorv1.PushMetricsRequest
			if err := proto.Unmarshal(tc.raw, &req); err != nil {
				t.Fatal(err)
			}
			want, err := NewDecoder(nil).Decode(&req, 1000)
			if err != nil {
				t.Fatal(err)
			}
			batch, ok := singleBatch(tc.raw, pushBatchField, pushSamplesField)
			if !ok {
				t.Fatal("batch not found")
			}
			for round := range 3 {
				got, ok := wd.decodeBatchWire("batch", batch, 1000)
				if !ok {
					t.Fatalf("round %d: valid batch left to the fallback", round)
				}
				sameLabelsAndSamples(t, want, got)
				for _, s := range got {
					if s.key == 0 || s.pairs == "" {
						t.Fatalf("%s: no cache key", s.Field())
					}
					if round > 0 && s.Ref != 7 {
						t.Fatalf("round %d: %s: ref %d from the cache, want 7", round, s.Field(), s.Ref)
					}
					if (round == 2) != (s.slot != nil) {
						t.Fatalf("round %d: %s: from a batch shape %v", round, s.Field(), s.slot != nil)
					}
					cache.store(s.key, s.pairs, s.Labels, 7)
				}
			}
		})
	}
}

func sameLabelsAndSamples(t *testing.T, want, got []Series) {
	t.Helper()
	for i := range want {
		want[i].key, want[i].pairs = 0, ""
	}
	g := make([]Series, len(got))
	copy(g, got)
	for i := range g {
		g[i].key, g[i].pairs, g[i].Ref = 0, "", 0
	}
	sameSeries(t, want, g)
}

// TestDecodeWireMalformed: bytes that are not the message are ErrMalformed;
// invalid content gets the field errors of Decode.
func TestDecodeWireMalformed(t *testing.T) {
	d := NewDecoder(NewRefCache())
	bad := protowire.AppendTag(nil, pushBatchField, protowire.BytesType)
	bad = protowire.AppendBytes(bad, []byte{0x0a, 0x05, 'a'}) // symbol longer than the batch
	if _, err := d.DecodeWire(bad, 1); err == nil || !isMalformed(err) {
		t.Fatalf("truncated symbol: %v, want ErrMalformed", err)
	}
	raw, _ := proto.Marshal(&monitorv1.PushMetricsRequest{Batch: &monitorv1.SampleBatch{
		Symbols: []string{"", "__name__", "m", "a", "b"},
		Series:  []*monitorv1.SeriesSamples{{LabelRefs: []uint32{1, 2, 3, 9}, TimestampsMs: []int64{1}, Values: []float64{1}}}}})
	_, err := d.DecodeWire(raw, 1)
	if err == nil || err.Error() == "" || isMalformed(err) {
		t.Fatalf("out of range ref: %v, want a field error", err)
	}
	if want := "batch.series[0].label_refs[2]"; !contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
}

func isMalformed(err error) bool { return errors.Is(err, ErrMalformed) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
