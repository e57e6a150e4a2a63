//go:build linux

package process_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
)

func TestStartPassesArgvEnvDirAndPorts(t *testing.T) {
	t.Parallel()
	d := newDriver(t, newStateDir(t))
	wd := t.TempDir()
	spec := appSpec("start-1", map[string]string{"GREETING": "hello world", "PORT": "1"})
	spec.Args = []string{"$(touch pwned); echo", "two words"}
	spec.WorkingDir = wd
	spec.Ports = []driver.Port{
		{Name: "http", ContainerPort: 8080},
		{Name: "admin-api", ContainerPort: 9090},
		{Name: "udp-dns", ContainerPort: 53, Protocol: "udp"},
	}
	spec.Labels = map[string]string{"team": "checkout"}

	r := startApp(t, d, spec)
	if r.State != driver.StateRunning {
		t.Errorf("state = %s, want running", r.State)
	}
	if len(r.Bindings) != 3 {
		t.Fatalf("bindings = %+v, want 3", r.Bindings)
	}
	httpB, admin, udp := r.Bindings[0], r.Bindings[1], r.Bindings[2]
	for i, b := range r.Bindings {
		if b.HostIP != "127.0.0.1" || b.HostPort == 0 || b.Name != spec.Ports[i].Name || b.ContainerPort != spec.Ports[i].ContainerPort {
			t.Errorf("binding %d = %+v", i, b)
		}
	}
	if httpB.HostPort == admin.HostPort {
		t.Errorf("both ports got %d", httpB.HostPort)
	}
	waitHTTP(t, admin)
	udpEcho(t, udp)

	for name, want := range map[string]string{
		"GREETING":           "hello world",
		"PORT":               strconv.Itoa(httpB.HostPort),
		"PORT_HTTP":          strconv.Itoa(httpB.HostPort),
		"PORT_ADMIN_API":     strconv.Itoa(admin.HostPort),
		"PORT_UDP_DNS":       strconv.Itoa(udp.HostPort),
		"PATH":               os.Getenv("PATH"),
		"OPSUITE_REPLICA_ID": "start-1",
	} {
		if got := mustGet(t, httpB, "/env?name="+name); got != want {
			t.Errorf("$%s = %q, want %q", name, got, want)
		}
	}
	if got := mustGet(t, httpB, "/cwd"); got != wd {
		t.Errorf("working dir = %q, want %q", got, wd)
	}
	pid := pidOf(t, r)
	if got := mustGet(t, httpB, "/pid"); got != r.RuntimeID {
		t.Errorf("pid = %s, runtime id %s", got, r.RuntimeID)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	wantArgv := append([]string{testApp}, spec.Args...)
	if got := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00"); !slices.Equal(got, wantArgv) {
		t.Errorf("argv = %q, want %q", got, wantArgv)
	}
	if _, err := os.Stat(filepath.Join(wd, "pwned")); err == nil {
		t.Error("an argument ran through a shell")
	}
	pgid, err := syscall.Getpgid(pid)
	if err != nil || pgid != pid {
		t.Errorf("pgid = %d (%v), want its own group %d", pgid, err, pid)
	}

	for k, v := range map[string]string{
		driver.LabelManagedBy:   driver.ManagedByValue,
		driver.LabelApp:         "shop",
		driver.LabelEnvironment: "test",
		driver.LabelRevision:    "1",
		driver.LabelReplica:     "start-1",
		"team":                  "checkout",
	} {
		if r.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, r.Labels[k], v)
		}
	}
	if r.App != "shop" || r.Environment != "test" || r.Revision != 1 || r.StartedAt.IsZero() {
		t.Errorf("replica = %+v", r)
	}

	got, err := d.Inspect(context.Background(), "start-1")
	if err != nil || got.RuntimeID != r.RuntimeID || got.State != driver.StateRunning {
		t.Errorf("inspect = %+v, %v", got, err)
	}
	if _, err := d.Inspect(context.Background(), "nope"); !isNotFound(err) {
		t.Errorf("inspect unknown: %v, want ErrNotFound", err)
	}
	for _, tc := range []struct {
		match map[string]string
		want  int
	}{
		{nil, 1},
		{map[string]string{driver.LabelApp: "shop", "team": "checkout"}, 1},
		{map[string]string{driver.LabelApp: "other"}, 0},
		{map[string]string{"team": "payments"}, 0},
	} {
		rs, err := d.List(context.Background(), tc.match)
		if err != nil || len(rs) != tc.want {
			t.Errorf("List(%v) = %d replicas, %v; want %d", tc.match, len(rs), err, tc.want)
		}
	}

	if _, err := d.Start(context.Background(), spec); !errors.Is(err, driver.ErrInvalidSpec) {
		t.Errorf("second start with the same id: %v, want ErrInvalidSpec", err)
	}
}

