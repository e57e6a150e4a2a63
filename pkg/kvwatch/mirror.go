package kvwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStallCheck is how often a Mirror whose watch delivered nothing
// compares what it applied with the bucket's last revision.
const DefaultStallCheck = time.Second

// MirrorConfig tunes a Mirror; the zero value is usable.
type MirrorConfig struct {
	// StallCheck is how often an idle watch is compared with the bucket's
	// last revision; DefaultStallCheck when zero.
	StallCheck time.Duration
	// Log receives a line for every restarted watch; slog.Default when nil.
	Log *slog.Logger
}

// Mirror hands every value of a bucket to apply once, in revision order:
// the current values when it starts, then each change.
//
// A KV watch is an ephemeral consumer on one NATS server. When that server
// goes away in a cluster, the client library notices only after two missed
// idle heartbeats (10 s), and the replica reads stale state until then. A
// Mirror does not wait for that: when the bucket holds revisions it has not
// applied and its watch delivered nothing for a StallCheck, it starts a new
// watch from the first revision it lacks. Entries at or below the last
// applied revision are never applied twice.
type Mirror struct {
	kv    jetstream.KeyValue
	apply func(jetstream.KeyValueEntry)
	cfg   MirrorConfig

	mu       sync.Mutex
	w        jetstream.KeyWatcher
	applied  uint64
	changed  chan struct{} // closed and replaced when applied advances
	restarts int
	// floor is the bucket's last revision when the current watch began:
	// once that watch has delivered its initial values, every revision up
	// to it is applied or superseded.
	floor uint64
}

// StartMirror applies kv's current values and returns once they are all
// applied; Run follows the changes after them.
func StartMirror(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), cfg MirrorConfig) (*Mirror, error) {
	if cfg.StallCheck <= 0 {
		cfg.StallCheck = DefaultStallCheck
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Mirror{kv: kv, apply: apply, cfg: cfg, changed: make(chan struct{})}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	if err := Initial(ctx, w, m.applyOnce); err != nil {
		_ = w.Stop()
		return nil, fmt.Errorf("load bucket %s: %w", kv.Bucket(), err)
	}
	m.w = w
	return m, nil
}

// Applied is the last revision handed to apply.
func (m *Mirror) Applied() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

// Restarts counts the watches replaced because they stalled.
func (m *Mirror) Restarts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.restarts
}

// Changed is closed the next time Applied advances: take it, check
// Applied, then wait on it.
func (m *Mirror) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// WaitApplied waits until the mirror has applied revision rev (a write of
// this process reading itself back), or ctx ends.
func (m *Mirror) WaitApplied(ctx context.Context, rev uint64) error {
	for {
		ch := m.Changed()
		if m.Applied() >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("mirror of %s at revision %d, waiting for %d: %w", m.kv.Bucket(), m.Applied(), rev, ctx.Err())
		}
	}
}

// CaughtUp waits until the mirror holds everything the bucket held when it
// was called, or ctx ends.
func (m *Mirror) CaughtUp(ctx context.Context) error {
	last, _, err := m.behind(ctx)
	if err != nil {
		return fmt.Errorf("status of %s: %w", m.kv.Bucket(), err)
	}
	return m.WaitApplied(ctx, last)
}

// applyOnce hands e to apply unless its revision was applied already;
// Applied advances once apply returns. Entries come from one goroutine at
// a time (StartMirror, then Run).
func (m *Mirror) applyOnce(e jetstream.KeyValueEntry) {
	if e.Revision() <= m.Applied() {
		return
	}
	m.apply(e)
	m.advance(e.Revision())
}

// advance records rev as applied and wakes the waiters.
func (m *Mirror) advance(rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rev <= m.applied {
		return
	}
	m.applied = rev
	close(m.changed)
	m.changed = make(chan struct{})
}

// Run follows the bucket's changes until ctx ends, then stops its watch.
func (m *Mirror) Run(ctx context.Context) {
	defer func() {
		m.mu.Lock()
		_ = m.w.Stop()
		m.mu.Unlock()
	}()
	tick := time.NewTicker(m.cfg.StallCheck)
	defer tick.Stop()
	quiet := false // nothing delivered since the last tick
	for {
		m.mu.Lock()
		updates := m.w.Updates()
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case e, ok := <-updates:
			if !ok {
				// The library closes a watch it gave up on; start another
				// after a pause.
				select {
				case <-ctx.Done():
					return
				case <-time.After(m.cfg.StallCheck):
				}
				m.restart(ctx, "watch closed", 0)
				continue
			}
			quiet = false
			if e != nil {
				m.applyOnce(e)
				continue
			}
			m.mu.Lock()
			floor := m.floor
			m.mu.Unlock()
			m.advance(floor)
		case <-tick.C:
			if !quiet {
				quiet = true
				continue
			}
			last, behind, err := m.behind(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				m.cfg.Log.Debug("kv mirror: bucket status", "bucket", m.kv.Bucket(), "err", err)
				continue
			}
			if behind {
				m.restart(ctx, "watch stalled", last)
			}
		}
	}
}

// behind reports the bucket's last revision and whether it is after the
// last one applied.
func (m *Mirror) behind(ctx context.Context) (uint64, bool, error) {
	c, cancel := context.WithTimeout(ctx, m.cfg.StallCheck)
	defer cancel()
	st, err := m.kv.Status(c)
	if err != nil {
		return 0, false, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, false, errors.New("bucket status carries no stream state")
	}
	last := bs.StreamInfo().State.LastSeq
	return last, last > m.Applied(), nil
}

// restart replaces the watch with one that starts at the first revision
// not applied, retrying until it gets one or ctx ends. last is the
// bucket's last revision seen before, 0 when not known.
func (m *Mirror) restart(ctx context.Context, why string, last uint64) {
	for attempt := 0; ; attempt++ {
		from := m.Applied() + 1
		w, err := m.kv.WatchAll(ctx, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
		if err == nil {
			m.mu.Lock()
			_ = m.w.Stop()
			m.w = w
			m.floor = last
			m.restarts++
			m.mu.Unlock()
			m.cfg.Log.Info("kv mirror: watch restarted", "bucket", m.kv.Bucket(), "reason", why, "from_revision", from)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == 0 {
			m.cfg.Log.Warn("kv mirror: watch restart failed; retrying", "bucket", m.kv.Bucket(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.cfg.StallCheck):
		}
	}
}
