package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"google.golang.org/protobuf/proto"
)

func chunkRecords(recv int64) []Record {
	app := Labels{{Name: "app", Value: "shop"}, {Name: "env", Value: "prod"}}
	return []Record{
		{Source: "a", Time: recv - 5, ReceiveTime: recv, Level: lav1.LogLevel_LOG_LEVEL_INFO, Message: "m1", Metadata: Labels{{Name: "k", Value: "v"}, {Name: "z", Value: ""}}},
		{Source: "a", Time: recv - 9, ReceiveTime: recv, Message: "", Truncated: true, OriginalSize: 99},
		{Source: "b/c", Labels: app, Time: recv, ReceiveTime: recv, Level: lav1.LogLevel_LOG_LEVEL_ERROR, Message: "héllo wörld",
			TraceID: "0123456789abcdef0123456789abcdef", SpanID: "0123456789abcdef"},
		{Source: "b/c", Labels: app, Time: 0, ReceiveTime: recv, Level: lav1.LogLevel_LOG_LEVEL_FATAL, Message: "日本語"},
		{Source: "a", Time: recv + 1, ReceiveTime: recv, Level: lav1.LogLevel_LOG_LEVEL_DEBUG, Message: strings.Repeat("x", 300)},
	}
}

func TestChunkRoundTrip(t *testing.T) {
	recv := time.Unix(1_800_000_000, 7).UnixNano()
	in := chunkRecords(recv)
	for _, compress := range []bool{false, true} {
		var e ChunkEncoder
		data := bytes.Clone(e.Encode(in, recv, compress))
		if !IsChunk(data) {
			t.Fatal("chunk not recognised")
		}
		d := NewChunkDecoder(Limits{})
		prefix := []Record{{Message: "kept"}}
		out, err := d.Decode(prefix, data)
		if err != nil {
			t.Fatalf("compress=%v: %v", compress, err)
		}
		if len(out) != len(in)+1 || out[0].Message != "kept" {
			t.Fatalf("compress=%v: %d records, prefix %+v", compress, len(out), out[0])
		}
		if !reflect.DeepEqual(out[1:], in) {
			t.Fatalf("compress=%v:\n got %+v\nwant %+v", compress, out[1:], in)
		}
		if &out[3].Labels[0] != &out[4].Labels[0] {
			t.Errorf("records of one run do not share their labels")
		}
		// The encoder's buffers are reused without corrupting what was
		// decoded.
		e.Encode(in[:1], recv, compress)
		if !reflect.DeepEqual(out[1:], in) {
			t.Fatal("decoded records changed when the encoder was reused")
		}
	}
}

func TestChunkNeverParsesAsLogBatch(t *testing.T) {
	var e ChunkEncoder
	data := e.Encode(chunkRecords(1), 1, false)
	if err := proto.Unmarshal(data, &lav1.LogBatch{}); err == nil {
		t.Fatal("a chunk decodes as a LogBatch")
	}
	b, _ := proto.Marshal(Batch(chunkRecords(1), "id"))
	if IsChunk(b) {
		t.Fatal("a LogBatch looks like a chunk")
	}
}

// rawChunk builds an uncompressed chunk from a body.
func rawChunk(body []byte) []byte {
	return append([]byte{0x00, 'L', 'C', chunkVersion, 0}, body...)
}

// oneRecordBody is a chunk body of one record with the given parts.
func oneRecordBody(source string, labels [][2]string, level, flags byte, msg string, tail ...byte) []byte {
	b := binary.AppendVarint(nil, 1000)
	b = binary.AppendUvarint(b, 1)
	b = appendStr(b, source)
	b = binary.AppendUvarint(b, uint64(len(labels)))
	for _, l := range labels {
		b = appendStr(b, l[0])
		b = appendStr(b, l[1])
	}
	b = binary.AppendUvarint(b, 1)
	b = append(b, level, flags)
	b = binary.AppendUvarint(b, uint64(len(msg)))
	b = append(b, msg...)
	b = binary.AppendVarint(b, 0)
	return append(b, tail...)
}

