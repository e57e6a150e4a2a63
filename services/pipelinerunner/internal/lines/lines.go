// Package lines cuts a byte stream into lines of at most MaxLine bytes.
package lines

import "bytes"

// MaxLine is the longest line passed on whole; longer ones are cut into
// partial lines.
const MaxLine = 64 << 10

// Splitter calls emit once per line, without its line break.
type Splitter struct {
	emit func(text string, partial bool)
	buf  []byte
}

// New returns a splitter calling emit.
func New(emit func(text string, partial bool)) *Splitter { return &Splitter{emit: emit} }

// Write takes any piece of the stream.
func (s *Splitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.buf = append(s.buf, p...)
			for len(s.buf) >= MaxLine {
				s.emit(string(s.buf[:MaxLine]), true)
				s.buf = append(s.buf[:0], s.buf[MaxLine:]...)
			}
			return n, nil
		}
		line := p[:i]
		if len(s.buf) > 0 {
			line = append(s.buf, line...)
			s.buf = s.buf[:0]
		}
		for len(line) > MaxLine {
			s.emit(string(line[:MaxLine]), true)
			line = line[MaxLine:]
		}
		s.emit(string(bytes.TrimSuffix(line, []byte("\r"))), false)
		p = p[i+1:]
	}
	return n, nil
}

// Close passes on an unterminated last line as partial.
func (s *Splitter) Close() error {
	if len(s.buf) > 0 {
		s.emit(string(s.buf), true)
		s.buf = nil
	}
	return nil
}
