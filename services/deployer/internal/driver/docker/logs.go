package docker

import (
	"bytes"
	"io"
)

// maxLine is the longest line written at once; longer ones are split.
const maxLine = 64 << 10

// lineWriter passes what is written to it on to w one complete line per
// Write, each ending in "\n". Flush writes a trailing partial line.
type lineWriter struct {
	w   io.Writer
	buf []byte
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			lw.buf = append(lw.buf, p...)
			if len(lw.buf) >= maxLine {
				return n, lw.Flush()
			}
			return n, nil
		}
		line := p[:i+1]
		p = p[i+1:]
		if len(lw.buf) > 0 {
			lw.buf = append(lw.buf, line...)
			line = lw.buf
		}
		if _, err := lw.w.Write(line); err != nil {
			return n, err
		}
		lw.buf = lw.buf[:0]
	}
	return n, nil
}

// Flush writes a partial line, completed with "\n", if there is one.
func (lw *lineWriter) Flush() error {
	if len(lw.buf) == 0 {
		return nil
	}
	line := append(lw.buf, '\n')
	lw.buf = lw.buf[:0]
	_, err := lw.w.Write(line)
	return err
}
