// Package lease gives replicas of a service exclusive, expiring claims on
// pieces of work, kept in a JetStream KV bucket (DefaultBucket), and spreads
// a fixed number of shards over the live replicas (Shards).
//
// # Model
//
// A Store belongs to one process and names it with a holder id, unique among
// live processes. A lease is one KV key whose value names its holder. It is
// taken with a revision-checked create, renewed every TTL/3 with a
// revision-checked write, and released by a revision-checked delete, so of two
// replicas racing for a key exactly one write wins.
//
// # Safety: one holder at a time
//
// Expiry is the NATS server's business, not the replicas'. Every write of a
// lease carries a per-message TTL (the Nats-TTL header), so the server itself
// removes the key TTL after the last write it stored, judged by its own
// clock alone; a taker never decides that a lease expired, it can only
// create a key that is absent. Clocks of different replicas are never
// compared.
//
// The holder, on its side, treats the lease as valid until
//
//	start of the last successful write + TTL - TTL/5
//
// measured on its own monotonic clock. The write was stored after it was
// sent, so the server removes the key no earlier than start + TTL (server
// time); the holder stops TTL/5 earlier, which absorbs clock rate drift and
// the server's coarse timestamps. When validity runs out without a
// successful renewal, or a renewal finds the key changed (taken over,
// expired, deleted), Lost is closed and Context is cancelled at once: work
// guarded by the lease must stop there. A new holder can therefore only
// start after the old one was told to stop. Nothing can stop a process that
// is frozen (SIGSTOP, swap) past its validity while it still acts, so side
// effects that must never happen twice should also be written with
// revision checks (kvproto) — the lease makes doubles rare, the revision
// check makes them harmless.
//
// A process restarted with the same holder id reclaims the leases its
// previous incarnation left at once (a revision-checked write over them)
// instead of waiting for them to expire. That is why holder ids must be
// unique among live processes: two live processes with one id would steal
// from each other.
//
// The argument assumes clocks run at about the same rate; a step of the
// server's wall clock (not slewed by NTP) can end leases early.
//
// TTLs are whole seconds (the server's unit), at least one; shorter or
// fractional TTLs are rounded up. The server must support per-message TTLs
// (NATS 2.11 or later), and the bucket must be reached without a JetStream
// domain or API prefix.
//
// # Use
//
//	st, _ := lease.Open(ctx, js, lease.Config{Holder: replicaID})
//	// One piece of work (a rollout of one application):
//	l, err := st.TryAcquire(ctx, "deployer.app.shop", 15*time.Second)
//	if errors.Is(err, lease.ErrHeld) { /* another replica does it */ }
//	defer l.Release(ctx)
//	doWork(l.Context()) // stops when the lease is lost
//	// A singleton loop (leader election):
//	st.Hold(ctx, "monitor.rules", 10*time.Second, evaluateRules)
//	// Many pieces spread over replicas by key:
//	sh, _ := st.Shards(lease.ShardsConfig{Group: "healthchecker", Work: runShard})
//	go sh.Run(ctx) // runShard(ctx, n) for each owned n; route keys with ShardOf
//
// Keys are KV keys: letters, digits, '-', '_', '=', '/' and '.' (not at
// either end); prefix them with the service's name.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the KV bucket leases live in unless Config says otherwise.
const DefaultBucket = "opsuite_leases"

// Errors returned by acquisitions and reported by Lease.Err.
var (
	// ErrHeld: another holder (or this Store, through another Lease) holds
	// the key.
	ErrHeld = errors.New("lease held by another holder")
	// ErrLost: the lease ended without Release (renewal failed for too long,
	// or the key was taken over or removed).
	ErrLost = errors.New("lease lost")
	// ErrReleased: Release ended the lease.
	ErrReleased = errors.New("lease released")
)

// Config opens a Store.
type Config struct {
	// Holder names this process; required, letters, digits, '-', '_', '='.
	Holder string
	// Bucket is the KV bucket; default DefaultBucket.
	Bucket string
	// Replicas is the bucket's JetStream replica count; default 1.
	Replicas int
	// Logger reports lost leases; default discard.
	Logger *slog.Logger
}

// Store takes leases for one holder.
type Store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	holder string
	prefix string // subject prefix of the bucket's keys
	log    *slog.Logger

	mu   sync.Mutex
	held map[string]*Lease // nil value: an acquisition in progress
}

