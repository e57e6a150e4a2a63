package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/klauspost/compress/s2"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
)

// A block holds the records of one source and label set that one commit
// stored, in storage order. Its body is column-wise (levels, flags, times,
// message lengths, messages, then times, sequences, receive times, sizes,
// trace and span ids, metadata) and compressed with S2, so a text query
// finds candidate records by searching the messages in one run, and decodes
// the other columns only of blocks with candidates.
//
// Layout before compression, n records:
//
//	uvarint n
//	n bytes level, n bytes flags
//	n uvarint message lengths, then the messages
//	n varint time deltas (zig-zag, from the previous record; the first from 0)
//	n uvarint sequence deltas (from the previous; the first from 0)
//	n varint receive-time offsets (receive - time, zig-zag)
//	per truncated record: uvarint original size
//	per record with trace: 16 bytes; per record with span: 8 bytes
//	per record with metadata: uvarint length, then uvarint count and
//	  length-prefixed key and value per entry
const (
	flagTruncated = 1 << iota
	flagTrace
	flagSpan
	flagMetadata
)

// BlockMeta describes a stored block; it is kept in memory for pruning.
type BlockMeta struct {
	ID               uint64
	Source           string
	Labels           record.Labels
	MinTime, MaxTime int64
	MinSeq, MaxSeq   uint64
	Count            uint32
	LevelMask        uint8
	// Bytes is the compressed size of the body.
	Bytes uint32
	// RawBytes is the uncompressed size of the body.
	RawBytes uint32
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeBlock encodes recs, which share source and labels, into a
// compressed body and its metadata (without ID).
func encodeBlock(recs []record.Record, scratch []byte) ([]byte, BlockMeta, []byte) {
	m := BlockMeta{Source: recs[0].Source, Labels: recs[0].Labels, Count: uint32(len(recs)),
		MinTime: recs[0].Time, MaxTime: recs[0].Time, MinSeq: recs[0].Seq, MaxSeq: recs[0].Seq}
	b := scratch[:0]
	b = appendUvarint(b, uint64(len(recs)))
	for i := range recs {
		b = append(b, byte(recs[i].Level))
		m.LevelMask |= 1 << uint8(recs[i].Level)
	}
	for i := range recs {
		r := &recs[i]
		var fl byte
		if r.Truncated {
			fl |= flagTruncated
		}
		if r.TraceID != "" {
			fl |= flagTrace
		}
		if r.SpanID != "" {
			fl |= flagSpan
		}
		if len(r.Metadata) > 0 {
			fl |= flagMetadata
		}
		b = append(b, fl)
	}
	for i := range recs {
		b = appendUvarint(b, uint64(len(recs[i].Message)))
	}
	for i := range recs {
		b = append(b, recs[i].Message...)
	}
	var prevT int64
	for i := range recs {
		t := recs[i].Time
		b = appendVarint(b, t-prevT)
		prevT = t
		m.MinTime, m.MaxTime = min(m.MinTime, t), max(m.MaxTime, t)
	}
	var prevS uint64
	for i := range recs {
		s := recs[i].Seq
		b = appendUvarint(b, s-prevS)
		prevS = s
		m.MinSeq, m.MaxSeq = min(m.MinSeq, s), max(m.MaxSeq, s)
	}
	for i := range recs {
		b = appendVarint(b, recs[i].ReceiveTime-recs[i].Time)
	}
	for i := range recs {
		if recs[i].Truncated {
			b = appendUvarint(b, uint64(recs[i].OriginalSize))
		}
	}
	for i := range recs {
		if recs[i].TraceID != "" {
			b, _ = hex.AppendDecode(b, []byte(recs[i].TraceID)) // validated by the decoder
		}
	}
	for i := range recs {
		if recs[i].SpanID != "" {
			b, _ = hex.AppendDecode(b, []byte(recs[i].SpanID))
		}
	}
	var mb []byte
	for i := range recs {
		md := recs[i].Metadata
		if len(md) == 0 {
			continue
		}
		mb = appendUvarint(mb[:0], uint64(len(md)))
		for _, kv := range md {
			mb = appendString(mb, kv.Name)
			mb = appendString(mb, kv.Value)
		}
		b = appendString(b, string(mb))
	}
	m.RawBytes = uint32(len(b))
	body := s2.Encode(nil, b)
	m.Bytes = uint32(len(body))
	return body, m, b
}

var errCorrupt = errors.New("corrupt block")

// maxRawBlock bounds a block body before compression: BlockRecords messages
// of at most 64 KiB plus their columns stay well under it.
const maxRawBlock = 1 << 30

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.err = errCorrupt
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// msgView is the front of a decoded body: levels, flags and messages.
type msgView struct {
	n      int
	levels []byte
	flags  []byte
	msgOff []uint32
	msgs   []byte
	rest   []byte
}

func (v *msgView) message(i int) []byte { return v.msgs[v.msgOff[i]:v.msgOff[i+1]] }

// blockView is a decoded body whose metadata is read on demand.
type blockView struct {
	msgView
	meta     *BlockMeta
	times    []int64
	seqs     []uint64
	recv     []int64
	orig     []uint32
	trace    [][]byte
	span     [][]byte
	metadata [][]byte
}

// decompress decodes body into buf (reused when large enough).
func decompress(m *BlockMeta, body []byte, buf []byte) ([]byte, []byte, error) {
	n, err := s2.DecodedLen(body)
	if err != nil {
		return nil, buf, fmt.Errorf("block %d: %w", m.ID, err)
	}
	if n > maxRawBlock || m.RawBytes != 0 && n != int(m.RawBytes) {
		return nil, buf, fmt.Errorf("block %d: %w: decoded length %d, want %d", m.ID, errCorrupt, n, m.RawBytes)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	raw, err := s2.Decode(buf[:cap(buf)], body)
	if err != nil {
		return nil, buf, fmt.Errorf("block %d: %w", m.ID, err)
	}
	return raw, buf, nil
}

// decodeBlock decompresses body into buf (reused when large enough) and
// indexes it.
func decodeBlock(m *BlockMeta, body []byte, buf []byte) (*blockView, []byte, error) {
	raw, buf, err := decompress(m, body, buf)
	if err != nil {
		return nil, buf, err
	}
	var mv msgView
	if err := indexMessages(&mv, raw, nil); err != nil {
		return nil, buf, fmt.Errorf("block %d: %w", m.ID, err)
	}
	v, err := indexRest(m, mv)
	if err != nil {
		return nil, buf, fmt.Errorf("block %d: %w", m.ID, err)
	}
	return v, buf, nil
}

// indexMessages reads the front of raw into mv, reusing offBuf.
func indexMessages(mv *msgView, raw []byte, offBuf []uint32) error {
	r := &reader{b: raw}
	cnt := r.uvarint()
	if r.err != nil || cnt > uint64(len(raw)) {
		return errCorrupt
	}
	n := int(cnt)
	mv.n = n
	mv.levels = r.bytes(cnt)
	mv.flags = r.bytes(cnt)
	if r.err != nil {
		return r.err
	}
	if cap(offBuf) < n+1 {
		offBuf = make([]uint32, n+1)
	}
	mv.msgOff = offBuf[:n+1]
	mv.msgOff[0] = 0
	var off uint64
	for i := range n {
		off += r.uvarint()
		if off > uint64(len(raw)) {
			return errCorrupt
		}
		mv.msgOff[i+1] = uint32(off)
	}
	mv.msgs = r.bytes(off)
	if r.err != nil {
		return r.err
	}
	mv.rest = r.b
	return nil
}

// indexRest reads the columns after the messages.
func indexRest(m *BlockMeta, mv msgView) (*blockView, error) {
	n := mv.n
	v := &blockView{msgView: mv, meta: m}
	r := &reader{b: mv.rest}
	v.times = make([]int64, n)
	var t int64
	for i := range n {
		t += r.varint()
		v.times[i] = t
	}
	v.seqs = make([]uint64, n)
	var sq uint64
	for i := range n {
		sq += r.uvarint()
		v.seqs[i] = sq
	}
	v.recv = make([]int64, n)
	for i := range n {
		v.recv[i] = v.times[i] + r.varint()
	}
	v.orig = make([]uint32, n)
	for i := range n {
		if v.flags[i]&flagTruncated != 0 {
			v.orig[i] = uint32(r.uvarint())
		}
	}
	v.trace = make([][]byte, n)
	for i := range n {
		if v.flags[i]&flagTrace != 0 {
			v.trace[i] = r.bytes(16)
		}
	}
	v.span = make([][]byte, n)
	for i := range n {
		if v.flags[i]&flagSpan != 0 {
			v.span[i] = r.bytes(8)
		}
	}
	v.metadata = make([][]byte, n)
	for i := range n {
		if v.flags[i]&flagMetadata != 0 {
			v.metadata[i] = r.bytes(r.uvarint())
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return v, nil
}

func (v *blockView) level(i int) lav1.LogLevel { return lav1.LogLevel(v.levels[i]) }
func (v *blockView) message(i int) []byte      { return v.msgs[v.msgOff[i]:v.msgOff[i+1]] }

func (v *blockView) traceID(i int) string {
	if v.trace[i] == nil {
		return ""
	}
	return hex.EncodeToString(v.trace[i])
}

func (v *blockView) metadataOf(i int) record.Labels {
	if v.metadata[i] == nil {
		return nil
	}
	r := &reader{b: v.metadata[i]}
	cnt := r.uvarint()
	if cnt > uint64(len(v.metadata[i])) {
		return nil
	}
	ls := make(record.Labels, 0, cnt)
	for range cnt {
		k := r.bytes(r.uvarint())
		val := r.bytes(r.uvarint())
		if r.err != nil {
			return ls
		}
		ls = append(ls, record.Label{Name: string(k), Value: string(val)})
	}
	return ls
}

// record materialises record i.
func (v *blockView) record(i int) record.Record {
	r := record.Record{
		Seq: v.seqs[i], Time: v.times[i], ReceiveTime: v.recv[i], Level: v.level(i),
		Source: v.meta.Source, Labels: v.meta.Labels, Message: string(v.message(i)),
		TraceID: v.traceID(i), Metadata: v.metadataOf(i),
		Truncated: v.flags[i]&flagTruncated != 0, OriginalSize: v.orig[i],
	}
	if v.span[i] != nil {
		r.SpanID = hex.EncodeToString(v.span[i])
	}
	return r
}

// encodeMeta and decodeMeta store BlockMeta in the blockmeta bucket.
func encodeMeta(m *BlockMeta) []byte {
	b := make([]byte, 0, 64+len(m.Source))
	b = append(b, 1) // version
	b = appendString(b, m.Source)
	b = appendUvarint(b, uint64(len(m.Labels)))
	for _, l := range m.Labels {
		b = appendString(b, l.Name)
		b = appendString(b, l.Value)
	}
	b = appendVarint(b, m.MinTime)
	b = appendVarint(b, m.MaxTime)
	b = appendUvarint(b, m.MinSeq)
	b = appendUvarint(b, m.MaxSeq)
	b = appendUvarint(b, uint64(m.Count))
	b = append(b, m.LevelMask)
	b = appendUvarint(b, uint64(m.Bytes))
	b = appendUvarint(b, uint64(m.RawBytes))
	return b
}

func decodeMeta(id uint64, b []byte) (*BlockMeta, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, fmt.Errorf("block meta %d: unknown version", id)
	}
	r := &reader{b: b[1:]}
	m := &BlockMeta{ID: id}
	m.Source = string(r.bytes(r.uvarint()))
	nl := r.uvarint()
	if nl > record.MaxLabels {
		return nil, fmt.Errorf("block meta %d: %w", id, errCorrupt)
	}
	for range nl {
		k := string(r.bytes(r.uvarint()))
		v := string(r.bytes(r.uvarint()))
		m.Labels = append(m.Labels, record.Label{Name: k, Value: v})
	}
	m.MinTime = r.varint()
	m.MaxTime = r.varint()
	m.MinSeq = r.uvarint()
	m.MaxSeq = r.uvarint()
	m.Count = uint32(r.uvarint())
	lm := r.bytes(1)
	m.Bytes = uint32(r.uvarint())
	m.RawBytes = uint32(r.uvarint())
	if r.err != nil {
		return nil, fmt.Errorf("block meta %d: %w", id, r.err)
	}
	m.LevelMask = lm[0]
	return m, nil
}

// groupKey identifies records that may share a block.
func groupKey(r *record.Record) string {
	var b strings.Builder
	b.WriteString(r.Source)
	b.WriteByte(0)
	b.WriteString(r.Labels.Key())
	return b.String()
}
