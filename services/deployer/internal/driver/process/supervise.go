//go:build linux

package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// launch starts the replica's process. Callers hold r.mu. The record says
// phaseLaunching while the process starts, so that after a deployer crash
// in between the process is found by its marker instead of orphaned.
func (d *Driver) launch(r *replica) error {
	rec := &r.rec
	rec.Phase, rec.PID, rec.StartTime = phaseLaunching, 0, 0
	if err := r.persist(); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(r.dir, outputFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open output: %w", err)
	}
	cmd := &exec.Cmd{
		Path:   rec.Path,
		Args:   slices.Concat(rec.Spec.Command, rec.Spec.Args),
		Env:    environ(rec),
		Dir:    rec.Dir,
		Stdout: out,
		Stderr: out,
		// Its own session, hence its own process group: signals for the
		// deployer's terminal or group never reach it, and Stop signals the
		// whole group.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	_ = out.Close()
	if err != nil {
		if isSpecError(err) {
			// The program or the working directory went missing or bad
			// since resolve checked them.
			return fmt.Errorf("%w: %w", driver.ErrInvalidSpec, err)
		}
		return fmt.Errorf("start %s: %w", rec.Path, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release() // reaped with wait4 by the supervisor
	st, err := readProcStat(pid)
	if err != nil {
		// Not even a zombie: cannot happen for an unreaped child.
		return fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	rec.Phase, rec.PID, rec.StartTime, rec.StartedAt = phaseRunning, pid, st.startTime, time.Now().UTC()
	rec.Reason = ""
	if err := r.persist(); err != nil {
		_ = signalGroup(pid, st.startTime, syscall.SIGKILL)
		waitDead(pid, st.startTime, killWait)
		return err
	}
	return nil
}

// startSupervisor runs the goroutine that watches r until its process
// exits for good, Stop or Close. It does nothing once the driver closed.
func (d *Driver) startSupervisor(r *replica) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done != nil {
		return
	}
	r.quit, r.done = make(chan struct{}), make(chan struct{})
	d.wg.Add(1)
	go d.supervise(r, r.quit, r.done)
}

// stopSupervisor ends r's supervising goroutine and waits for it.
func (d *Driver) stopSupervisor(r *replica) {
	r.mu.Lock()
	quit, done := r.quit, r.done
	if quit != nil {
		select {
		case <-quit:
		default:
			close(quit)
		}
	}
	r.mu.Unlock()
	if done != nil {
		<-done
	}
	r.mu.Lock()
	r.quit, r.done = nil, nil
	r.mu.Unlock()
}

func (d *Driver) supervise(r *replica, quit, done chan struct{}) {
	defer d.wg.Done()
	defer close(done)
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-quit:
			d.collect(r, false)
			return
		case <-t.C:
		}
		d.collect(r, false)
		if !d.tick(r) {
			return
		}
	}
}

// collect moves new output into r's log; errors are logged, not fatal.
func (d *Driver) collect(r *replica, flush bool) {
	r.logMu.Lock()
	wrote, err := r.col.collect(r.dir, time.Now(), d.cfg.MaxLogBytes, flush)
	r.logMu.Unlock()
	if err != nil {
		d.log.Warn("collect replica output", "replica", r.id, "err", err)
	}
	if wrote {
		r.mu.Lock()
		r.broadcast()
		r.mu.Unlock()
	}
}

// tick checks r's process once: notices an exit, restarts after the
// backoff, escalates an interrupted stop. It reports whether r still needs
// supervising.
func (d *Driver) tick(r *replica) bool {
	r.mu.Lock()
	rec, restartAt, stopBy := r.rec, r.restartAt, r.stopBy
	r.mu.Unlock()

	switch rec.Phase {
	case phaseRunning:
		live := probe(rec.PID, rec.StartTime)
		if live == alive {
			if rec.Stopping && !stopBy.IsZero() && time.Now().After(stopBy) {
				_ = signalGroup(rec.PID, rec.StartTime, syscall.SIGKILL)
			}
			return true
		}
		d.exited(r, live)
		return d.tick(r)
	case phaseBackoff:
		if time.Now().Before(restartAt) {
			return true
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.rec.Stopping || r.removed {
			return false
		}
		restarts := r.rec.Restarts
		r.rec.Restarts++
		if err := d.launch(r); err != nil {
			r.rec.Restarts = restarts
			r.backoff = min(2*r.backoff, backoffMax)
			d.scheduleRestart(r, fmt.Sprintf("restart failed: %v", err))
			d.log.Warn("restart replica", "replica", r.id, "err", err)
			if perr := r.persist(); perr != nil {
				d.log.Warn("persist replica", "replica", r.id, "err", perr)
			}
			return true
		}
		d.log.Info("restarted replica", "replica", r.id, "pid", r.rec.PID, "restarts", r.rec.Restarts)
		return true
	case phaseExited:
		if rec.Stopping {
			// An interrupted Stop, adopted: its process is gone; finish it.
			if err := d.remove(r); err != nil {
				d.log.Warn("remove stopped replica", "replica", r.id, "err", err)
				return true
			}
		}
		return false
	}
	return false
}

// exited records that r's process is gone: the rest of its process group
// is killed, the exit status collected when it is our child, the last
// output flushed, and the replica either scheduled for a restart or marked
// exited.
func (d *Driver) exited(r *replica, live liveness) {
	r.mu.Lock()
	pid, start, startedAt := r.rec.PID, r.rec.StartTime, r.rec.StartedAt
	r.mu.Unlock()

	// Kill what is left of the group first: while the leader is not
	// reaped it keeps its pid, so the group id cannot have been reused.
	_ = signalGroup(pid, start, syscall.SIGKILL)
	code, reason := -1, "exited while not a child of this deployer; exit status unknown"
	if pid == 0 {
		reason = "no process found after a deployer restart"
	}
	if live == zombie {
		if ws, ok := reapExited(pid); ok {
			code, reason = describeExit(ws)
		}
	}
	d.collect(r, true)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.ExitCode = code
	ran := time.Since(startedAt)
	switch {
	case r.rec.Stopping:
		r.rec.Phase, r.rec.Reason = phaseExited, "stopped by the deployer"
	case r.rec.Spec.RestartOnCrash:
		if ran >= backoffReset || r.backoff == 0 {
			r.backoff = backoffMin
		} else {
			r.backoff = min(2*r.backoff, backoffMax)
		}
		d.scheduleRestart(r, reason)
	default:
		r.rec.Phase, r.rec.Reason = phaseExited, reason
	}
	if err := r.persist(); err != nil {
		d.log.Warn("persist replica", "replica", r.id, "err", err)
	}
	d.log.Info("replica exited", "replica", r.id, "pid", pid, "code", code, "reason", reason, "phase", r.rec.Phase)
}

// scheduleRestart puts r in backoff; callers hold r.mu and persist.
func (d *Driver) scheduleRestart(r *replica, why string) {
	if r.backoff == 0 {
		r.backoff = backoffMin
	}
	r.restartAt = time.Now().Add(r.backoff)
	r.rec.Phase = phaseBackoff
	r.rec.Reason = fmt.Sprintf("%s; restarting in %v", why, r.backoff)
}

// terminate stops the process group led by pid: SIGTERM, up to grace (cut
// short when ctx ends) for the leader to exit, then SIGKILL for whatever is
// left of the group. A negative grace kills at once.
func terminate(ctx context.Context, pid int, start uint64, grace time.Duration) error {
	if grace >= 0 && probe(pid, start) == alive {
		if err := signalGroup(pid, start, syscall.SIGTERM); err != nil {
			return err
		}
		deadline := time.NewTimer(grace)
		defer deadline.Stop()
		poll := time.NewTicker(10 * time.Millisecond)
		defer poll.Stop()
	wait:
		for probe(pid, start) == alive {
			select {
			case <-deadline.C:
				break wait
			case <-ctx.Done():
				break wait
			case <-poll.C:
			}
		}
	}
	if err := signalGroup(pid, start, syscall.SIGKILL); err != nil {
		return err
	}
	if !waitDead(pid, start, killWait) {
		return fmt.Errorf("process %d still alive %v after SIGKILL", pid, killWait)
	}
	return nil
}

// waitDead waits up to d for the process to exit and reaps it when it is
// our child. It reports whether the process is gone.
func waitDead(pid int, start uint64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		switch probe(pid, start) {
		case gone:
			return true
		case zombie:
			if _, res := reap(pid); res != notYet {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reapExited reaps a process /proc shows as a zombie, waiting for its
// last threads to exit; ok is false when it is not our child.
func reapExited(pid int) (syscall.WaitStatus, bool) {
	deadline := time.Now().Add(killWait)
	for {
		ws, res := reap(pid)
		if res != notYet || time.Now().After(deadline) {
			return ws, res == reaped
		}
		time.Sleep(time.Millisecond)
	}
}