var tokenRE = regexp.MustCompile(`^[-_=A-Za-z0-9]+$`)

// Open creates the bucket if needed and returns a Store for cfg.Holder.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if !tokenRE.MatchString(cfg.Holder) {
		return nil, fmt.Errorf("lease: holder id %q: want letters, digits, '-', '_' or '='", cfg.Holder)
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "Opsuite leases: one holder per key, expired by the server",
		History:        1,
		Replicas:       cfg.Replicas,
		LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("lease: open bucket %s: %w", cfg.Bucket, err)
	}
	return &Store{
		js: js, kv: kv, holder: cfg.Holder, log: log,
		prefix: "$KV." + cfg.Bucket + ".",
		held:   map[string]*Lease{},
	}, nil
}

// DefaultHolder is a holder id for a process that was given none: its host
// name (reduced to valid characters) and a random suffix, so it is unique
// but changes on every start (a restarted process then waits for the
// leases of its previous run to expire instead of reclaiming them).
func DefaultHolder() string {
	host, _ := os.Hostname()
	clean := strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, host)
	if clean == "" {
		clean = "replica"
	}
	nonce, err := newNonce()
	if err != nil {
		nonce = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return clean + "-" + nonce[:8]
}

// Holder is the id this Store takes leases as.
func (s *Store) Holder() string { return s.holder }

// record is a lease's value in the bucket.
type record struct {
	Holder string `json:"holder"`
	// Nonce is random per Lease, so a holder recognises its own write
	// whose acknowledgement it missed.
	Nonce    string    `json:"nonce"`
	TTL      string    `json:"ttl"`
	Acquired time.Time `json:"acquired"`
}

func decode(e jetstream.KeyValueEntry) (record, error) {
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return r, fmt.Errorf("lease: decode %s: %w", e.Key(), err)
	}
	return r, nil
}

// roundTTL rounds ttl up to whole seconds, at least one.
func roundTTL(ttl time.Duration) time.Duration {
	secs := math.Ceil(ttl.Seconds())
	if secs < 1 {
		secs = 1
	}
	return time.Duration(secs) * time.Second
}

// HolderOf names who holds key now, "" when nobody does.
func (s *Store) HolderOf(ctx context.Context, key string) (string, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease: read %s: %w", key, err)
	}
	r, err := decode(e)
	if err != nil {
		return "", err
	}
	return r.Holder, nil
}

// TryAcquire takes key for ttl if nobody holds it (or a previous incarnation
// of this holder left it), and keeps it renewed until Release or loss. It
// returns ErrHeld when someone else holds it.
func (s *Store) TryAcquire(ctx context.Context, key string, ttl time.Duration) (*Lease, error) {
	s.mu.Lock()
	if _, busy := s.held[key]; busy {
		s.mu.Unlock()
		return nil, fmt.Errorf("lease %s: %w (by this process)", key, ErrHeld)
	}
	s.held[key] = nil
	s.mu.Unlock()

	l, err := s.take(ctx, key, roundTTL(ttl))
	s.mu.Lock()
	if err != nil {
		delete(s.held, key)
	} else {
		s.held[key] = l
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go l.keep()
	return l, nil
}

func (s *Store) take(ctx context.Context, key string, ttl time.Duration) (*Lease, error) {
	nonce, err := newNonce()
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(record{Holder: s.holder, Nonce: nonce, TTL: ttl.String(), Acquired: time.Now().UTC()})
	if err != nil {
		return nil, fmt.Errorf("lease: encode %s: %w", key, err)
	}
	start := time.Now()
	rev, err := s.kv.Create(ctx, key, data, jetstream.KeyTTL(ttl))
	if errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = s.reclaim(ctx, key, data, ttl, &start)
	}
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	l := &Lease{
		store: s, key: key, ttl: ttl, data: data, nonce: nonce,
		ctx: lctx, cancel: cancel,
		rev: rev, validUntil: start.Add(validity(ttl)),
		release: make(chan struct{}), stopped: make(chan struct{}),
	}
	l.expiry = time.AfterFunc(time.Until(l.validUntil), l.expire)
	return l, nil
}

