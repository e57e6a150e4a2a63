//go:build linux

package process

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Files in a replica's directory, <StateDir>/<id>/.
const (
	recordFile = "record.json"
	outputFile = "output" // the process's stdout and stderr, as written
	logFile    = "log"    // timestamped lines collected from output
	oldLogFile = "log.1"  // the previous log, after rotation
	offsetFile = "offset" // how far output has been collected into log
)

const recordVersion = 1

// phase is where a replica's process is in its life, as persisted.
type phase string

const (
	// phaseLaunching: a process is being started; if the deployer died here
	// the process, if any, is found by its marker environment variable.
	phaseLaunching phase = "launching"
	phaseRunning   phase = "running"
	// phaseBackoff: the process crashed and will be restarted.
	phaseBackoff phase = "backoff"
	// phaseExited: the process exited and will not be restarted.
	phaseExited phase = "exited"
)

// record is what the driver persists for a replica so that a new driver on
// the same StateDir can adopt it. It is replaced atomically on every change.
type record struct {
	Version  int              `json:"version"`
	Spec     driver.Spec      `json:"spec"`
	Path     string           `json:"path"` // the program, resolved at Start
	Dir      string           `json:"dir"`  // the working directory, resolved at Start
	Bindings []driver.Binding `json:"bindings"`
	// BootID tells a process of this boot from one of an earlier boot.
	BootID    string    `json:"boot_id"`
	Phase     phase     `json:"phase"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // /proc/<pid>/stat field 22
	StartedAt time.Time `json:"started_at"`
	Restarts  int       `json:"restarts"`
	ExitCode  int       `json:"exit_code"`
	Reason    string    `json:"reason,omitempty"`
	// Stopping: Stop began; the process is never restarted again.
	Stopping bool `json:"stopping,omitempty"`
}

func (r *record) save(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, recordFile), b)
}

func loadRecord(dir string) (record, error) {
	var r record
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decode %s: %w", filepath.Join(dir, recordFile), err)
	}
	if r.Version != recordVersion {
		return r, fmt.Errorf("%s: record version %d, want %d", dir, r.Version, recordVersion)
	}
	return r, nil
}

// writeFileAtomic replaces name with b: written to a temporary file, synced
// and renamed over name, so a reader (or a crash) sees the old or the new
// content, never a mix.
func writeFileAtomic(name string, b []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// replica is the driver's in-memory view of one replica.
type replica struct {
	id  string
	dir string

	// op serializes Start and Stop of this replica.
	op sync.Mutex

	// logMu guards the collector and log rotation; taken before mu.
	logMu sync.Mutex
	col   collector

	mu  sync.Mutex
	rec record
	// removed: Stop (or a failed Start) deleted the replica.
	removed bool
	// changed is closed and replaced whenever output is collected or the
	// state changes, to wake log followers.
	changed chan struct{}
	// quit and done control the supervising goroutine; nil when none runs.
	quit, done chan struct{}
	// Restart backoff and when the next restart is due (phaseBackoff).
	backoff   time.Duration
	restartAt time.Time
	// stopBy is when an adopted, interrupted Stop escalates to SIGKILL.
	stopBy time.Time
}

func newReplica(id, dir string, rec record) *replica {
	return &replica{id: id, dir: dir, rec: rec, changed: make(chan struct{})}
}

// broadcast wakes log followers. Callers hold r.mu.
func (r *replica) broadcast() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// persist saves the record and wakes followers. Callers hold r.mu.
func (r *replica) persist() error {
	r.broadcast()
	if err := r.rec.save(r.dir); err != nil {
		return fmt.Errorf("replica %s: %w", r.id, err)
	}
	return nil
}

// labels are the driver's labels over the spec's.
func labels(spec driver.Spec) map[string]string {
	l := maps.Clone(spec.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[driver.LabelManagedBy] = driver.ManagedByValue
	l[driver.LabelApp] = spec.App
	l[driver.LabelEnvironment] = spec.Environment
	l[driver.LabelRevision] = strconv.FormatInt(spec.Revision, 10)
	l[driver.LabelReplica] = spec.ID
	return l
}

// view reports the replica as the driver interface describes it. Callers
// hold r.mu.
func (r *replica) view() driver.Replica {
	rec := &r.rec
	v := driver.Replica{
		ID:          rec.Spec.ID,
		App:         rec.Spec.App,
		Environment: rec.Spec.Environment,
		Revision:    rec.Spec.Revision,
		Bindings:    slices.Clone(rec.Bindings),
		Restarts:    rec.Restarts,
		ExitCode:    rec.ExitCode,
		Reason:      rec.Reason,
		StartedAt:   rec.StartedAt,
		Labels:      labels(rec.Spec),
	}
	switch rec.Phase {
	case phaseLaunching, phaseBackoff:
		v.State = driver.StateStarting
	case phaseRunning:
		v.State = driver.StateRunning
		v.RuntimeID = strconv.Itoa(rec.PID)
	case phaseExited:
		v.State = driver.StateExited
		if rec.Stopping {
			v.State = driver.StateStopped
		}
	default:
		v.State = driver.StateUnknown
	}
	return v
}
