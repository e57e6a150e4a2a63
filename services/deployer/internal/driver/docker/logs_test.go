package docker_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// lines collects what Logs writes, checking each write is one line.
type lines struct {
	mu     sync.Mutex
	got    []string
	broken []string // writes that were not exactly one line
	added  chan struct{}
}

func newLines() *lines { return &lines{added: make(chan struct{}, 1)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := string(p)
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		l.broken = append(l.broken, s)
	}
	l.got = append(l.got, strings.TrimSuffix(s, "\n"))
	select {
	case l.added <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *lines) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func (l *lines) check(tb testing.TB) {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.broken) > 0 {
		tb.Errorf("writes that are not one line each: %q", l.broken)
	}
}

// waitFor waits until a line equal to want arrives.
func (l *lines) waitFor(tb testing.TB, want string, timeout time.Duration) {
	tb.Helper()
	deadline := time.After(timeout)
	for !slices.Contains(l.lines(), want) {
		select {
		case <-l.added:
		case <-deadline:
			tb.Fatalf("line %q did not arrive within %s; got %q", want, timeout, l.lines())
		}
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	ctx := context.Background()
	spec := testSpec("logs")
	spec.Env = map[string]string{"LOG_LINES": "5"}
	r := start(t, d, spec)
	web := binding(t, r, "http")

	logs := func(opts driver.LogOptions) []string {
		t.Helper()
		l := newLines()
		if err := d.Logs(ctx, spec.ID, opts, l); err != nil {
			t.Fatalf("Logs(%+v): %v", opts, err)
		}
		l.check(t)
		return l.lines()
	}

	var all []string
	eventually(t, 10*time.Second, "startup lines", func() (bool, string) {
		all = logs(driver.LogOptions{})
		return len(all) >= 7, strings.Join(all, "|")
	})
	for _, want := range []string{"listening on :8080", "line 1", "line 5", "stderr line"} {
		if !slices.Contains(all, want) {
			t.Errorf("logs %q lack %q", all, want)
		}
	}

	t.Run("tail", func(t *testing.T) {
		if got := logs(driver.LogOptions{Tail: 2}); !slices.Equal(got, all[len(all)-2:]) {
			t.Errorf("tail 2 = %q, want %q", got, all[len(all)-2:])
		}
	})

	t.Run("since", func(t *testing.T) {
		since := time.Now()
		time.Sleep(10 * time.Millisecond)
		get(t, web, "/log?msg=after-since")
		var got []string
		eventually(t, 5*time.Second, "the line after since", func() (bool, string) {
			got = logs(driver.LogOptions{Since: since})
			return slices.Contains(got, "after-since"), strings.Join(got, "|")
		})
		if !slices.Equal(got, []string{"after-since"}) {
			t.Errorf("since = %q, want only the line written after it", got)
		}
	})

	t.Run("follow until cancelled", func(t *testing.T) {
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		l := newLines()
		done := make(chan error, 1)
		go func() { done <- d.Logs(fctx, spec.ID, driver.LogOptions{Follow: true, Tail: 1}, l) }()
		get(t, web, "/log?msg="+url.QueryEscape("followed one"))
		l.waitFor(t, "followed one", 5*time.Second)
		get(t, web, "/log?msg=followed-two")
		l.waitFor(t, "followed-two", 5*time.Second)
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("follow ended by ctx = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("follow did not end after ctx was cancelled")
		}
		l.check(t)
	})

	t.Run("follow until stopped", func(t *testing.T) {
		l := newLines()
		done := make(chan error, 1)
		go func() { done <- d.Logs(ctx, spec.ID, driver.LogOptions{Follow: true}, l) }()
		l.waitFor(t, "line 5", 5*time.Second)
		if err := d.Stop(ctx, spec.ID, 5*time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("follow ended by the stop = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("follow did not end when the replica stopped")
		}
		if !slices.Contains(l.lines(), "shutting down") {
			t.Errorf("follow missed the last line: %q", l.lines())
		}
		l.check(t)
	})

	if err := d.Logs(ctx, spec.ID, driver.LogOptions{}, newLines()); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Logs after Stop = %v, want ErrNotFound", err)
	}
}