// reclaim takes over key when the lease there is this holder's own, left by
// a previous incarnation of the process.
func (s *Store) reclaim(ctx context.Context, key string, data []byte, ttl time.Duration, start *time.Time) (uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		// Expired or released in between: one more try at creating it.
		*start = time.Now()
		rev, err := s.kv.Create(ctx, key, data, jetstream.KeyTTL(ttl))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("lease %s: %w", key, ErrHeld)
		}
		if err != nil {
			return 0, fmt.Errorf("lease: create %s: %w", key, err)
		}
		return rev, nil
	}
	if err != nil {
		return 0, fmt.Errorf("lease: read %s: %w", key, err)
	}
	r, err := decode(e)
	if err != nil {
		return 0, err
	}
	if r.Holder != s.holder {
		return 0, fmt.Errorf("lease %s: %w (%s)", key, ErrHeld, r.Holder)
	}
	*start = time.Now()
	rev, err := s.write(ctx, key, data, e.Revision(), ttl)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("lease %s: %w", key, ErrHeld)
	}
	if err != nil {
		return 0, fmt.Errorf("lease: reclaim %s: %w", key, err)
	}
	s.log.Info("lease reclaimed from a previous run of this holder", "key", key)
	return rev, nil
}

// write stores data at key if key is still at rev, to expire after ttl.
func (s *Store) write(ctx context.Context, key string, data []byte, rev uint64, ttl time.Duration) (uint64, error) {
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.prefix + key, Data: data},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// Acquire waits until it holds key (see TryAcquire) or ctx ends. It wakes
// as soon as the key is released or expires.
func (s *Store) Acquire(ctx context.Context, key string, ttl time.Duration) (*Lease, error) {
	l, err := s.TryAcquire(ctx, key, ttl)
	if !errors.Is(err, ErrHeld) {
		return l, err
	}
	// Held: watch the key, then try again (a release may have come
	// before the watch started) and after every removal.
	w, err := s.kv.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("lease: watch %s: %w", key, err)
	}
	defer func() { _ = w.Stop() }()
	poll := roundTTL(ttl) / 2
	for {
		l, err := s.TryAcquire(ctx, key, ttl)
		if !errors.Is(err, ErrHeld) {
			return l, err
		}
		t := time.NewTimer(poll)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("lease: acquire %s: %w", key, context.Cause(ctx))
			case <-t.C:
				break wait
			case e, ok := <-w.Updates():
				if !ok {
					t.Stop()
					return nil, fmt.Errorf("lease: watch %s ended", key)
				}
				if e != nil && e.Operation() != jetstream.KeyValuePut {
					t.Stop()
					break wait
				}
			}
		}
	}
}

// validity is how long after sending a successful write the holder may
// rely on the lease.
func validity(ttl time.Duration) time.Duration { return ttl - ttl/5 }

func newNonce() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lease: nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Lease is one held key. Its methods are safe for concurrent use.
type Lease struct {
	store  *Store
	key    string
	ttl    time.Duration
	data   []byte
	nonce  string
	ctx    context.Context //nolint:containedctx // the lease's lifetime, handed to the work it guards
	cancel context.CancelCauseFunc
	expiry *time.Timer

	unacked time.Time // start of the first renewal since the last success; keep's own

	mu         sync.Mutex
	rev        uint64
	validUntil time.Time
	ended      bool

	releaseOnce sync.Once
	release     chan struct{}
	stopped     chan struct{}
}

// Key is the leased key.
func (l *Lease) Key() string { return l.key }

// Context is cancelled when the lease ends; context.Cause says ErrLost or
// ErrReleased. It carries the values of the context it was acquired with.
func (l *Lease) Context() context.Context { return l.ctx }

// Lost is closed when the lease ends (lost or released).
func (l *Lease) Lost() <-chan struct{} { return l.ctx.Done() }

// Err is nil while the lease is held, then ErrLost or ErrReleased.
func (l *Lease) Err() error {
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// Valid reports whether the lease is held and within its validity now; check
// it right before a side effect that must not be doubled.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.ended && time.Now().Before(l.validUntil)
}

// end finishes the lease once, with cause.
func (l *Lease) end(cause error) bool {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return false
	}
	l.ended = true
	l.mu.Unlock()
	l.expiry.Stop()
	l.cancel(cause)
	l.store.mu.Lock()
	if l.store.held[l.key] == l {
		delete(l.store.held, l.key)
	}
	l.store.mu.Unlock()
	if errors.Is(cause, ErrLost) {
		l.store.log.Warn("lease lost", "key", l.key, "err", cause)
	}
	return true
}

