package record

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/s2"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
)

// A chunk is the write-ahead form of validated records: the gRPC ingestion
// path stores it in the stream instead of a re-encoded LogBatch, and the
// indexer turns it back into records without protobuf and with one string
// allocation for all messages. Its body is column-wise and optionally
// compressed with S2.
//
// Layout:
//
//	0x00 'L' 'C' version(1) flags(bit 0: body compressed with S2)
//	body:
//	  varint receive time (Unix ns; shared by every record)
//	  uvarint runs; per run: source, uvarint labels, name and value per
//	    label (sorted by name), uvarint records
//	  n bytes level, n bytes flags
//	  n uvarint message lengths, then the messages
//	  n varint time deltas (the first from the receive time)
//	  per truncated record: uvarint original size
//	  per record with trace: 16 bytes; per record with span: 8 bytes
//	  per record with metadata: uvarint entries, then key and value
//
// Strings are a uvarint length and the bytes. A chunk never starts like a
// protobuf message: a first byte 0 would be field number 0, which protobuf
// forbids, so both forms can share the stream.
const (
	chunkVersion    = 1
	chunkCompressed = 1 << 0
)

// Per-record flags of a chunk.
const (
	recTruncated = 1 << iota
	recTrace
	recSpan
	recMetadata
	recKnown = recTruncated | recTrace | recSpan | recMetadata
)

var chunkMagic = [3]byte{0x00, 'L', 'C'}

// MaxChunkBytes bounds a chunk body after decompression.
const MaxChunkBytes = 64 << 20

// IsChunk reports whether data is in chunk form (else it is a LogBatch).
func IsChunk(data []byte) bool {
	return len(data) >= 3 && data[0] == chunkMagic[0] && data[1] == chunkMagic[1] && data[2] == chunkMagic[2]
}

// ChunkEncoder encodes chunks, reusing its buffers; not safe for
// concurrent use.
type ChunkEncoder struct {
	raw  []byte
	out  []byte
	runs []int
}

// ChunkSize estimates the encoded (uncompressed) size of r in a chunk.
func ChunkSize(r *Record) int {
	n := len(r.Message) + 8
	if r.Truncated {
		n += 5
	}
	if r.TraceID != "" {
		n += 16
	}
	if r.SpanID != "" {
		n += 8
	}
	for _, kv := range r.Metadata {
		n += len(kv.Name) + len(kv.Value) + 4
	}
	return n
}