func TestChunkDecodeRefusesWhatIngestionWould(t *testing.T) {
	valid := rawChunk(oneRecordBody("svc", [][2]string{{"a", "1"}}, 3, 0, "ok"))
	if recs, err := NewChunkDecoder(Limits{}).Decode(nil, valid); err != nil || len(recs) != 1 || recs[0].Message != "ok" {
		t.Fatalf("valid chunk: %v %+v", err, recs)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"header only", []byte{0, 'L', 'C'}},
		{"unknown version", []byte{0, 'L', 'C', 9, 0}},
		{"unknown flags", []byte{0, 'L', 'C', chunkVersion, 0x80}},
		{"bad compressed body", []byte{0, 'L', 'C', chunkVersion, chunkCompressed, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"no records", rawChunk(binary.AppendUvarint(binary.AppendVarint(nil, 1), 0))},
		{"invalid source", rawChunk(oneRecordBody("bad source", nil, 3, 0, "x"))},
		{"empty source", rawChunk(oneRecordBody("", nil, 3, 0, "x"))},
		{"invalid label name", rawChunk(oneRecordBody("svc", [][2]string{{"bad-name", "1"}}, 3, 0, "x"))},
		{"unsorted labels", rawChunk(oneRecordBody("svc", [][2]string{{"b", "1"}, {"a", "2"}}, 3, 0, "x"))},
		{"duplicate labels", rawChunk(oneRecordBody("svc", [][2]string{{"a", "1"}, {"a", "2"}}, 3, 0, "x"))},
		{"label value not UTF-8", rawChunk(oneRecordBody("svc", [][2]string{{"a", "\xff"}}, 3, 0, "x"))},
		{"unknown level", rawChunk(oneRecordBody("svc", nil, 7, 0, "x"))},
		{"unknown record flag", rawChunk(oneRecordBody("svc", nil, 3, 0x40, "x"))},
		{"message not UTF-8", rawChunk(oneRecordBody("svc", nil, 3, 0, "a\xffb"))},
		{"message over the limit", rawChunk(oneRecordBody("svc", nil, 3, 0, strings.Repeat("m", 65)))},
		{"trailing bytes", rawChunk(oneRecordBody("svc", nil, 3, 0, "x", 1))},
		{"missing trace id", rawChunk(oneRecordBody("svc", nil, 3, recTrace, "x", 1, 2))},
		{"metadata key empty", rawChunk(oneRecordBody("svc", nil, 3, recMetadata, "x", 1, 0, 0))},
		{"truncated without size", rawChunk(oneRecordBody("svc", nil, 3, recTruncated, "x"))},
	}
	d := NewChunkDecoder(Limits{MaxMessageBytes: 64})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []Record{{Message: "kept"}}
			out, err := d.Decode(prefix, tt.data)
			if !errors.Is(err, errChunk) {
				t.Fatalf("err %v, want a corrupt chunk error", err)
			}
			if len(out) != 1 || out[0].Message != "kept" {
				t.Fatalf("records appended from a refused chunk: %+v", out)
			}
		})
	}
}

func TestChunkMessagesSplitInsideARuneRefused(t *testing.T) {
	// "é" is 0xc3 0xa9: two messages "a\xc3" and "\xa9b" concatenate to
	// valid UTF-8, but each alone is invalid.
	b := binary.AppendVarint(nil, 1000)
	b = binary.AppendUvarint(b, 1)
	b = appendStr(b, "svc")
	b = binary.AppendUvarint(b, 0)
	b = binary.AppendUvarint(b, 2)
	b = append(b, 3, 3, 0, 0)
	b = binary.AppendUvarint(b, 2)
	b = binary.AppendUvarint(b, 2)
	b = append(b, "a\xc3\xa9b"...)
	b = binary.AppendVarint(b, 0)
	b = binary.AppendVarint(b, 0)
	if _, err := NewChunkDecoder(Limits{}).Decode(nil, rawChunk(b)); !errors.Is(err, errChunk) {
		t.Fatalf("err %v, want refusal", err)
	}
}

// FuzzChunkDecode feeds arbitrary bytes to the chunk decoder, the path of a
// stream message in chunk form (anyone may publish one on opsuite.logs.>).
// It must never panic, refuse whole, and only produce records within the
// documented limits; accepted records encode back to an equal chunk.
func FuzzChunkDecode(f *testing.F) {
	var e ChunkEncoder
	f.Add(bytes.Clone(e.Encode(chunkRecords(1_800_000_000_000_000_000), 1_800_000_000_000_000_000, false)))
	f.Add(bytes.Clone(e.Encode(chunkRecords(5), 5, true)))
	f.Add(rawChunk(oneRecordBody("svc", [][2]string{{"a", "1"}}, 3, 0, "ok")))
	f.Add([]byte{0, 'L', 'C', chunkVersion, chunkCompressed})
	d := NewChunkDecoder(Limits{MaxMessageBytes: 512})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := d.Decode(nil, data)
		if err != nil {
			if len(recs) != 0 {
				t.Fatalf("refused chunk appended %d records", len(recs))
			}
			return
		}
		for _, r := range recs {
			if len(r.Message) > 512 || !utf8.ValidString(r.Message) || CheckSource(r.Source) != "" || r.Time < 0 ||
				r.Level < 0 || r.Level > lav1.LogLevel_LOG_LEVEL_FATAL || len(r.Labels) > MaxLabels || len(r.Metadata) > MaxMetadataEntries {
				t.Fatalf("record beyond limits: %+v", r)
			}
			if _, ok := normHex(r.TraceID, 32); !ok {
				t.Fatalf("trace id %q", r.TraceID)
			}
			for _, l := range r.Labels {
				if !ValidLabelName(l.Name) || !utf8.ValidString(l.Value) {
					t.Fatalf("label %+v", l)
				}
			}
		}
		var e ChunkEncoder
		again, err := d.Decode(nil, e.Encode(recs, recs[0].ReceiveTime, false))
		if err != nil || !reflect.DeepEqual(again, recs) {
			t.Fatalf("re-encoded chunk differs: %v", err)
		}
	})
}
