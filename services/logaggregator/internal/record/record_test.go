package record

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestDecodeNormalisesAndRejects(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := NewDecoder(Limits{MaxMessageBytes: 10})
	b := &lav1.LogBatch{
		Records: []*lav1.LogRecord{
			{Source: "svc", Message: "ok"},
			{Message: "dflt"},
			{Source: "svc", Message: "héllo wörld!", TraceId: "0123456789ABCDEF0123456789ABCDEF"},
			{Source: "svc", Message: "x", Time: timestamppb.New(now.Add(2 * time.Hour))},
			{Source: "svc", Message: "x", Labels: map[string]string{"bad-name": "v"}},
			{Source: "svc", Message: "x", SpanId: "123"},
			{Source: "svc", Message: "x", Level: 7},
		},
		Streams: []*lav1.LogStream{
			{Source: "app/a", Labels: map[string]string{"b": "2", "a": "1"}, Entries: []*lav1.LogEntry{{Message: "s1"}, {Message: "s2", TimeUnixNano: 5}}},
			{Source: "bad source", Entries: []*lav1.LogEntry{{Message: "s3"}, {Message: "s4"}}},
		},
	}
	recs, res := d.Decode(nil, b, "from/subject", now)
	if res.Accepted != 5 || res.Rejected != 6 || res.Truncated != 1 {
		t.Fatalf("result %+v", res)
	}
	if recs[1].Source != "from/subject" || recs[0].Time != now.UnixNano() {
		t.Fatalf("defaults not applied: %+v", recs[:2])
	}
	cut := recs[2]
	if !cut.Truncated || cut.OriginalSize != uint32(len("héllo wörld!")) || !utf8.ValidString(cut.Message) || len(cut.Message) > 10 {
		t.Fatalf("truncation: %+v", cut)
	}
	if cut.TraceID != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("trace id not lower-cased: %q", cut.TraceID)
	}
	if recs[3].Labels.Key() != "a\x001\x00b\x002\x00" || recs[4].Time != 5 {
		t.Fatalf("stream records: %+v", recs[3:])
	}
	want := map[string]uint64{"source has an empty path segment": 0, "source may not contain spaces, control characters, '*' or '>'": 2}
	for _, rj := range res.Rejections {
		if n, ok := want[rj.Reason]; ok && n != rj.Count {
			t.Errorf("rejection %q counted %d, want %d", rj.Reason, rj.Count, n)
		}
	}
	if res.Rejections[0].Field != "records[3].time" || !strings.Contains(res.Rejections[0].Reason, "future") {
		t.Fatalf("first rejection %+v", res.Rejections[0])
	}
}

func TestBatchRoundTrip(t *testing.T) {
	d := NewDecoder(Limits{})
	now := time.Now()
	in := []Record{
		{Source: "a", Time: 1, Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: "m1", Metadata: Labels{{Name: "k", Value: "v"}}},
		{Source: "a", Time: 2, Message: "m2", Truncated: true, OriginalSize: 99},
		{Source: "b", Labels: Labels{{Name: "x", Value: "y"}}, Time: 3, Message: "m3", TraceID: "0123456789abcdef0123456789abcdef", SpanID: "0123456789abcdef"},
	}
	b := Batch(in, "id")
	if len(b.GetStreams()) != 2 {
		t.Fatalf("streams: %d", len(b.GetStreams()))
	}
	out, res := d.Decode(nil, b, "", now)
	if res.Rejected != 0 || len(out) != 3 {
		t.Fatalf("%+v", res)
	}
	for i := range in {
		in[i].ReceiveTime = now.UnixNano()
		if in[i].Message != out[i].Message || in[i].Time != out[i].Time || in[i].TraceID != out[i].TraceID ||
			in[i].Truncated != out[i].Truncated || in[i].OriginalSize != out[i].OriginalSize || in[i].Labels.Key() != out[i].Labels.Key() ||
			in[i].Metadata.Key() != out[i].Metadata.Key() || in[i].SpanID != out[i].SpanID {
			t.Fatalf("record %d: %+v != %+v", i, in[i], out[i])
		}
	}
}

// FuzzDecode feeds arbitrary bytes through the path of a NATS message:
// protobuf decoding, then record validation. It must never panic, and every
// accepted record must satisfy the documented limits.
func FuzzDecode(f *testing.F) {
	seed := &lav1.LogBatch{Records: []*lav1.LogRecord{{Source: "s", Message: "m", Labels: map[string]string{"a": "b"}}},
		Streams: []*lav1.LogStream{{Source: "x/y", Entries: []*lav1.LogEntry{{Message: strings.Repeat("z", 100), TimeUnixNano: 1}}}}}
	data, _ := proto.Marshal(seed)
	f.Add(data, "opsuite/default")
	f.Add([]byte{0x0a, 0x02, 0x22, 0x00}, "")
	f.Add([]byte{0xff}, "a")
	d := NewDecoder(Limits{MaxMessageBytes: 64})
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte, def string) {
		b := &lav1.LogBatch{}
		if err := proto.Unmarshal(data, b); err != nil {
			return
		}
		recs, res := d.Decode(nil, b, def, now)
		if uint64(len(recs)) != res.Accepted || len(res.Rejections) > 10 {
			t.Fatalf("accounting: %d records, %+v", len(recs), res)
		}
		for _, r := range recs {
			if len(r.Message) > 64 || !utf8.ValidString(r.Message) || CheckSource(r.Source) != "" || r.Time < 0 {
				t.Fatalf("record beyond limits: %+v", r)
			}
			if r.Truncated && r.OriginalSize == 0 {
				t.Fatalf("truncated without original size: %+v", r)
			}
		}
		// Re-encoding accepted records and decoding again is lossless.
		again, res2 := d.Decode(nil, Batch(recs, ""), "", now)
		if res2.Rejected != 0 || len(again) != len(recs) {
			t.Fatalf("re-decode refused records: %+v", res2)
		}
	})
}