// Encode returns the chunk of recs, which must be valid records as Decode
// makes them, all received at receive (Unix ns). The result is valid until
// the next call.
func (e *ChunkEncoder) Encode(recs []Record, receive int64, compress bool) []byte {
	b := e.raw[:0]
	b = binary.AppendVarint(b, receive)
	e.runs = e.runs[:0]
	for i := range recs {
		if i == 0 || recs[i].Source != recs[i-1].Source || !recs[i].Labels.Equal(recs[i-1].Labels) {
			e.runs = append(e.runs, i)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.runs)))
	for ri, start := range e.runs {
		end := len(recs)
		if ri+1 < len(e.runs) {
			end = e.runs[ri+1]
		}
		r := &recs[start]
		b = appendStr(b, r.Source)
		b = binary.AppendUvarint(b, uint64(len(r.Labels)))
		for _, l := range r.Labels {
			b = appendStr(b, l.Name)
			b = appendStr(b, l.Value)
		}
		b = binary.AppendUvarint(b, uint64(end-start))
	}
	for i := range recs {
		b = append(b, byte(recs[i].Level))
	}
	for i := range recs {
		r := &recs[i]
		var fl byte
		if r.Truncated {
			fl |= recTruncated
		}
		if r.TraceID != "" {
			fl |= recTrace
		}
		if r.SpanID != "" {
			fl |= recSpan
		}
		if len(r.Metadata) > 0 {
			fl |= recMetadata
		}
		b = append(b, fl)
	}
	for i := range recs {
		b = binary.AppendUvarint(b, uint64(len(recs[i].Message)))
	}
	for i := range recs {
		b = append(b, recs[i].Message...)
	}
	prev := receive
	for i := range recs {
		b = binary.AppendVarint(b, recs[i].Time-prev)
		prev = recs[i].Time
	}
	for i := range recs {
		if recs[i].Truncated {
			b = binary.AppendUvarint(b, uint64(recs[i].OriginalSize))
		}
	}
	for i := range recs {
		if recs[i].TraceID != "" {
			b = appendHex(b, recs[i].TraceID, 16)
		}
	}
	for i := range recs {
		if recs[i].SpanID != "" {
			b = appendHex(b, recs[i].SpanID, 8)
		}
	}
	for i := range recs {
		md := recs[i].Metadata
		if len(md) == 0 {
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(md)))
		for _, kv := range md {
			b = appendStr(b, kv.Name)
			b = appendStr(b, kv.Value)
		}
	}
	e.raw = b
	out := append(e.out[:0], chunkMagic[:]...)
	if compress {
		out = append(out, chunkVersion, chunkCompressed)
		need := len(out) + s2.MaxEncodedLen(len(b))
		if cap(out) < need {
			out = append(make([]byte, 0, need), out...)
		}
		enc := s2.Encode(out[len(out):cap(out)], b)
		out = out[:len(out)+len(enc)]
	} else {
		out = append(out, chunkVersion, 0)
		out = append(out, b...)
	}
	e.out = out
	return out
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendHex appends the n bytes that the lowercase hex string s (validated
// by the decoder) stands for.
func appendHex(b []byte, s string, n int) []byte {
	l := len(b)
	b = append(b, make([]byte, n)...)
	if _, err := hex.Decode(b[l:], []byte(s)); err != nil {
		panic(fmt.Sprintf("record: unvalidated hex id %q", s))
	}
	return b
}

// ChunkDecoder decodes chunks, reusing its buffers; not safe for
// concurrent use.
type ChunkDecoder struct {
	lim  Limits
	buf  []byte
	lens []uint32
}

// NewChunkDecoder returns a decoder enforcing lim on what it reads.
func NewChunkDecoder(lim Limits) *ChunkDecoder { return &ChunkDecoder{lim: lim.withDefaults()} }

var errChunk = errors.New("corrupt log chunk")

func chunkErr(what string) error { return fmt.Errorf("%w: %s", errChunk, what) }

type chunkReader struct {
	b   []byte
	err error
}

func (r *chunkReader) fail(what string) {
	if r.err == nil {
		r.err = chunkErr(what)
	}
	r.b = nil
}

func (r *chunkReader) uvarint(what string) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *chunkReader) varint(what string) int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *chunkReader) bytes(n uint64, what string) []byte {
	if uint64(len(r.b)) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *chunkReader) str(max int, what string) string {
	n := r.uvarint(what)
	if n > uint64(max) {
		r.fail(what + " too long")
		return ""
	}
	return string(r.bytes(n, what))
}

// Decode appends the records of chunk data to dst, checking every limit and
// invariant the ingestion decoder guarantees, so a corrupt or forged chunk
// is refused whole and never stores what Decode would have refused.
func (d *ChunkDecoder) Decode(dst []Record, data []byte) ([]Record, error) {
	if !IsChunk(data) || len(data) < 5 {
		return dst, chunkErr("no chunk header")
	}
	if data[3] != chunkVersion {
		return dst, chunkErr(fmt.Sprintf("unknown version %d", data[3]))
	}
	body := data[5:]
	switch data[4] {
	case 0:
	case chunkCompressed:
		n, err := s2.DecodedLen(body)
		if err != nil || n > MaxChunkBytes {
			return dst, chunkErr("compressed body")
		}
		if cap(d.buf) < n {
			d.buf = make([]byte, n)
		}
		body, err = s2.Decode(d.buf[:cap(d.buf)], body)
		if err != nil {
			return dst, chunkErr("compressed body")
		}
	default:
		return dst, chunkErr(fmt.Sprintf("unknown flags %#x", data[4]))
	}
	base := len(dst)
	dst, err := d.decodeBody(dst, body)
	if err != nil {
		clear(dst[base:])
		return dst[:base], err
	}
	return dst, nil
}

