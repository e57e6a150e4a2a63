// Package shell runs command steps as local processes, each attempt in a
// process group of its own that is killed whole when the attempt is
// cancelled or times out, and after it exits, so nothing it started
// outlives it.
package shell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
)

// Executor is the shell executor.
type Executor struct {
	// Shell runs scripts; default /bin/sh.
	Shell string
	// Grace between SIGTERM and SIGKILL of the group on cancel; default 2s.
	Grace time.Duration
}

// Run starts the command or script and waits for it.
func (e *Executor) Run(ctx context.Context, spec executor.Spec) (executor.Result, error) {
	argv := spec.Command
	if spec.Script != "" {
		sh := e.Shell
		if sh == "" {
			sh = "/bin/sh"
		}
		argv = []string{sh, "-e", "-c", spec.Script}
	}
	if len(argv) == 0 {
		return executor.Result{}, fmt.Errorf("%w: nothing to run", executor.ErrInfra)
	}
	dir := spec.Workspace
	if spec.Dir != "" {
		dir = filepath.Join(spec.Workspace, spec.Dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return executor.Result{}, fmt.Errorf("%w: working directory: %v", executor.ErrInfra, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if spec.Script == "" && filepath.Base(argv[0]) == argv[0] {
		// argv[0] is looked up in the step's PATH, not the runner's.
		if p := lookPath(argv[0], spec.Env); p != "" {
			cmd.Path = p
			cmd.Err = nil
		}
	}
	cmd.Dir = dir
	cmd.Env = append(baseEnv(spec.Workspace), spec.Env...)
	// Own pipes: Wait returns when the process exits, even if something it
	// started in the background still holds them; killing the group then
	// closes them and the copiers finish.
	outR, outW, err := os.Pipe()
	if err != nil {
		return executor.Result{}, fmt.Errorf("%w: pipe: %v", executor.ErrInfra, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return executor.Result{}, fmt.Errorf("%w: pipe: %v", executor.ErrInfra, err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return executor.Result{}, fmt.Errorf("%w: start %s: %v", executor.ErrInfra, argv[0], err)
	}
	var copiers sync.WaitGroup
	copyOut := func(dst io.Writer, src *os.File) {
		defer copiers.Done()
		defer src.Close()
		if dst == nil {
			dst = io.Discard
		}
		_, _ = io.Copy(dst, src)
	}
	copiers.Add(2)
	go copyOut(spec.Stdout, outR)
	go copyOut(spec.Stderr, errR)
	pgid := cmd.Process.Pid
	if spec.Started != nil {
		spec.Started(strconv.Itoa(pgid))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	grace := e.Grace
	if grace <= 0 {
		grace = 2 * time.Second
	}
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case werr = <-done:
		case <-time.After(grace):
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if werr == nil {
			werr = <-done
		}
	}
	// Whatever the command left behind in its group goes with it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	copiers.Wait()
	if ctx.Err() != nil {
		return executor.Result{ExitCode: exitCode(werr)}, fmt.Errorf("%s: %w", argv[0], ctx.Err())
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		return executor.Result{}, fmt.Errorf("%w: wait for %s: %v", executor.ErrInfra, argv[0], werr)
	}
	return executor.Result{ExitCode: exitCode(werr)}, nil
}

// KillGroup kills a process group left by a runner that died; id is what
// Spec.Started received. Only a group one of whose processes has marker
// (e.g. "OPSUITE_RUN_ID=<run>") in its environment is killed, so a process
// group id reused by an unrelated program is left alone.
func KillGroup(id, marker string) error {
	pgid, err := strconv.Atoi(id)
	if err != nil || pgid <= 1 {
		return fmt.Errorf("bad process group %q", id)
	}
	if !groupHasMarker(pgid, marker) {
		return nil
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	return nil
}

// groupHasMarker reports whether a live process of group pgid carries
// marker in its environment.
func groupHasMarker(pgid int, marker string) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name: state ppid pgrp ...
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == marker {
				return true
			}
		}
	}
	return false
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

func baseEnv(workspace string) []string {
	env := []string{"HOME=" + workspace, "CI=true", "OPSUITE_WORKSPACE=" + workspace}
	for _, k := range []string{"PATH", "LANG", "TZ", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func lookPath(name string, env []string) string {
	path := ""
	for _, kv := range env {
		if len(kv) > 5 && kv[:5] == "PATH=" {
			path = kv[5:]
		}
	}
	if path == "" {
		return ""
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}
