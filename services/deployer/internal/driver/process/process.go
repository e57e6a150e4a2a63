//go:build linux

// Package process is the deployer's process driver: every replica is a
// local process, started from an argv (never through a shell) in its own
// session and process group, with free loopback ports assigned and passed
// in $PORT and $PORT_<NAME>.
//
// The driver keeps each replica's state in its own directory under
// Config.StateDir: a record (replaced atomically on every change), the
// process's raw output and a timestamped, size-bounded log. Processes
// outlive the deployer: they do not depend on it for their output, are not
// in its process group, and a new driver on the same StateDir adopts them —
// it tells a live process from a reused pid by the start time in
// /proc/<pid>/stat, resumes supervision (restarts on crash) by polling, and
// collects the output written meanwhile. Every replica's environment holds
// OPSUITE_REPLICA_ID, by which a process whose start was cut short by a
// deployer crash is found again. Linux only: it reads /proc.
//
// How the driver fills in driver.Replica: StateStarting also covers the
// backoff before a restart after a crash (Reason says when); ExitCode is
// 128+signal for a killed process and -1 when the status is unknown (the
// process exited while it was no longer a child of the deployer, e.g. after
// a deployer restart); RuntimeID is the pid while running.
package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

const (
	defaultPollInterval = 100 * time.Millisecond
	defaultMaxLogBytes  = 10 << 20
	// defaultStopGrace applies when neither Stop nor the spec give one.
	defaultStopGrace = 10 * time.Second
	// Restart backoff after a crash: doubling from backoffMin to backoffMax,
	// back to backoffMin once a process ran for backoffReset.
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 10 * time.Second
	backoffReset = 10 * time.Second
	// killWait bounds how long Stop waits for a process to die after SIGKILL.
	killWait = 5 * time.Second
	// lockWait is how long New retries a StateDir lock held elsewhere.
	lockWait = time.Second
)

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = defaultPollInterval
	}
	if c.MaxLogBytes <= 0 {
		c.MaxLogBytes = defaultMaxLogBytes
	}
	return c
}

// Driver runs replicas as local processes. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	lock   *os.File // flock on the StateDir
	bootID string

	mu       sync.Mutex
	replicas map[string]*replica
	ports    map[string]string // reserved "tcp/1234" -> replica id
	closed   bool
	closing  chan struct{} // closed by Close, ends log followers
	wg       sync.WaitGroup
}

var _ driver.Driver = (*Driver)(nil)

// New returns a process driver keeping its state in cfg.StateDir, and adopts
// the replicas a previous driver left there: each is reported with its
// current state, supervised again, and restarted when it crashed meanwhile
// and asked for restarts. A nil log discards logging.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("process driver: StateDir is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("process driver state dir: %w", err)
	}
	cfg.StateDir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("process driver state dir: %w", err)
	}
	bootID, err := readBootID()
	if err != nil {
		return nil, fmt.Errorf("process driver: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("process driver: %w", err)
	}
	d := &Driver{
		cfg:      cfg,
		log:      log.With("driver", "process"),
		lock:     lock,
		bootID:   bootID,
		replicas: map[string]*replica{},
		ports:    map[string]string{},
		closing:  make(chan struct{}),
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("process driver: read state dir: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			d.adopt(filepath.Join(dir, e.Name()))
		}
	}
	return d, nil
}

