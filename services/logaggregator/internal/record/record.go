// Package record is the log-aggregator's record model: it decodes ingestion
// batches (LogBatch, in either form) into validated, normalised records and
// converts records back to their API form.
package record

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits bound what one record may hold.
type Limits struct {
	// MaxMessageBytes cuts longer messages, marking them truncated; default
	// 64 KiB.
	MaxMessageBytes int
	// MaxFuture refuses records timed further ahead of the receive time;
	// default 1h.
	MaxFuture time.Duration
}

// Fixed limits of the record shape; records beyond them are refused.
const (
	MaxSourceBytes        = 256
	MaxLabels             = 32
	MaxLabelNameBytes     = 64
	MaxLabelValueBytes    = 512
	MaxMetadataEntries    = 128
	MaxMetadataKeyBytes   = 128
	MaxMetadataValueBytes = 8 << 10
	// DefaultMaxMessageBytes is the documented message limit.
	DefaultMaxMessageBytes = 64 << 10
)

func (l Limits) withDefaults() Limits {
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if l.MaxFuture <= 0 {
		l.MaxFuture = time.Hour
	}
	return l
}

// Label is one indexed label.
type Label struct{ Name, Value string }

// Labels are sorted by name, names unique.
type Labels []Label

// Get returns the value of name and whether it is set.
func (ls Labels) Get(name string) (string, bool) {
	for _, l := range ls {
		if l.Name == name {
			return l.Value, true
		}
	}
	return "", false
}

// Key is a canonical encoding of the labels, usable as a map key.
func (ls Labels) Key() string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteByte(0)
		b.WriteString(l.Value)
		b.WriteByte(0)
	}
	return b.String()
}

// Equal reports whether ls and o hold the same labels; labels shared by the
// records of one stream compare without looking at their contents.
func (ls Labels) Equal(o Labels) bool {
	if len(ls) != len(o) {
		return false
	}
	if len(ls) == 0 || &ls[0] == &o[0] {
		return true
	}
	for i := range ls {
		if ls[i] != o[i] {
			return false
		}
	}
	return true
}

