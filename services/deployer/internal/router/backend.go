package router

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// drainingBit marks a backend's state word once it drains; the bits below
// count its requests in flight. One word for both lets acquire refuse a
// draining backend and count a request in a single compare-and-swap, so
// a drain can never miss a request that slipped in as it started.
const drainingBit = int64(1) << 62

// cutGrace bounds how long a drain waits, after cutting the requests still
// in flight at its deadline, for them to unwind.
const cutGrace = time.Second

// backend is one replica's address within a revision. Its routing fields
// (rev, ready) are guarded by Router.mu; the rest is safe for concurrent use.
type backend struct {
	addr  string
	rev   *revision
	ready bool

	state atomic.Int64
	// ejectedUntil is when a backend that refused a connection may be
	// picked again (unix nanoseconds); 0 when it never refused one.
	ejectedUntil atomic.Int64

	// cut is cancelled to end the requests still in flight when a drain's
	// deadline passes; each request cancels itself when it fires.
	cut       context.Context
	cancelCut context.CancelCauseFunc

	drainOnce sync.Once
	// idle is closed once the backend drains and nothing is in flight.
	idle chan struct{}

	cutOnce sync.Once
	cutN    int
}

func newBackend(addr string, rev *revision) *backend {
	cut, cancel := context.WithCancelCause(context.Background())
	return &backend{addr: addr, rev: rev, ready: true, cut: cut, cancelCut: cancel, idle: make(chan struct{})}
}

// acquire counts a new request in flight, unless the backend drains.
func (b *backend) acquire() bool {
	for {
		s := b.state.Load()
		if s&drainingBit != 0 {
			return false
		}
		if b.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// release ends a request acquire counted.
func (b *backend) release() {
	if b.state.Add(-1) == drainingBit {
		close(b.idle)
	}
}

func (b *backend) inFlight() int64 { return b.state.Load() &^ drainingBit }

// ejected reports whether the backend refused a connection recently; now is
// read once per pick and only when some backend was ever ejected.
func (b *backend) ejected(now *int64) bool {
	until := b.ejectedUntil.Load()
	if until == 0 {
		return false
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	return *now < until
}

func (b *backend) eject(d time.Duration) {
	if d > 0 {
		b.ejectedUntil.Store(time.Now().Add(d).UnixNano())
	}
}

// drain stops new requests, waits up to timeout (or until abort closes)
// for those in flight, then cuts the rest and waits a little for them to
// unwind. It reports how many were cut and whether this call cut them;
// concurrent drains of one backend share the outcome. The caller must
// already have taken the backend out of the routing table.
func (b *backend) drain(timeout time.Duration, abort <-chan struct{}) (cut int, first bool) {
	b.drainOnce.Do(func() {
		if b.state.Or(drainingBit) == 0 {
			close(b.idle)
		}
	})
	cause := errDrainDeadline
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-b.idle:
			return 0, false
		case <-t.C:
		case <-abort:
			cause = errRouterClosed
		}
	}
	b.cutOnce.Do(func() {
		first = true
		b.cutN = int(b.inFlight())
		b.cancelCut(cause)
	})
	t := time.NewTimer(cutGrace)
	defer t.Stop()
	select {
	case <-b.idle:
	case <-t.C:
	}
	return b.cutN, first
}
