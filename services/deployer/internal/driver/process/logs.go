//go:build linux

package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Logs writes the replica's output to w, one line (with its newline) per
// Write, without the time stamps the driver keeps. Lines are stamped when
// the driver collects them, within a PollInterval of being written (output
// written while no driver ran: when one adopted the replica). With Follow
// it returns nil when ctx ends, the driver closes, or the replica is
// stopped or exits for good.
func (d *Driver) Logs(ctx context.Context, id string, opts driver.LogOptions, w io.Writer) error {
	r, err := d.lookup(id)
	if err != nil {
		return fmt.Errorf("logs %s: %w", id, err)
	}
	d.collect(r, false) // what was written since the last poll

	r.logMu.Lock()
	old, err := openIfExists(filepath.Join(r.dir, oldLogFile))
	var cur *os.File
	if err == nil {
		cur, err = openIfExists(filepath.Join(r.dir, logFile))
	}
	r.logMu.Unlock()
	if err != nil {
		closeFile(old)
		return fmt.Errorf("logs %s: %w", id, err)
	}
	defer func() { closeFile(cur) }()

	f := &lineFilter{ctx: ctx, w: w, opts: opts}
	if opts.Tail > 0 {
		f.ring = make([][]byte, 0, opts.Tail)
	}
	if old != nil {
		err = f.readAll(old)
		closeFile(old)
		if err != nil {
			return fmt.Errorf("logs %s: %w", id, err)
		}
	}
	if cur != nil {
		if err := f.readAll(cur); err != nil {
			return fmt.Errorf("logs %s: %w", id, err)
		}
	}
	if err := f.flushRing(); err != nil {
		return fmt.Errorf("logs %s: %w", id, err)
	}
	if !opts.Follow {
		return nil
	}

	path := filepath.Join(r.dir, logFile)
	for {
		r.mu.Lock()
		changed, finished := r.changed, r.removed || r.rec.Phase == phaseExited
		r.mu.Unlock()
		// Read until the current log is exhausted, following a rotation.
		for {
			if cur != nil {
				if err := f.readAll(cur); err != nil {
					return fmt.Errorf("logs %s: %w", id, err)
				}
			}
			next, err := openIfExists(path)
			if err != nil || next == nil {
				break
			}
			if cur != nil && sameFile(cur, next) {
				closeFile(next)
				break
			}
			if cur != nil {
				// Rotated: what was appended to the old file before it.
				if err := f.readAll(cur); err != nil {
					closeFile(next)
					return fmt.Errorf("logs %s: %w", id, err)
				}
				closeFile(cur)
			}
			cur, f.partial = next, nil
		}
		if finished {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.closing:
			return nil
		case <-changed:
		}
	}
}

// lineFilter applies LogOptions to log lines and writes their text.
type lineFilter struct {
	ctx     context.Context
	w       io.Writer
	opts    driver.LogOptions
	ring    [][]byte // the last Tail lines, before the first flush
	next    int      // where the ring's next line goes once it is full
	partial []byte   // a line read without its newline yet
}

// readAll reads f from its offset to its end; a last line without newline
// is kept for the next call.
func (l *lineFilter) readAll(f *os.File) error {
	br := bufio.NewReaderSize(f, 64<<10)
	for n := 0; ; n++ {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			l.partial = append(l.partial, b...)
			continue
		}
		if errors.Is(err, io.EOF) {
			l.partial = append(l.partial, b...)
			return nil
		}
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		line := b[:len(b)-1]
		if len(l.partial) > 0 {
			line = append(l.partial, line...)
			l.partial = nil
		}
		if err := l.line(line); err != nil {
			return err
		}
		if n%256 == 0 {
			if err := l.ctx.Err(); err != nil && !l.opts.Follow {
				return err
			}
		}
	}
}

func (l *lineFilter) line(b []byte) error {
	ts, text, ok := parseLine(b)
	if !ok || (!l.opts.Since.IsZero() && ts.Before(l.opts.Since)) {
		return nil
	}
	out := make([]byte, len(text)+1)
	copy(out, text)
	out[len(text)] = '\n'
	if l.ring == nil {
		if _, err := l.w.Write(out); err != nil {
			return fmt.Errorf("write log line: %w", err)
		}
		return nil
	}
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, out)
		return nil
	}
	l.ring[l.next] = out
	l.next = (l.next + 1) % len(l.ring)
	return nil
}

// flushRing writes the tailed lines, oldest first; later lines go straight
// to the writer.
func (l *lineFilter) flushRing() error {
	ring := append(l.ring[l.next:], l.ring[:l.next]...)
	l.ring = nil
	for _, b := range ring {
		if _, err := l.w.Write(b); err != nil {
			return fmt.Errorf("write log line: %w", err)
		}
	}
	return nil
}

func openIfExists(name string) (*os.File, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return f, err
}

func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

func sameFile(a, b *os.File) bool {
	ai, err := a.Stat()
	if err != nil {
		return false
	}
	bi, err := b.Stat()
	return err == nil && os.SameFile(ai, bi)
}