// adopt takes over the replica whose state is in dir.
func (d *Driver) adopt(dir string) {
	id := filepath.Base(dir)
	rec, err := loadRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// A Start that died before writing its first record had not started
		// a process yet.
		if err := os.RemoveAll(dir); err != nil {
			d.log.Warn("remove incomplete replica state", "dir", dir, "err", err)
		}
		return
	}
	if err == nil && rec.Spec.ID != id {
		err = fmt.Errorf("record of %q in directory %s", rec.Spec.ID, dir)
	}
	if err != nil {
		d.log.Warn("skip unreadable replica state", "dir", dir, "err", err)
		return
	}

	r := newReplica(id, dir, rec)
	d.mu.Lock()
	d.replicas[id] = r
	for i, b := range rec.Bindings {
		if i < len(rec.Spec.Ports) {
			d.ports[portKey(rec.Spec.Ports[i].Protocol, b.HostPort)] = id
		}
	}
	d.mu.Unlock()
	d.collect(r, false)

	r.mu.Lock()
	switch r.rec.Phase {
	case phaseLaunching:
		// The deployer died while starting the process: find it, if it
		// started, by its marker.
		r.rec.Phase, r.rec.PID, r.rec.StartTime = phaseRunning, 0, 0
		if pid, start, ok := findMarked(id); ok {
			r.rec.PID, r.rec.StartTime, r.rec.StartedAt = pid, start, time.Now().UTC()
		}
	case phaseRunning:
		if r.rec.BootID != d.bootID {
			r.rec.PID, r.rec.StartTime = 0, 0 // the host rebooted since
		}
	}
	r.rec.BootID = d.bootID
	if r.rec.Stopping {
		// A Stop was cut short: signal again, kill after the grace period;
		// the supervisor removes the replica once its process is gone.
		switch r.rec.Phase {
		case phaseRunning:
			_ = signalGroup(r.rec.PID, r.rec.StartTime, syscall.SIGTERM)
			r.stopBy = time.Now().Add(stopGrace(0, r.rec.Spec))
		case phaseBackoff:
			r.rec.Phase = phaseExited
		}
	}
	if err := r.persist(); err != nil {
		d.log.Warn("persist adopted replica", "replica", id, "err", err)
	}
	r.mu.Unlock()

	// Check once now, so that List right after New reports the truth.
	if d.tick(r) {
		d.startSupervisor(r)
	}
	d.log.Info("adopted replica", "replica", id, "phase", r.phase())
}

func (r *replica) phase() phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.Phase
}

// Name is "process".
func (d *Driver) Name() string { return "process" }

