//go:build linux

package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// markerEnv is set in every replica's environment to its id, so a process
// whose start was interrupted by a deployer crash can still be found.
const markerEnv = "OPSUITE_REPLICA_ID"

// procStat is what the driver reads from /proc/<pid>/stat.
type procStat struct {
	state     byte   // field 3: R, S, D, Z, ...
	pgid      int    // field 5
	startTime uint64 // field 22: clock ticks after boot
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself; the fields after the last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	pgid, err := strconv.Atoi(f[2])
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat pgrp: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return procStat{state: f[0][0], pgid: pgid, startTime: start}, nil
}

func readBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// liveness is what probe finds of a recorded process.
type liveness int

const (
	gone   liveness = iota // no such process, or its pid now names another one
	alive                  // running
	zombie                 // exited, not yet reaped by its parent
)

// probe reports whether the process started as pid at start (clock ticks
// after boot) still runs. Comparing the start time guards against pid reuse.
func probe(pid int, start uint64) liveness {
	if pid <= 0 {
		return gone
	}
	st, err := readProcStat(pid)
	if err != nil || st.startTime != start {
		return gone
	}
	if st.state == 'Z' || st.state == 'X' {
		return zombie
	}
	return alive
}

// signalGroup sends sig to the process group led by the process started as
// pid at start (replicas run in their own session, so pgid == pid). While
// the leader or any member of the group exists the kernel does not reuse
// the number, so the group is ours unless another process now has that pid.
func signalGroup(pid int, start uint64, sig syscall.Signal) error {
	if pid <= 0 {
		return nil
	}
	if st, err := readProcStat(pid); err == nil && st.startTime != start {
		return nil
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("send %v to process group %d: %w", sig, pid, err)
	}
	return nil
}

// reapResult is what reap found.
type reapResult int

const (
	reaped   reapResult = iota // the exit status is in ws
	notYet                     // a child that has not (fully) exited yet
	notChild                   // not a child of this process: its parent reaps it
)

// reap collects the exit status of pid when it is an exited child of this
// process. A process whose /proc state is already Z may still be notYet for
// a moment, while its other threads finish exiting.
func reap(pid int) (ws syscall.WaitStatus, res reapResult) {
	for {
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return ws, notChild
		case got == pid:
			return ws, reaped
		default:
			return ws, notYet
		}
	}
}

// describeExit turns a wait status into an exit code (128+signal when
// killed, as shells report it) and a sentence.
func describeExit(ws syscall.WaitStatus) (int, string) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return ws.ExitStatus(), fmt.Sprintf("exited with code %d", ws.ExitStatus())
}

// findMarked looks for the leader of the process group started for replica
// id, by the marker in its environment; ok is false when none runs.
func findMarked(id string) (pid int, start uint64, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	want := []byte("\x00" + markerEnv + "=" + id + "\x00")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(p)
		if err != nil || st.pgid != p || st.state == 'Z' || st.state == 'X' {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), want) {
			continue
		}
		if !ok || st.startTime < start {
			pid, start, ok = p, st.startTime, true
		}
	}
	return pid, start, ok
}

// punchHole releases the disk space of the first n bytes of f, which keeps
// its size; readers see zeros there.
func punchHole(f *os.File, n int64) error {
	const (
		fallocKeepSize  = 0x01
		fallocPunchHole = 0x02
	)
	return syscall.Fallocate(int(f.Fd()), fallocKeepSize|fallocPunchHole, 0, n)
}

// lockDir takes an exclusive lock on dir/lock, held until the returned file
// is closed (or the process dies). Children do not inherit it: Go opens
// files close-on-exec. A child being forked holds a copy for an instant,
// so a lock just released in this process is retried for lockWait.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("lock %s: %w", dir, ErrStateDirInUse)
			}
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
