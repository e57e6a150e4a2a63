package shell_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/shell"
)

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestRun(t *testing.T) {
	ws := t.TempDir()
	tests := []struct {
		name     string
		spec     executor.Spec
		code     int
		out      string
		infraErr bool
	}{
		{"argv", executor.Spec{Command: []string{"echo", "a b", "$HOME"}}, 0, "a b $HOME\n", false},
		{"script", executor.Spec{Script: "echo one; false; echo never"}, 1, "one\n", false},
		{"exit code", executor.Spec{Command: []string{"sh", "-c", "exit 7"}}, 7, "", false},
		{"env and dir", executor.Spec{Script: "echo $FOO; pwd", Env: []string{"FOO=bar"}, Dir: "sub"}, 0, "bar\n" + filepath.Join(ws, "sub") + "\n", false},
		{"missing binary", executor.Spec{Command: []string{"/no/such/binary"}}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tt.spec.Workspace = ws
			tt.spec.Stdout = &out
			res, err := (&shell.Executor{}).Run(context.Background(), tt.spec)
			if tt.infraErr {
				if !errors.Is(err, executor.ErrInfra) {
					t.Fatalf("err %v, want infra error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tt.code || out.String() != tt.out {
				t.Fatalf("code %d out %q, want %d %q", res.ExitCode, out.String(), tt.code, tt.out)
			}
		})
	}
}

// TestTimeoutKillsGroup: a script that starts background children and then
// hangs is stopped at its deadline, and every process of its group is gone.
func TestTimeoutKillsGroup(t *testing.T) {
	ws := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var pgid string
	start := time.Now()
	_, err := (&shell.Executor{Grace: 200 * time.Millisecond}).Run(ctx, executor.Spec{
		Script:    "trap '' TERM; sleep 300 & echo $! > bg.pid; (sleep 300; echo late) & echo $! > bg2.pid; sleep 300",
		Workspace: ws,
		Started:   func(id string) { pgid = id },
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	pg, _ := strconv.Atoi(pgid)
	pids := []int{pg}
	for _, f := range []string{"bg.pid", "bg2.pid"} {
		b, err := os.ReadFile(filepath.Join(ws, f))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		pids = append(pids, p)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range pids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("process %d of the group still runs", p)
		}
	}
	if err := syscall.Kill(-pg, 0); err == nil {
		// only zombies may remain, and they hold no resources
		for _, p := range pids {
			if alive(p) {
				t.Errorf("group %d not gone", pg)
			}
		}
	}
}

// TestBackgroundChildDoesNotHoldRun: a finished command's background child
// holding stdout neither blocks Run nor survives it.
func TestBackgroundChildDoesNotHoldRun(t *testing.T) {
	ws := t.TempDir()
	start := time.Now()
	res, err := (&shell.Executor{}).Run(context.Background(), executor.Spec{
		Script: "sleep 300 & echo $! > bg.pid; echo done", Workspace: ws, Stdout: &bytes.Buffer{},
	})
	if err != nil || res.ExitCode != 0 {
		t.Fatal(res, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Run waited %v for a background child", d)
	}
	b, _ := os.ReadFile(filepath.Join(ws, "bg.pid"))
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	time.Sleep(100 * time.Millisecond)
	if alive(p) {
		t.Fatalf("background child %d survived", p)
	}
}

// TestKillGroupChecksMarker: a crashed runner's group is killed only when
// its processes carry the run's marker.
func TestKillGroupChecksMarker(t *testing.T) {
	start := func(env string) *exec.Cmd {
		cmd := exec.Command("sleep", "300")
		cmd.Env = append(os.Environ(), env)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	other := start("OPSUITE_RUN_ID=other-1")
	mine := start("OPSUITE_RUN_ID=mine-1")
	for _, c := range []*exec.Cmd{other, mine} {
		if err := shell.KillGroup(strconv.Itoa(c.Process.Pid), "OPSUITE_RUN_ID=mine-1"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- mine.Wait() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("marked group not killed")
	}
	if !alive(other.Process.Pid) {
		t.Fatal("unmarked group killed")
	}
}
