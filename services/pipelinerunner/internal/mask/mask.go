// Package mask removes secret values from output as it streams: a value
// split across writes is still caught, because the stream holds back the
// shortest tail that could be the start of a secret until the next write
// (or the end) decides it.
package mask

import (
	"bytes"
	"slices"
	"strings"
)

// Replacement is what a secret value becomes.
const Replacement = "********"

// Masker knows the secret values of one step or run.
type Masker struct {
	secrets [][]byte // longest first
}

// New returns a masker of values. Empty values are ignored; a multi-line
// value is also masked line by line, so a line-oriented reader never sees
// one of its lines either.
func New(values ...string) *Masker {
	set := map[string]bool{}
	for _, v := range values {
		if v == "" {
			continue
		}
		set[v] = true
		if strings.ContainsAny(v, "\r\n") {
			for _, l := range strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == '\r' }) {
				if len(strings.TrimSpace(l)) >= 3 {
					set[l] = true
				}
			}
		}
	}
	m := &Masker{}
	for v := range set {
		m.secrets = append(m.secrets, []byte(v))
	}
	slices.SortFunc(m.secrets, func(a, b []byte) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return bytes.Compare(a, b)
	})
	return m
}

// String masks a complete text.
func (m *Masker) String(s string) string {
	if m == nil || len(m.secrets) == 0 {
		return s
	}
	out, _ := m.scan(nil, []byte(s), true)
	return string(out)
}

// scan appends p to out with secrets replaced. A secret also matches when
// line breaks were printed inside it (the replacement keeps those line
// breaks, so lines stay lines). Unless final, it stops at the first
// position whose remainder could be the start of a secret and returns that
// remainder to be held back.
func (m *Masker) scan(out, p []byte, final bool) ([]byte, []byte) {
	i, start := 0, 0
	for i < len(p) {
		matched, prefix := false, false
		for _, s := range m.secrets {
			end, breaks, state := matchAt(p, i, s)
			if state == full {
				out = append(out, p[start:i]...)
				out = append(out, Replacement...)
				for range breaks {
					out = append(out, '\n')
				}
				i = end
				start = i
				matched = true
				break
			}
			if state == partial {
				prefix = true
			}
		}
		if matched {
			continue
		}
		if !final && prefix {
			out = append(out, p[start:i]...)
			return out, p[i:]
		}
		i++
	}
	return append(out, p[start:]...), nil
}

type matchState int

const (
	none    matchState = iota
	full               // the secret ends at end
	partial            // p ends inside what could still become the secret
)

// matchAt matches secret s at p[i:], skipping line breaks that are not
// part of s after its first byte; breaks counts the skipped '\n'.
func matchAt(p []byte, i int, s []byte) (end, breaks int, state matchState) {
	j, k := i, 0
	for k < len(s) && j < len(p) {
		switch {
		case p[j] == s[k]:
			j++
			k++
		case k > 0 && (p[j] == '\n' || p[j] == '\r'):
			if p[j] == '\n' {
				breaks++
			}
			j++
		default:
			return 0, 0, none
		}
	}
	if k == len(s) {
		return j, breaks, full
	}
	return 0, 0, partial
}

// Stream masks a byte stream written in arbitrary pieces and passes the
// masked bytes to emit, which must not keep the slice.
type Stream struct {
	m       *Masker
	emit    func([]byte)
	pending []byte
	buf     []byte
}

// Stream returns a writer that masks into emit.
func (m *Masker) Stream(emit func([]byte)) *Stream { return &Stream{m: m, emit: emit} }

// Write masks p; a tail that could start a secret waits for more bytes.
func (s *Stream) Write(p []byte) (int, error) {
	if s.m == nil || len(s.m.secrets) == 0 {
		s.emit(p)
		return len(p), nil
	}
	data := append(s.pending, p...)
	var rest []byte
	s.buf, rest = s.m.scan(s.buf[:0], data, false)
	s.pending = append([]byte(nil), rest...)
	if len(s.buf) > 0 {
		s.emit(s.buf)
	}
	return len(p), nil
}

// Close emits what was held back; it cannot be a secret any more.
func (s *Stream) Close() error {
	if len(s.pending) > 0 {
		s.emit([]byte(s.m.String(string(s.pending))))
		s.pending = nil
	}
	return nil
}