// expire runs when validity ran out without a renewal.
func (l *Lease) expire() {
	l.mu.Lock()
	late := !time.Now().Before(l.validUntil)
	l.mu.Unlock()
	if late {
		l.end(fmt.Errorf("%w: not renewed within its validity", ErrLost))
	}
}

// keep renews the lease every TTL/3 until Release or loss.
func (l *Lease) keep() {
	defer close(l.stopped)
	every := l.ttl / 3
	retry := l.ttl / 10
	next := time.Now().Add(every)
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-l.release:
			t.Stop()
			return
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		start, err := l.renew()
		switch {
		case err == nil:
			next = start.Add(every)
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			l.end(fmt.Errorf("%w: taken over or removed", ErrLost))
			return
		case errors.Is(err, nats.ErrConnectionClosed):
			l.end(fmt.Errorf("%w: NATS connection closed", ErrLost))
			return
		default:
			l.store.log.Debug("lease renewal failed; retrying", "key", l.key, "err", err)
			next = time.Now().Add(retry)
		}
	}
}

// renew writes the lease again, bounded by its validity. A write that
// failed with a revision mismatch may have been our own earlier write
// whose acknowledgement was lost: the nonce tells.
func (l *Lease) renew() (time.Time, error) {
	l.mu.Lock()
	rev, until := l.rev, l.validUntil
	l.mu.Unlock()
	ctx, cancel := context.WithDeadline(l.ctx, until)
	defer cancel()
	start := time.Now()
	if l.unacked.IsZero() {
		l.unacked = start
	}
	from := start
	newRev, err := l.store.write(ctx, l.key, l.data, rev, l.ttl)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// The write stored was one of the attempts since the last
		// success: count validity from the first of them.
		from = l.unacked
		newRev, err = l.adopt(ctx, err)
	}
	if err != nil {
		return start, err
	}
	l.unacked = time.Time{}
	l.mu.Lock()
	if !l.ended {
		l.rev = newRev
		l.validUntil = from.Add(validity(l.ttl))
		l.expiry.Reset(time.Until(l.validUntil))
	}
	l.mu.Unlock()
	return start, nil
}

// adopt returns the key's revision when its value is this lease's own
// write (an earlier renewal whose acknowledgement was lost), else mismatch.
func (l *Lease) adopt(ctx context.Context, mismatch error) (uint64, error) {
	e, err := l.store.kv.Get(ctx, l.key)
	if err != nil {
		return 0, mismatch
	}
	r, err := decode(e)
	if err != nil || r.Nonce != l.nonce || r.Holder != l.store.holder {
		return 0, mismatch
	}
	return e.Revision(), nil
}

// Release ends the lease and removes the key (only if it is still this
// lease's), so a waiting replica takes it at once. Stop the guarded work
// first. Releasing an ended lease does nothing.
func (l *Lease) Release(ctx context.Context) error {
	l.releaseOnce.Do(func() { close(l.release) })
	<-l.stopped
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	if !l.end(ErrReleased) {
		return nil
	}
	// Revision-checked: a key expired or taken meanwhile is left alone.
	err := l.store.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lease: release %s (it expires by itself): %w", l.key, err)
	}
	return nil
}

// Hold runs work whenever this holder holds key, until ctx ends: it waits
// for the lease, runs work with a context that ends when the lease is lost
// or ctx ends, then releases the lease and, while ctx lasts, waits for it
// again (a work that returns on its own is run again after the next
// acquisition). Errors reaching NATS are logged and retried. It is the
// leader-election loop: of all replicas calling Hold on one key, at most
// one runs work at a time.
func (s *Store) Hold(ctx context.Context, key string, ttl time.Duration, work func(ctx context.Context)) {
	for ctx.Err() == nil {
		l, err := s.Acquire(ctx, key, ttl)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("acquire lease; retrying", "key", key, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(roundTTL(ttl) / 2):
			}
			continue
		}
		wctx, cancel := context.WithCancel(l.Context())
		stop := context.AfterFunc(ctx, cancel)
		work(wctx)
		stop()
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := l.Release(rctx); err != nil {
			s.log.Warn("release lease", "key", key, "err", err)
		}
		rcancel()
	}
}