// Map returns the labels as a map (nil when empty).
func (ls Labels) Map() map[string]string {
	if len(ls) == 0 {
		return nil
	}
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

// Record is one stored log record.
type Record struct {
	// Seq is the store position: (stream sequence + the index's stream
	// base) << SeqShift | index.
	Seq          uint64
	Time         int64 // Unix nanoseconds
	ReceiveTime  int64 // Unix nanoseconds
	Level        lav1.LogLevel
	Source       string
	Labels       Labels
	Message      string
	TraceID      string
	SpanID       string
	Metadata     Labels
	Truncated    bool
	OriginalSize uint32
}

// SeqShift places the index of a record within its stream message below the
// message's stream sequence: record sequences increase in storage order and
// are known as soon as JetStream acknowledges the message.
const SeqShift = 20

// MaxRecordsPerMessage is how many records one stream message may carry.
const MaxRecordsPerMessage = 1 << SeqShift

// Seq returns the record sequence of record index i of stream message seq.
func Seq(streamSeq uint64, i int) uint64 { return streamSeq<<SeqShift | uint64(i) }

// Proto returns the API form of r.
func (r *Record) Proto() *lav1.LogRecord {
	return &lav1.LogRecord{
		Time:         timestamppb.New(time.Unix(0, r.Time)),
		Level:        r.Level,
		Message:      r.Message,
		Source:       r.Source,
		Labels:       r.Labels.Map(),
		TraceId:      r.TraceID,
		SpanId:       r.SpanID,
		Metadata:     r.Metadata.Map(),
		Truncated:    r.Truncated,
		OriginalSize: r.OriginalSize,
		Sequence:     r.Seq,
		ReceiveTime:  timestamppb.New(time.Unix(0, r.ReceiveTime)),
	}
}

// Rejection counts records refused for one reason.
type Rejection struct {
	Field  string
	Reason string
	Count  uint64
}

// Result tells what decoding a batch refused and changed.
type Result struct {
	Accepted   uint64
	Rejected   uint64
	Truncated  uint64
	Rejections []Rejection // at most 10 reasons
}

func (res *Result) reject(field, reason string) {
	res.Rejected++
	for i := range res.Rejections {
		if res.Rejections[i].Reason == reason {
			res.Rejections[i].Count++
			return
		}
	}
	if len(res.Rejections) < 10 {
		res.Rejections = append(res.Rejections, Rejection{Field: field, Reason: reason, Count: 1})
	}
}

// Decoder turns batches into records.
type Decoder struct {
	lim Limits
}

// NewDecoder returns a decoder enforcing lim (zero fields take defaults).
func NewDecoder(lim Limits) *Decoder { return &Decoder{lim: lim.withDefaults()} }

// Limits returns the limits in force.
func (d *Decoder) Limits() Limits { return d.lim }

// Decode validates and normalises every record of b and appends the
// accepted ones to dst. defaultSource applies to records and streams without
// a source; receive is the receive time, also the time of records without
// one. Invalid records are counted in the result, never fatal.
func (d *Decoder) Decode(dst []Record, b *lav1.LogBatch, defaultSource string, receive time.Time) ([]Record, Result) {
	var res Result
	recvNanos := receive.UnixNano()
	maxTime := receive.Add(d.lim.MaxFuture).UnixNano()
	if dst == nil {
		n := len(b.GetRecords())
		for _, st := range b.GetStreams() {
			n += len(st.GetEntries())
		}
		dst = make([]Record, 0, n)
	}
	for i, r := range b.GetRecords() {
		field := recordField(i)
		src := r.GetSource()
		if src == "" {
			src = defaultSource
		}
		if reason := checkSource(src); reason != "" {
			res.reject(field.String()+".source", reason)
			continue
		}
		labels, lf, reason := normLabels(r.GetLabels())
		if reason != "" {
			res.reject(field.String()+".labels"+lf, reason)
			continue
		}
		var t int64
		if ts := r.GetTime(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				res.reject(field.String()+".time", "invalid timestamp")
				continue
			}
			t = ts.AsTime().UnixNano()
		}
		rec, f, reason := d.entry(t, r.GetLevel(), r.GetMessage(), r.GetTraceId(), r.GetSpanId(), r.GetMetadata(), r.GetTruncated(), r.GetOriginalSize(), recvNanos, maxTime)
		if reason != "" {
			res.reject(field.String()+f, reason)
			continue
		}
		rec.Source, rec.Labels = src, labels
		if rec.Truncated && !r.GetTruncated() {
			res.Truncated++
		}
		dst = append(dst, rec)
		res.Accepted++
	}
	for si, s := range b.GetStreams() {
		field := fmt.Sprintf("streams[%d]", si)
		src := s.GetSource()
		if src == "" {
			src = defaultSource
		}
		if reason := checkSource(src); reason != "" {
			for range s.GetEntries() {
				res.reject(field+".source", reason)
			}
			continue
		}
		labels, lf, reason := normLabels(s.GetLabels())
		if reason != "" {
			for range s.GetEntries() {
				res.reject(field+".labels"+lf, reason)
			}
			continue
		}
		for ei, e := range s.GetEntries() {
			rec, f, reason := d.entry(e.GetTimeUnixNano(), e.GetLevel(), e.GetMessage(), e.GetTraceId(), e.GetSpanId(), e.GetMetadata(), e.GetTruncated(), e.GetOriginalSize(), recvNanos, maxTime)
			if reason != "" {
				res.reject(fmt.Sprintf("%s.entries[%d]%s", field, ei, f), reason)
				continue
			}
			rec.Source, rec.Labels = src, labels
			if rec.Truncated && !e.GetTruncated() {
				res.Truncated++
			}
			dst = append(dst, rec)
			res.Accepted++
		}
	}
	return dst, res
}

func (d *Decoder) entry(t int64, level lav1.LogLevel, msg, trace, span string, md map[string]string, truncated bool, origSize uint32, recv, maxTime int64) (Record, string, string) {
	if t == 0 {
		t = recv
	}
	if t < 0 {
		return Record{}, ".time", "time before 1970"
	}
	if t > maxTime {
		return Record{}, ".time", fmt.Sprintf("time more than %s in the future", d.lim.MaxFuture)
	}
	if level < lav1.LogLevel_LOG_LEVEL_UNSPECIFIED || level > lav1.LogLevel_LOG_LEVEL_FATAL {
		return Record{}, ".level", "unknown level"
	}
	trace, ok := normHex(trace, 32)
	if !ok {
		return Record{}, ".trace_id", "trace id must be 32 hex digits"
	}
	span, ok = normHex(span, 16)
	if !ok {
		return Record{}, ".span_id", "span id must be 16 hex digits"
	}
	meta, reason := normMetadata(md)
	if reason != "" {
		return Record{}, ".metadata", reason
	}
	rec := Record{Time: t, ReceiveTime: recv, Level: level, TraceID: trace, SpanID: span, Metadata: meta}
	rec.Message = validUTF8(msg)
	if truncated {
		rec.Truncated = true
		rec.OriginalSize = max(origSize, uint32(min(len(msg), 1<<31)))
	}
	if len(rec.Message) > d.lim.MaxMessageBytes {
		if !rec.Truncated {
			rec.OriginalSize = uint32(min(len(msg), 1<<31))
		}
		rec.Truncated = true
		rec.Message = cutUTF8(rec.Message, d.lim.MaxMessageBytes)
	}
	return rec, "", ""
}

