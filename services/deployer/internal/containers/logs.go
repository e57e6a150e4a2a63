package containers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxLineBytes bounds one log line; longer lines are cut there and the rest
// starts a new line, so a runaway writer cannot exhaust memory.
const MaxLineBytes = 64 << 10

// LogOptions select the lines Logs sends.
type LogOptions struct {
	// Tail is how many of the last lines; 0 means all.
	Tail int
	// Follow keeps streaming until the container stops or ctx ends.
	Follow bool
	// Since drops older lines when not zero.
	Since time.Time
	// Stream is one stream, or both when unspecified.
	Stream deployerv1.LogStream
}

// Logs sends a container's output to send, in batches of lines in the
// order written, each with its stream and time. Any container (also
// application replicas) may be read. With Follow, ctx ending is a normal end.
func (m *Manager) Logs(ctx context.Context, id string, opts LogOptions, send func([]*deployerv1.LogLine) error) error {
	if opts.Tail < 0 {
		return fmt.Errorf("logs %s: tail %d is negative", id, opts.Tail)
	}
	c, err := m.inspect(ctx, id)
	if err != nil {
		return fmt.Errorf("logs %s: %w", id, err)
	}
	lo := client.ContainerLogsOptions{
		ShowStdout: opts.Stream != deployerv1.LogStream_LOG_STREAM_STDERR,
		ShowStderr: opts.Stream != deployerv1.LogStream_LOG_STREAM_STDOUT,
		Follow:     opts.Follow, Timestamps: true,
	}
	if opts.Tail > 0 {
		lo.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		lo.Since = strconv.FormatFloat(float64(opts.Since.UnixNano())/1e9, 'f', 9, 64)
	}
	rc, err := m.cli.ContainerLogs(ctx, c.ID, lo)
	if err != nil {
		return fmt.Errorf("logs %s: %w", id, classify(err))
	}
	defer rc.Close()

	// Lines of both streams go through one channel so they keep their order
	// and batches can be flushed on a timer while following.
	lines := make(chan *deployerv1.LogLine, 256)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		emit := func(stream deployerv1.LogStream) io.Writer {
			return &lineSplitter{stream: stream, out: lines, done: ctx.Done()}
		}
		stdout, stderr := emit(deployerv1.LogStream_LOG_STREAM_STDOUT), emit(deployerv1.LogStream_LOG_STREAM_STDERR)
		var err error
		if c.Config != nil && c.Config.Tty {
			_, err = io.Copy(stdout, rc)
		} else {
			_, err = stdcopy.StdCopy(stdout, stderr, rc)
		}
		err = errors.Join(err, stdout.(*lineSplitter).flush(), stderr.(*lineSplitter).flush())
		readErr <- err
	}()

	const batchMax = 128
	batch := make([]*deployerv1.LogLine, 0, batchMax)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := send(batch)
		batch = make([]*deployerv1.LogLine, 0, batchMax)
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				if err := flush(); err != nil {
					return err
				}
				err := <-readErr
				if err != nil && !(opts.Follow && ctx.Err() != nil) {
					return fmt.Errorf("logs %s: read stream: %w", id, err)
				}
				return nil
			}
			batch = append(batch, l)
			if len(batch) == batchMax {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// lineSplitter turns one demultiplexed stream with Docker's timestamps
// into LogLines.
type lineSplitter struct {
	stream deployerv1.LogStream
	out    chan<- *deployerv1.LogLine
	done   <-chan struct{}
	buf    []byte
}

func (w *lineSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) >= MaxLineBytes {
				if err := w.flush(); err != nil {
					return 0, err
				}
			}
			return n, nil
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (w *lineSplitter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	line := w.buf
	w.buf = nil
	for len(line) > 0 {
		chunk := line
		if len(chunk) > MaxLineBytes {
			chunk = chunk[:MaxLineBytes]
		}
		line = line[len(chunk):]
		if err := w.emit(chunk); err != nil {
			return err
		}
	}
	return nil
}

func (w *lineSplitter) emit(raw []byte) error {
	l := &deployerv1.LogLine{Stream: w.stream}
	text := raw
	// Docker prefixes each line with an RFC 3339 time and a space.
	if ts, rest, ok := bytes.Cut(raw, []byte(" ")); ok {
		if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
			l.Time = timestamppb.New(t)
			text = rest
		}
	}
	l.Text = strings.ToValidUTF8(strings.TrimSuffix(string(text), "\r"), string(utf8.RuneError))
	select {
	case w.out <- l:
		return nil
	case <-w.done:
		return context.Canceled
	}
}
