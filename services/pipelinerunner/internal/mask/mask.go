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

// scan appends p to out with secrets replaced. Unless final, it stops at the
// first position whose remainder is a proper prefix of a secret and returns
// that remainder to be held back.
func (m *Masker) scan(out, p []byte, final bool) ([]byte, []byte) {
	i, start := 0, 0
	for i < len(p) {
		matched := false
		for _, s := range m.secrets {
			if bytes.HasPrefix(p[i:], s) {
				out = append(out, p[start:i]...)
				out = append(out, Replacement...)
				i += len(s)
				start = i
				matched = true
				break
			}
		}
		if matched {
			continue
		}
		if !final && m.isPrefix(p[i:]) {
			out = append(out, p[start:i]...)
			return out, p[i:]
		}
		i++
	}
	return append(out, p[start:]...), nil
}

// isPrefix reports whether rest is a proper prefix of some secret.
func (m *Masker) isPrefix(rest []byte) bool {
	for _, s := range m.secrets {
		if len(rest) < len(s) && bytes.HasPrefix(s, rest) {
			return true
		}
	}
	return false
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