func (d *ChunkDecoder) decodeBody(dst []Record, body []byte) ([]Record, error) {
	r := &chunkReader{b: body}
	receive := r.varint("receive time")
	if receive < 0 {
		return dst, chunkErr("receive time before 1970")
	}
	nruns := r.uvarint("runs")
	// Every run holds a record, every record at least two bytes.
	if nruns == 0 || nruns > uint64(len(r.b)/2) {
		return dst, chunkErr("run count")
	}
	type run struct {
		source string
		labels Labels
		n      int
	}
	runs := make([]run, 0, nruns)
	total := 0
	for range nruns {
		var ru run
		ru.source = r.str(MaxSourceBytes, "source")
		if r.err != nil {
			return dst, r.err
		}
		if reason := checkSource(ru.source); reason != "" {
			return dst, chunkErr(reason)
		}
		nl := r.uvarint("labels")
		if nl > MaxLabels {
			return dst, chunkErr("too many labels")
		}
		if nl > 0 {
			ru.labels = make(Labels, nl)
		}
		for i := range ru.labels {
			name := r.str(MaxLabelNameBytes, "label name")
			value := r.str(MaxLabelValueBytes, "label value")
			if r.err != nil {
				return dst, r.err
			}
			if !ValidLabelName(name) || !utf8.ValidString(value) || (i > 0 && name <= ru.labels[i-1].Name) {
				return dst, chunkErr("invalid or unsorted label")
			}
			ru.labels[i] = Label{Name: name, Value: value}
		}
		cnt := r.uvarint("records")
		if cnt == 0 || cnt > uint64(len(r.b)/2) || total+int(cnt) > MaxRecordsPerMessage {
			return dst, chunkErr("record count")
		}
		ru.n = int(cnt)
		total += ru.n
		runs = append(runs, ru)
	}
	if r.err != nil {
		return dst, r.err
	}
	if total > len(r.b)/2 {
		return dst, chunkErr("record count")
	}
	levels := r.bytes(uint64(total), "levels")
	flags := r.bytes(uint64(total), "flags")
	d.lens = d.lens[:0]
	sum := 0
	for range total {
		l := r.uvarint("message length")
		if l > uint64(d.lim.MaxMessageBytes) {
			return dst, chunkErr("message over the size limit")
		}
		d.lens = append(d.lens, uint32(l))
		sum += int(l)
	}
	msgBytes := r.bytes(uint64(sum), "messages")
	if r.err != nil {
		return dst, r.err
	}
	if !utf8.Valid(msgBytes) {
		return dst, chunkErr("message not valid UTF-8")
	}
	// One allocation for every message of the chunk.
	msgs := string(msgBytes)
	base := len(dst)
	dst = growRecords(dst, total)
	recs := dst[base : base+total]
	off, ri, left := 0, 0, runs[0].n
	prev := receive
	for i := range recs {
		for left == 0 {
			ri++
			left = runs[ri].n
		}
		left--
		lv, fl := lav1.LogLevel(levels[i]), flags[i]
		if lv < lav1.LogLevel_LOG_LEVEL_UNSPECIFIED || lv > lav1.LogLevel_LOG_LEVEL_FATAL || fl&^recKnown != 0 {
			return dst, chunkErr("level or flags")
		}
		l := int(d.lens[i])
		if off < len(msgs) && !utf8.RuneStart(msgs[off]) {
			return dst, chunkErr("message not valid UTF-8")
		}
		t := prev + r.varint("time")
		if t < 0 {
			return dst, chunkErr("time before 1970")
		}
		prev = t
		recs[i] = Record{Time: t, ReceiveTime: receive, Level: lv, Source: runs[ri].source, Labels: runs[ri].labels,
			Message: msgs[off : off+l], Truncated: fl&recTruncated != 0}
		off += l
	}
	for i := range recs {
		if recs[i].Truncated {
			sz := r.uvarint("original size")
			if sz > 1<<31 {
				return dst, chunkErr("original size")
			}
			recs[i].OriginalSize = uint32(sz)
		}
	}
	for i := range recs {
		if flags[i]&recTrace != 0 {
			recs[i].TraceID = hex.EncodeToString(r.bytes(16, "trace id"))
		}
	}
	for i := range recs {
		if flags[i]&recSpan != 0 {
			recs[i].SpanID = hex.EncodeToString(r.bytes(8, "span id"))
		}
	}
	for i := range recs {
		if flags[i]&recMetadata == 0 {
			continue
		}
		n := r.uvarint("metadata")
		if n == 0 || n > MaxMetadataEntries || n > uint64(len(r.b)/2) {
			return dst, chunkErr("metadata count")
		}
		md := make(Labels, n)
		for j := range md {
			k := r.str(MaxMetadataKeyBytes, "metadata key")
			v := r.str(MaxMetadataValueBytes, "metadata value")
			if r.err != nil {
				return dst, r.err
			}
			if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) || (j > 0 && strings.Compare(k, md[j-1].Name) <= 0) {
				return dst, chunkErr("invalid or unsorted metadata")
			}
			md[j] = Label{Name: k, Value: v}
		}
		recs[i].Metadata = md
	}
	if r.err != nil {
		return dst, r.err
	}
	if len(r.b) != 0 {
		return dst, chunkErr("trailing bytes")
	}
	return dst, nil
}

// growRecords extends dst by n zero records.
func growRecords(dst []Record, n int) []Record {
	if cap(dst)-len(dst) < n {
		grown := make([]Record, len(dst), max(len(dst)+n, 2*cap(dst)))
		copy(grown, dst)
		dst = grown
	}
	return dst[:len(dst)+n]
}