func udpEcho(tb testing.TB, b driver.Binding) {
	tb.Helper()
	conn, err := net.Dial("udp", net.JoinHostPort(b.HostIP, strconv.Itoa(b.HostPort)))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 16)
	eventually(tb, 5*time.Second, "udp echo", func() bool {
		if _, err := conn.Write([]byte("ping")); err != nil {
			return false
		}
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := conn.Read(buf)
		return err == nil && string(buf[:n]) == "ping"
	})
}

func TestStartResolvesRelativeProgram(t *testing.T) {
	t.Parallel()
	d := newDriver(t, newStateDir(t))
	spec := appSpec("relative-1", nil)
	spec.WorkingDir = filepath.Dir(testApp)
	spec.Command = []string{"./" + filepath.Base(testApp)}
	startApp(t, d, spec)
}

func TestStopGraceful(t *testing.T) {
	t.Parallel()
	dir := newStateDir(t)
	d := newDriver(t, dir)
	r := startApp(t, d, appSpec("graceful-1", nil))
	pid := pidOf(t, r)

	begin := time.Now()
	if err := d.Stop(context.Background(), r.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("graceful stop took %v", took)
	}
	if running(pid) {
		t.Errorf("pid %d still runs", pid)
	}
	if _, err := d.Inspect(context.Background(), r.ID); !isNotFound(err) {
		t.Errorf("inspect after stop: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(dir, r.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state left behind: %v", err)
	}
	if err := d.Stop(context.Background(), r.ID, time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := d.Stop(context.Background(), "never-existed", time.Second); err != nil {
		t.Errorf("stop of an unknown replica: %v", err)
	}
}

// A program that ignores SIGTERM is killed with its whole group once the
// grace period (the caller's, else the spec's) has passed.
func TestStopKillsGroupAfterGrace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		grace, specGrace time.Duration
		want             time.Duration
	}{
		{"caller grace", 300 * time.Millisecond, time.Minute, 300 * time.Millisecond},
		{"spec grace", 0, 200 * time.Millisecond, 200 * time.Millisecond},
		{"negative kills at once", -1, time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDriver(t, newStateDir(t))
			spec := appSpec("stubborn", map[string]string{"IGNORE_TERM": "1", "SPAWN_CHILD": "1"})
			spec.StopGracePeriod = tc.specGrace
			r := startApp(t, d, spec)
			pid := pidOf(t, r)
			child, err := strconv.Atoi(mustGet(t, r.Bindings[0], "/child"))
			if err != nil || !running(child) {
				t.Fatalf("child %d not running: %v", child, err)
			}

			begin := time.Now()
			if err := d.Stop(context.Background(), r.ID, tc.grace); err != nil {
				t.Fatal(err)
			}
			took := time.Since(begin)
			if took < tc.want || took > tc.want+2*time.Second {
				t.Errorf("stop took %v, want about %v", took, tc.want)
			}
			if running(pid) {
				t.Errorf("leader %d still runs", pid)
			}
			eventually(t, 2*time.Second, "the child is gone", func() bool { return !running(child) })
		})
	}
}

