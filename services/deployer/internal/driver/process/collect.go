//go:build linux

package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// How a replica's output becomes its log: the process writes its stdout and
// stderr straight into the output file (no pipe, so it outlives the deployer
// and never blocks or gets SIGPIPE because of it). The collector reads what
// was appended since the last offset, stamps each line with the time it
// read it and appends it to the log, rotated at half of MaxLogBytes into
// log.1. The offset is persisted, and collected output is released with a
// punched hole, so output stays bounded while a driver runs; output written
// while no driver runs is collected, and stamped, when one adopts it.
const (
	// tsLayout has a fixed width so a line's text starts at tsLen+1.
	tsLayout = "2006-01-02T15:04:05.000000000Z07:00"
	tsLen    = len("2006-01-02T15:04:05.000000000Z")
	// maxLine cuts longer output lines into several log lines.
	maxLine = 64 << 10
	// releaseEvery is how much collected output is released at a time.
	releaseEvery = 1 << 20
	// truncateAt: without hole punching, fully collected output this large
	// is truncated instead (losing what the process writes in that instant).
	truncateAt = 4 << 20
)

// collector turns a replica's output into its log; guarded by replica.logMu.
type collector struct {
	raw      *os.File // output, opened read-write to punch holes
	log      *os.File // log, opened to append
	logSize  int64
	offset   int64 // output bytes collected into log, pending excluded
	saved    int64 // offset as last persisted
	released int64 // output bytes before this were released
	pending  []byte
	noPunch  bool
	buf      []byte
	done     bool // closed for good: the replica was removed or the driver closed
}

// collect appends the output written since the last call to the log and
// reports whether it appended anything. flush also writes a last line
// without a newline (the process exited).
func (c *collector) collect(dir string, now time.Time, maxLog int64, flush bool) (bool, error) {
	if c.done {
		return false, nil
	}
	if c.raw == nil {
		f, err := os.OpenFile(filepath.Join(dir, outputFile), os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("open output: %w", err)
		}
		c.raw = f
		c.offset = readOffset(dir)
		if fi, err := f.Stat(); err == nil && fi.Size() < c.offset {
			c.offset = 0 // truncated after the offset was saved
		}
		c.saved = c.offset
		c.buf = make([]byte, 64<<10)
	}
	if c.log == nil {
		if err := c.openLog(dir); err != nil {
			return false, err
		}
	}

	stamp := now.UTC().Format(tsLayout)
	batch := min(1<<20, maxLog/4)
	var out []byte
	wrote := false
	pos := c.offset + int64(len(c.pending))
	for {
		n, rerr := c.raw.ReadAt(c.buf, pos)
		pos += int64(n)
		data := c.buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				c.pending = append(c.pending, data...)
				for len(c.pending) >= maxLine {
					out = appendLine(out, stamp, c.pending[:maxLine])
					c.offset += maxLine
					c.pending = append(c.pending[:0], c.pending[maxLine:]...)
				}
				break
			}
			line := append(c.pending, data[:i]...)
			for len(line) > maxLine {
				out = appendLine(out, stamp, line[:maxLine])
				line = line[maxLine:]
			}
			out = appendLine(out, stamp, line)
			c.offset += int64(len(c.pending) + i + 1)
			c.pending = c.pending[:0]
			data = data[i+1:]
		}
		if int64(len(out)) >= batch {
			if err := c.write(dir, out, maxLog); err != nil {
				return wrote, err
			}
			out, wrote = out[:0], true
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return wrote, fmt.Errorf("read output: %w", rerr)
		}
	}
	if flush && len(c.pending) > 0 {
		out = appendLine(out, stamp, c.pending)
		c.offset += int64(len(c.pending))
		c.pending = c.pending[:0]
	}
	if len(out) > 0 {
		if err := c.write(dir, out, maxLog); err != nil {
			return wrote, err
		}
		wrote = true
	}
	if c.offset != c.saved {
		if err := writeFile(filepath.Join(dir, offsetFile), []byte(strconv.FormatInt(c.offset, 10))); err != nil {
			return wrote, err
		}
		c.saved = c.offset
	}
	return wrote, c.release(dir)
}

func (c *collector) openLog(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, logFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	c.log, c.logSize = f, fi.Size()
	return nil
}

// write appends stamped lines to the log and rotates it when it reached
// half of maxLog.
func (c *collector) write(dir string, lines []byte, maxLog int64) error {
	n, err := c.log.Write(lines)
	c.logSize += int64(n)
	if err != nil {
		return fmt.Errorf("write log: %w", err)
	}
	if c.logSize < maxLog/2 {
		return nil
	}
	if err := c.log.Close(); err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	c.log = nil
	if err := os.Rename(filepath.Join(dir, logFile), filepath.Join(dir, oldLogFile)); err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	return c.openLog(dir)
}

// release frees the disk space of output already collected.
func (c *collector) release(dir string) error {
	if !c.noPunch && c.offset-c.released >= releaseEvery {
		n := c.offset &^ 4095
		err := punchHole(c.raw, n)
		switch {
		case err == nil:
			c.released = n
			return nil
		case errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS):
			c.noPunch = true
		default:
			return fmt.Errorf("release output: %w", err)
		}
	}
	if !c.noPunch || len(c.pending) > 0 || c.offset < truncateAt {
		return nil
	}
	if fi, err := c.raw.Stat(); err != nil || fi.Size() != c.offset {
		return nil
	}
	if err := c.raw.Truncate(0); err != nil {
		return fmt.Errorf("release output: %w", err)
	}
	c.offset, c.released = 0, 0
	if err := writeFile(filepath.Join(dir, offsetFile), []byte("0")); err != nil {
		return err
	}
	c.saved = 0
	return nil
}

func (c *collector) close() {
	for _, f := range []*os.File{c.raw, c.log} {
		if f != nil {
			_ = f.Close()
		}
	}
	*c = collector{done: true}
}

func appendLine(out []byte, stamp string, line []byte) []byte {
	out = append(out, stamp...)
	out = append(out, ' ')
	out = append(out, line...)
	return append(out, '\n')
}

// parseLine splits a log line (without its newline) into time and text.
func parseLine(b []byte) (time.Time, []byte, bool) {
	if len(b) < tsLen+1 || b[tsLen] != ' ' {
		return time.Time{}, nil, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(b[:tsLen]))
	if err != nil {
		return time.Time{}, nil, false
	}
	return ts, b[tsLen+1:], true
}

func readOffset(dir string) int64 {
	b, err := os.ReadFile(filepath.Join(dir, offsetFile))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// writeFile replaces name with b through a rename, without syncing: used
// for the offset, where a stale value only repeats a few log lines.
func writeFile(name string, b []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