// Start starts a replica and returns once its process runs. Command[0] is
// looked up in the deployer's PATH, or, when it holds a slash, taken
// relative to WorkingDir, which defaults to the deployer's working
// directory; both are resolved once, so restarts run the same program in
// the same place. A program that cannot be found or run, a bad working
// directory, volumes (unsupported), an id that is not a DNS-1123 label or
// is in use, or bad port names or protocols are errors wrapping
// driver.ErrInvalidSpec. On any error nothing is left behind.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) (driver.Replica, error) {
	if err := ctx.Err(); err != nil {
		return driver.Replica{}, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	path, wd, err := resolve(spec)
	if err != nil {
		return driver.Replica{}, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	dir := filepath.Join(d.cfg.StateDir, spec.ID)
	r := newReplica(spec.ID, dir, record{
		Version: recordVersion,
		Spec:    cloneSpec(spec),
		Path:    path,
		Dir:     wd,
		BootID:  d.bootID,
		Phase:   phaseLaunching,
	})

	d.mu.Lock()
	switch {
	case d.closed:
		d.mu.Unlock()
		return driver.Replica{}, fmt.Errorf("start %s: %w", spec.ID, ErrClosed)
	case d.replicas[spec.ID] != nil:
		d.mu.Unlock()
		return driver.Replica{}, fmt.Errorf("start %s: %w: a replica with this id exists", spec.ID, driver.ErrInvalidSpec)
	}
	d.replicas[spec.ID] = r
	d.mu.Unlock()

	r.op.Lock()
	defer r.op.Unlock()
	view, err := d.start(r)
	if err != nil {
		return driver.Replica{}, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	d.startSupervisor(r)
	return view, nil
}

// start creates r's state and process; on error it removes both.
func (d *Driver) start(r *replica) (_ driver.Replica, err error) {
	created := false
	defer func() {
		if err != nil {
			d.discard(r, created)
		}
	}()
	bindings, freePorts, err := d.allocatePorts(r.id, r.rec.Spec.Ports)
	if err != nil {
		return driver.Replica{}, err
	}
	defer freePorts()
	if err := os.Mkdir(r.dir, 0o700); err != nil {
		return driver.Replica{}, fmt.Errorf("create state: %w", err)
	}
	created = true
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.Bindings = bindings
	freePorts()
	if err := d.launch(r); err != nil {
		return driver.Replica{}, err
	}
	return r.view(), nil
}

// discard forgets a replica whose Start failed; its process, if any, was
// already killed.
func (d *Driver) discard(r *replica, created bool) {
	r.logMu.Lock()
	r.col.close()
	r.logMu.Unlock()
	if created {
		if err := os.RemoveAll(r.dir); err != nil {
			d.log.Warn("remove state of failed start", "replica", r.id, "err", err)
		}
	}
	r.mu.Lock()
	r.removed = true
	r.broadcast()
	r.mu.Unlock()
	d.mu.Lock()
	if d.replicas[r.id] == r {
		delete(d.replicas, r.id)
	}
	d.releasePorts(r.id)
	d.mu.Unlock()
}

// stopGrace is the grace period Stop uses: the caller's, else the spec's,
// else 10s.
func stopGrace(grace time.Duration, spec driver.Spec) time.Duration {
	if grace == 0 {
		grace = spec.StopGracePeriod
	}
	if grace == 0 {
		grace = defaultStopGrace
	}
	return grace
}

// Stop sends SIGTERM to the replica's process group, waits for the process
// up to grace (0: the spec's StopGracePeriod, else 10s; negative: not at
// all; cut short when ctx ends), then SIGKILLs what is left of the group —
// also when the process exited in time but left children behind — and
// removes the replica's state, log included. Stopping a missing replica is
// not an error.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	r, err := d.lookup(id)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	r.op.Lock()
	defer r.op.Unlock()

	r.mu.Lock()
	if r.removed {
		r.mu.Unlock()
		return nil
	}
	r.rec.Stopping = true
	err = r.persist()
	grace = stopGrace(grace, r.rec.Spec)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}

	d.stopSupervisor(r) // no restarts from here on
	r.mu.Lock()
	pid, start, running := r.rec.PID, r.rec.StartTime, r.rec.Phase == phaseRunning
	r.mu.Unlock()
	if running {
		if err := terminate(ctx, pid, start, grace); err != nil {
			return fmt.Errorf("stop %s: %w", id, err)
		}
		d.log.Info("stopped replica", "replica", id, "pid", pid)
	}
	d.collect(r, true) // its last words, for log followers
	if err := d.remove(r); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

// remove deletes a stopped replica's state and forgets it.
func (d *Driver) remove(r *replica) error {
	r.logMu.Lock()
	r.col.close()
	r.logMu.Unlock()
	// The record goes first: a directory without one is known debris.
	if err := os.Remove(filepath.Join(r.dir, recordFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state: %w", err)
	}
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("remove state: %w", err)
	}
	r.mu.Lock()
	r.removed = true
	r.rec.Phase = phaseExited
	r.broadcast()
	r.mu.Unlock()
	d.mu.Lock()
	if d.replicas[r.id] == r {
		delete(d.replicas, r.id)
	}
	d.releasePorts(r.id)
	d.mu.Unlock()
	return nil
}

// lookup finds a replica; ErrNotFound or ErrClosed otherwise.
func (d *Driver) lookup(id string) (*replica, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	r := d.replicas[id]
	if r == nil {
		return nil, driver.ErrNotFound
	}
	return r, nil
}

// Inspect reports one replica; an error wrapping driver.ErrNotFound when the
// driver does not manage it.
func (d *Driver) Inspect(ctx context.Context, id string) (driver.Replica, error) {
	r, err := d.lookup(id)
	if err != nil {
		return driver.Replica{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return driver.Replica{}, fmt.Errorf("inspect %s: %w", id, driver.ErrNotFound)
	}
	return r.view(), nil
}

// List reports the replicas whose labels (the driver's and the spec's)
// include all of match, ordered by id.
func (d *Driver) List(ctx context.Context, match map[string]string) ([]driver.Replica, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("list: %w", ErrClosed)
	}
	rs := slices.Collect(maps.Values(d.replicas))
	d.mu.Unlock()
	slices.SortFunc(rs, func(a, b *replica) int { return strings.Compare(a.id, b.id) })

	var out []driver.Replica
	for _, r := range rs {
		r.mu.Lock()
		v, removed := r.view(), r.removed
		r.mu.Unlock()
		if !removed && matches(v.Labels, match) {
			out = append(out, v)
		}
	}
	return out, nil
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Close stops supervising and releases the StateDir; the processes keep
// running for the next driver to adopt. Safe to call twice.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.closing)
	rs := slices.Collect(maps.Values(d.replicas))
	d.mu.Unlock()

	for _, r := range rs {
		d.stopSupervisor(r)
	}
	d.wg.Wait()
	for _, r := range rs {
		r.logMu.Lock()
		r.col.close()
		r.logMu.Unlock()
	}
	if err := d.lock.Close(); err != nil {
		return fmt.Errorf("close process driver: %w", err)
	}
	return nil
}

func cloneSpec(s driver.Spec) driver.Spec {
	s.Command = slices.Clone(s.Command)
	s.Args = slices.Clone(s.Args)
	s.Env = maps.Clone(s.Env)
	s.Ports = slices.Clone(s.Ports)
	s.Volumes = slices.Clone(s.Volumes)
	s.Labels = maps.Clone(s.Labels)
	return s
}