func TestStopCutShortByContext(t *testing.T) {
	t.Parallel()
	d := newDriver(t, newStateDir(t))
	r := startApp(t, d, appSpec("ctx-stop", map[string]string{"IGNORE_TERM": "1"}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := d.Stop(ctx, r.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("stop took %v despite the context", took)
	}
	if running(pidOf(t, r)) {
		t.Error("still running")
	}
}

func TestRestartOnCrash(t *testing.T) {
	t.Parallel()
	d := newDriver(t, newStateDir(t))
	spec := appSpec("crashy", map[string]string{"CRASH_AFTER": "300ms"})
	spec.RestartOnCrash = true
	first := startApp(t, d, spec)

	r := waitReplica(t, d, spec.ID, "restarted twice", func(r driver.Replica) bool { return r.Restarts >= 2 })
	if r.ExitCode != 3 {
		t.Errorf("exit code = %d, want 3", r.ExitCode)
	}
	r = waitReplica(t, d, spec.ID, "running again", func(r driver.Replica) bool { return r.State == driver.StateRunning })
	if r.RuntimeID == first.RuntimeID || r.Bindings[0] != first.Bindings[0] {
		t.Errorf("after restart: pid %s (was %s), binding %+v (was %+v)", r.RuntimeID, first.RuntimeID, r.Bindings[0], first.Bindings[0])
	}
	waitHTTP(t, r.Bindings[0]) // same port after the restart

	r = waitReplica(t, d, spec.ID, "backing off", func(r driver.Replica) bool { return r.State == driver.StateStarting })
	if !strings.Contains(r.Reason, "exited with code 3; restarting in") {
		t.Errorf("reason while backing off = %q", r.Reason)
	}
}

func TestExitWithoutRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		env    map[string]string
		kill   bool
		code   int
		reason string
	}{
		{"exits", map[string]string{"CRASH_AFTER": "100ms", "EXIT_CODE": "7"}, false, 7, "exited with code 7"},
		{"killed", nil, true, 128 + 9, "killed by signal 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDriver(t, newStateDir(t))
			r := startApp(t, d, appSpec("exits", tc.env))
			if tc.kill {
				if err := syscall.Kill(pidOf(t, r), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			r = waitReplica(t, d, r.ID, "exited", func(r driver.Replica) bool { return r.State == driver.StateExited })
			if r.ExitCode != tc.code || !strings.Contains(r.Reason, tc.reason) || r.Restarts != 0 {
				t.Errorf("exited replica = code %d, reason %q, restarts %d; want %d, %q, 0", r.ExitCode, r.Reason, r.Restarts, tc.code, tc.reason)
			}
			time.Sleep(100 * time.Millisecond)
			if r, _ := d.Inspect(context.Background(), r.ID); r.State != driver.StateExited {
				t.Errorf("state = %s later, want it to stay exited", r.State)
			}
			if err := d.Stop(context.Background(), r.ID, time.Second); err != nil {
				t.Errorf("stop of an exited replica: %v", err)
			}
		})
	}
}

func TestStartInvalidLeavesNothing(t *testing.T) {
	t.Parallel()
	notExecutable := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		modify func(*driver.Spec)
	}{
		{"missing program", func(s *driver.Spec) { s.Command = []string{"/nonexistent/program"} }},
		{"program not in PATH", func(s *driver.Spec) { s.Command = []string{"opsuite-no-such-program"} }},
		{"not executable", func(s *driver.Spec) { s.Command = []string{notExecutable} }},
		{"missing working dir", func(s *driver.Spec) { s.WorkingDir = "/nonexistent/dir" }},
		{"no command", func(s *driver.Spec) { s.Command = nil }},
		{"bad id", func(s *driver.Spec) { s.ID = "../escape" }},
		{"volumes", func(s *driver.Spec) { s.Volumes = []driver.Volume{{Source: "/tmp", Target: "/data"}} }},
		{"bad protocol", func(s *driver.Spec) { s.Ports[0].Protocol = "sctp" }},
		{"clashing port names", func(s *driver.Spec) {
			s.Ports = []driver.Port{{Name: "a-b"}, {Name: "a_b"}}
		}},
		{"bad env", func(s *driver.Spec) { s.Env = map[string]string{"A=B": "c"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := newStateDir(t)
			d := newDriver(t, dir)
			spec := appSpec("bad", nil)
			tc.modify(&spec)
			_, err := d.Start(context.Background(), spec)
			if !errors.Is(err, driver.ErrInvalidSpec) {
				t.Fatalf("start: %v, want ErrInvalidSpec", err)
			}
			if rs, err := d.List(context.Background(), nil); err != nil || len(rs) != 0 {
				t.Errorf("list after failed start = %+v, %v", rs, err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != "lock" {
					t.Errorf("left behind in the state dir: %s", e.Name())
				}
			}
			// The id is free again.
			if spec.ID == "bad" {
				startApp(t, d, appSpec("bad", nil))
			}
		})
	}
}

func TestConcurrentStartsAndStops(t *testing.T) {
	t.Parallel()
	d := newDriver(t, newStateDir(t))
	const n = 10
	replicas := make([]driver.Replica, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			spec := appSpec(fmt.Sprintf("many-%d", i), nil)
			r, err := d.Start(context.Background(), spec)
			replicas[i] = r
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ports := map[string]bool{}
	for _, r := range replicas {
		for _, b := range r.Bindings {
			key := b.Name + strconv.Itoa(b.HostPort)
			if ports[key] {
				t.Errorf("port %s assigned twice", key)
			}
			ports[key] = true
		}
		waitHTTP(t, r.Bindings[0])
	}
	rs, err := d.List(context.Background(), map[string]string{driver.LabelApp: "shop"})
	if err != nil || len(rs) != n {
		t.Fatalf("list = %d replicas, %v; want %d", len(rs), err, n)
	}
	for _, r := range replicas {
		wg.Go(func() {
			if err := d.Stop(context.Background(), r.ID, 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if rs, err := d.List(context.Background(), nil); err != nil || len(rs) != 0 {
		t.Errorf("list after stopping all = %d replicas, %v", len(rs), err)
	}
}

func TestClosedDriver(t *testing.T) {
	t.Parallel()
	dir := newStateDir(t)
	d, err := process.New(testConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.New(testConfig(dir), nil); !errors.Is(err, process.ErrStateDirInUse) {
		t.Errorf("second driver on the same dir: %v, want ErrStateDirInUse", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	ctx := context.Background()
	if _, err := d.Start(ctx, appSpec("late", nil)); !errors.Is(err, process.ErrClosed) || !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("start after close: %v", err)
	}
	if _, err := d.List(ctx, nil); !errors.Is(err, process.ErrClosed) {
		t.Errorf("list after close: %v", err)
	}
	if err := d.Stop(ctx, "x", 0); !errors.Is(err, process.ErrClosed) {
		t.Errorf("stop after close: %v", err)
	}
	if _, err := process.New(process.Config{}, nil); err == nil {
		t.Error("New without a StateDir succeeded")
	}
}