// validUTF8 replaces invalid UTF-8 sequences with U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// recordField names records[i] without formatting until a rejection needs it.
type recordField int

func (f recordField) String() string { return fmt.Sprintf("records[%d]", int(f)) }

// cutUTF8 cuts s to at most n bytes at a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// CheckSource returns why src is not a valid source, or "".
func CheckSource(src string) string { return checkSource(src) }

func checkSource(src string) string {
	if src == "" {
		return "source is required"
	}
	if len(src) > MaxSourceBytes {
		return fmt.Sprintf("source longer than %d bytes", MaxSourceBytes)
	}
	if !utf8.ValidString(src) {
		return "source is not valid UTF-8"
	}
	for seg := range strings.SplitSeq(src, "/") {
		if seg == "" {
			return "source has an empty path segment"
		}
	}
	for _, r := range src {
		if r <= ' ' || r == 0x7f || r == '*' || r == '>' {
			return "source may not contain spaces, control characters, '*' or '>'"
		}
	}
	return ""
}

// ValidLabelName reports whether name follows [a-zA-Z_][a-zA-Z0-9_.]*.
func ValidLabelName(name string) bool {
	if name == "" || len(name) > MaxLabelNameBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.'):
		default:
			return false
		}
	}
	return true
}

func normLabels(m map[string]string) (Labels, string, string) {
	if len(m) == 0 {
		return nil, "", ""
	}
	if len(m) > MaxLabels {
		return nil, "", fmt.Sprintf("more than %d labels", MaxLabels)
	}
	ls := make(Labels, 0, len(m))
	for k, v := range m {
		if !ValidLabelName(k) {
			return nil, "[" + k + "]", "label name must match [a-zA-Z_][a-zA-Z0-9_.]* (at most 64 bytes)"
		}
		if len(v) > MaxLabelValueBytes {
			return nil, "[" + k + "]", fmt.Sprintf("label value longer than %d bytes", MaxLabelValueBytes)
		}
		ls = append(ls, Label{Name: k, Value: validUTF8(v)})
	}
	slices.SortFunc(ls, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	return ls, "", ""
}

func normMetadata(m map[string]string) (Labels, string) {
	if len(m) == 0 {
		return nil, ""
	}
	if len(m) > MaxMetadataEntries {
		return nil, fmt.Sprintf("more than %d metadata entries", MaxMetadataEntries)
	}
	ls := make(Labels, 0, len(m))
	for k, v := range m {
		if k == "" || len(k) > MaxMetadataKeyBytes {
			return nil, fmt.Sprintf("metadata key empty or longer than %d bytes", MaxMetadataKeyBytes)
		}
		ls = append(ls, Label{Name: validUTF8(k), Value: cutUTF8(validUTF8(v), MaxMetadataValueBytes)})
	}
	slices.SortFunc(ls, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	return ls, ""
}

func normHex(s string, n int) (string, bool) {
	if s == "" {
		return "", true
	}
	if len(s) != n {
		return "", false
	}
	lower := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			lower = false
		default:
			return "", false
		}
	}
	if !lower {
		s = strings.ToLower(s)
	}
	return s, true
}

// Batch encodes records in the compact form (streams of records sharing
// source and labels, in the order given), as the ingestion path stores them
// in the write-ahead stream.
func Batch(recs []Record, batchID string) *lav1.LogBatch {
	b := &lav1.LogBatch{BatchId: batchID}
	var cur *lav1.LogStream
	var prev *Record
	for i := range recs {
		r := &recs[i]
		if cur == nil || r.Source != prev.Source || !r.Labels.Equal(prev.Labels) {
			cur = &lav1.LogStream{Source: r.Source, Labels: r.Labels.Map()}
			b.Streams = append(b.Streams, cur)
		}
		prev = r
		cur.Entries = append(cur.Entries, &lav1.LogEntry{
			TimeUnixNano: r.Time,
			Level:        r.Level,
			Message:      r.Message,
			TraceId:      r.TraceID,
			SpanId:       r.SpanID,
			Metadata:     r.Metadata.Map(),
			Truncated:    r.Truncated,
			OriginalSize: r.OriginalSize,
		})
	}
	return b
}
