//go:build linux

package process_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
)

func say(tb testing.TB, r driver.Replica, msg, stream string) {
	tb.Helper()
	mustGet(tb, r.Bindings[0], "/say?msg="+url.QueryEscape(msg)+"&stream="+stream)
}

func logLines(tb testing.TB, d *process.Driver, id string, opts driver.LogOptions) []string {
	tb.Helper()
	var w lineWriter
	if err := d.Logs(context.Background(), id, opts, &w); err != nil {
		tb.Fatalf("logs %s: %v", id, err)
	}
	return w.get()
}

func waitLogged(tb testing.TB, d *process.Driver, id, line string) {
	tb.Helper()
	eventually(tb, 5*time.Second, fmt.Sprintf("%q is logged", line), func() bool {
		return slices.Contains(logLines(tb, d, id, driver.LogOptions{}), line)
	})
}

func TestLogsTailAndSince(t *testing.T) {
	t.Parallel()
	d := newDriver(t, newStateDir(t))
	r := startApp(t, d, appSpec("logs", nil))
	for _, m := range []string{"a1", "a2", "a3"} {
		say(t, r, m, "")
	}
	waitLogged(t, d, r.ID, "a3")
	mark := time.Now() // a* were stamped before: they are already logged
	say(t, r, "b1", "")
	say(t, r, "b2", "stderr")
	waitLogged(t, d, r.ID, "b2")

	want := []string{fmt.Sprintf("listening on %d", r.Bindings[0].HostPort), "stderr works", "a1", "a2", "a3", "b1", "b2"}
	for _, tc := range []struct {
		name string
		opts driver.LogOptions
		want []string
	}{
		{"all", driver.LogOptions{}, want},
		{"tail", driver.LogOptions{Tail: 2}, []string{"b1", "b2"}},
		{"tail longer than the log", driver.LogOptions{Tail: 100}, want},
		{"since", driver.LogOptions{Since: mark}, []string{"b1", "b2"}},
		{"since and tail", driver.LogOptions{Since: mark, Tail: 1}, []string{"b2"}},
		{"since the future", driver.LogOptions{Since: time.Now().Add(time.Hour)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := logLines(t, d, r.ID, tc.opts); !slices.Equal(got, tc.want) {
				t.Errorf("logs = %q, want %q", got, tc.want)
			}
		})
	}
	if err := d.Logs(context.Background(), "nope", driver.LogOptions{}, &lineWriter{}); !isNotFound(err) {
		t.Errorf("logs of an unknown replica: %v, want ErrNotFound", err)
	}
}

// follow runs Logs with Follow in the background; the returned channel
// yields its result.
func follow(d *process.Driver, ctx context.Context, id string, opts driver.LogOptions, w *lineWriter) <-chan error {
	done := make(chan error, 1)
	opts.Follow = true
	go func() { done <- d.Logs(ctx, id, opts, w) }()
	return done
}

func waitDone(tb testing.TB, done <-chan error, what string) {
	tb.Helper()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("%s: logs returned %v", what, err)
		}
	case <-time.After(5 * time.Second):
		tb.Fatalf("%s: logs still following", what)
	}
}

func TestLogsFollow(t *testing.T) {
	t.Parallel()
	t.Run("until ctx ends", func(t *testing.T) {
		t.Parallel()
		d := newDriver(t, newStateDir(t))
		r := startApp(t, d, appSpec("follow", nil))
		waitLogged(t, d, r.ID, "stderr works")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var w lineWriter
		done := follow(d, ctx, r.ID, driver.LogOptions{Tail: 1}, &w)
		eventually(t, 5*time.Second, "the tail line arrives", func() bool { return w.has("stderr works") })
		say(t, r, "c1", "")
		say(t, r, "c2", "stderr")
		eventually(t, 5*time.Second, "new lines arrive", func() bool { return w.has("c2") })
		cancel()
		waitDone(t, done, "cancelled")
		if got := w.get(); !slices.Equal(got, []string{"stderr works", "c1", "c2"}) {
			t.Errorf("followed %q", got)
		}
	})
	t.Run("until the replica stops", func(t *testing.T) {
		t.Parallel()
		d := newDriver(t, newStateDir(t))
		r := startApp(t, d, appSpec("follow", nil))
		var w lineWriter
		done := follow(d, context.Background(), r.ID, driver.LogOptions{}, &w)
		eventually(t, 5*time.Second, "output arrives", func() bool { return w.has("stderr works") })
		if err := d.Stop(context.Background(), r.ID, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		waitDone(t, done, "stopped")
		if !w.has("terminating") {
			t.Errorf("the last words are missing: %q", w.get())
		}
	})
	t.Run("until the replica exits", func(t *testing.T) {
		t.Parallel()
		d := newDriver(t, newStateDir(t))
		r, err := d.Start(context.Background(), appSpec("follow", map[string]string{"CRASH_AFTER": "300ms"}))
		if err != nil {
			t.Fatal(err)
		}
		var w lineWriter
		waitDone(t, follow(d, context.Background(), r.ID, driver.LogOptions{}, &w), "exited")
		if !w.has("crashing") {
			t.Errorf("the last words are missing: %q", w.get())
		}
	})
	t.Run("until the driver closes", func(t *testing.T) {
		t.Parallel()
		d := newDriver(t, newStateDir(t))
		r := startApp(t, d, appSpec("follow", nil))
		var w lineWriter
		done := follow(d, context.Background(), r.ID, driver.LogOptions{}, &w)
		eventually(t, 5*time.Second, "output arrives", func() bool { return w.has("stderr works") })
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		waitDone(t, done, "closed")
	})
}

// A replica's log stays bounded by MaxLogBytes, keeps its newest lines in
// order, and the collected raw output does not keep using disk space.
func TestLogsBounded(t *testing.T) {
	t.Parallel()
	dir := newStateDir(t)
	cfg := testConfig(dir)
	cfg.MaxLogBytes = 256 << 10
	d, err := process.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	const n = 30000 // 101 bytes each: 3 MB
	r := startApp(t, d, appSpec("spam", map[string]string{"SPAM_LINES": strconv.Itoa(n)}))
	waitLogged(t, d, r.ID, "stderr works")

	lines := logLines(t, d, r.ID, driver.LogOptions{})
	var nums []int
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "spam" {
			i, _ := strconv.Atoi(f[1])
			nums = append(nums, i)
		}
	}
	if len(nums) == 0 || nums[len(nums)-1] != n-1 || nums[0] == 0 {
		t.Fatalf("kept spam lines %d..%d of 0..%d, want the newest only", nums[0], nums[len(nums)-1], n-1)
	}
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			t.Fatalf("spam line %d follows %d", nums[i], nums[i-1])
		}
	}

	var logBytes int64
	for _, name := range []string{"log", "log.1"} {
		fi, err := os.Stat(filepath.Join(dir, r.ID, name))
		if err != nil {
			t.Fatal(err)
		}
		logBytes += fi.Size()
	}
	if logBytes > cfg.MaxLogBytes+cfg.MaxLogBytes/4 {
		t.Errorf("log uses %d bytes, bound %d", logBytes, cfg.MaxLogBytes)
	}
	fi, err := os.Stat(filepath.Join(dir, r.ID, "output"))
	if err != nil {
		t.Fatal(err)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; fi.Size() < n*101 || used > 3<<19 {
		t.Errorf("raw output: size %d, %d bytes on disk; want the collected part released", fi.Size(), used)
	}
}
