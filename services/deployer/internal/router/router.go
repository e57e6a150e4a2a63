// Package router is the deployer's built-in L7 traffic router: one per
// application, an HTTP listener that forwards each request to a ready
// backend (replica) of a weighted revision.
//
// Routing state lives in one immutable table swapped atomically, so every
// change — new backends, canary weights, a blue-green switch, a drain — is
// seen by a request entirely or not at all. A backend leaving rotation is
// drained: it takes no new request, and the ones in flight finish (up to a
// deadline, then are cut). An idempotent request whose connection fails
// before any response (the backend vanished between the table swap and the
// dial) is sent once more to another backend, so a replica going away does
// not cost a request. Per-revision counters and latency feed canary
// analysis (Stats) and Prometheus.
package router

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RevisionHeader names the revision that served a response; the router
// sets it on every response a backend produced or failed.
const RevisionHeader = "X-Opsuite-Revision"

// Config tunes one application's router. Zero values take the defaults.
type Config struct {
	// App names the application in metrics, logs and error bodies; required.
	App string
	// Balancing chooses a backend within a revision; LeastInFlight by default.
	Balancing Balancing
	// DrainTimeout bounds the drain of a backend removed by SetBackends;
	// default 30s.
	DrainTimeout time.Duration
	// ShutdownTimeout bounds how long Serve waits for requests in flight
	// once its context ends; default 30s.
	ShutdownTimeout time.Duration
	// RetryAfter is advertised on 503 answers when no backend is ready;
	// default 1s.
	RetryAfter time.Duration
	// Retries is how many times a request whose connection failed before
	// any response is sent to another backend; default 1, negative for none.
	Retries int
	// EjectFor keeps a backend that refused a connection out of picks for
	// that long, unless nothing else is left; default 1s, negative for never.
	EjectFor time.Duration
	// DialTimeout bounds connecting to a backend; default 2s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a backend's response
	// headers; 0 waits as long as the client does.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost is how many keep-alive connections to each
	// backend stay open; default 256.
	MaxIdleConnsPerHost int
	// ReadHeaderTimeout and IdleTimeout tune the listener; defaults 10s and
	// 120s.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// TrustForwardedHeaders keeps the X-Forwarded-For/Proto/Host a client
	// sent (appending to X-Forwarded-For) instead of replacing them; only
	// for a router behind another proxy.
	TrustForwardedHeaders bool
}

func (c *Config) withDefaults() error {
	if c.App == "" {
		return fmt.Errorf("%w: App is required", ErrInvalidConfig)
	}
	if c.Balancing != LeastInFlight && c.Balancing != RoundRobin {
		return fmt.Errorf("%w: Balancing %d is not LeastInFlight or RoundRobin", ErrInvalidConfig, c.Balancing)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.ShutdownTimeout, 30*time.Second)
	def(&c.RetryAfter, time.Second)
	def(&c.EjectFor, time.Second)
	def(&c.DialTimeout, 2*time.Second)
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	switch {
	case c.Retries == 0:
		c.Retries = 1
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.MaxIdleConnsPerHost <= 0 {
		c.MaxIdleConnsPerHost = 256
	}
	return nil
}

// Deps are the router's collaborators; both may be nil.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Router routes one application's requests. It is an http.Handler; Serve
// runs it on a listener. All methods are safe for concurrent use.
type Router struct {
	cfg       Config
	log       *slog.Logger
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	table     atomic.Pointer[table]
	totals    totals
	// unavailableBody is the 503 body, built once.
	unavailableBody []byte
	retryAfter      string

	// mu serializes routing changes; requests never take it.
	mu        sync.Mutex
	revisions map[int64]*revision
	byAddr    map[string]*backend // routed backends, ready or not
	draining  map[*backend]struct{}
	weights   map[int64]int // nil: every ready backend weighs the same
	fallback  bool
	closed    bool

	closing   chan struct{}
	closeOnce sync.Once
	drains    sync.WaitGroup
}

// New builds a router with no backends: it answers 503 until SetBackends
// gives it some.
func New(cfg Config, deps Deps) (*Router, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retryAfter := int((cfg.RetryAfter + time.Second - 1) / time.Second)
	r := &Router{
		cfg:             cfg,
		log:             log.With("app", cfg.App),
		transport:       newTransport(cfg),
		unavailableBody: fmt.Appendf(nil, "opsuite router: application %q has no ready backend; retry in %ds\n", cfg.App, retryAfter),
		retryAfter:      strconv.Itoa(retryAfter),
		revisions:       map[int64]*revision{},
		byAddr:          map[string]*backend{},
		draining:        map[*backend]struct{}{},
		closing:         make(chan struct{}),
	}
	r.proxy = r.newProxy()
	r.table.Store(&table{})
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(newCollector(r)); err != nil {
			return nil, fmt.Errorf("router %s: register metrics: %w", cfg.App, err)
		}
	}
	return r, nil
}

// SetBackends makes addrs (host:port, ready) the backends of a revision.
// Backends no longer listed leave rotation at once and drain in the
// background for up to Config.DrainTimeout; use Drain to wait for one. An
// address listed under another revision moves to this one. An empty list
// removes the revision's backends; its counters stay.
func (r *Router) SetBackends(rev int64, addrs []string) error {
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return fmt.Errorf("router %s: revision %d: %w", r.cfg.App, rev, err)
		}
		if seen[a] {
			return fmt.Errorf("router %s: revision %d: %w: %q listed twice", r.cfg.App, rev, ErrInvalidAddress, a)
		}
		seen[a] = true
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("router %s: %w", r.cfg.App, ErrClosed)
	}
	rv := r.revisionLocked(rev)
	var removed []*backend
	for _, b := range rv.backends {
		if !seen[b.addr] {
			removed = append(removed, b)
			delete(r.byAddr, b.addr)
		}
	}
	next := make([]*backend, 0, len(addrs))
	for _, a := range addrs {
		b := r.byAddr[a]
		if b != nil && b.rev == rv {
			next = append(next, b)
			continue
		}
		if b != nil {
			r.detachLocked(b)
			removed = append(removed, b)
		}
		b = newBackend(a, rv)
		r.byAddr[a] = b
		next = append(next, b)
	}
	rv.backends = next
	r.rebuildLocked()
	// The new table is in place before any drain starts, so a request
	// that picked a removed backend from the old table and found it
	// draining picks again from the new one.
	for _, b := range removed {
		r.draining[b] = struct{}{}
		r.drains.Go(func() { r.drain(b, r.cfg.DrainTimeout) })
	}
	return nil
}

// SetReady takes a backend out of rotation (ready=false) without draining
// it — requests in flight go on — or puts it back.
func (r *Router) SetReady(addr string, ready bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.byAddr[addr]
	if b == nil {
		return fmt.Errorf("router %s: %w: %s", r.cfg.App, ErrUnknownBackend, addr)
	}
	if b.ready != ready {
		b.ready = ready
		r.rebuildLocked()
	}
	return nil
}

// SetWeights splits new requests between revisions by percent: the
// weights must sum to 100, and every revision given traffic must have a
// ready backend. A revision that later loses all its ready backends has
// its share spread over the others; when none is left, every ready
// backend takes traffic (and a warning is logged) rather than failing
// requests. Nil or empty weights route by backend: every ready backend of
// every revision gets the same share (what a rolling update wants).
func (r *Router) SetWeights(weights map[int64]int) error {
	sum := 0
	for rev, w := range weights {
		if w < 0 || w > 100 {
			return fmt.Errorf("router %s: %w: revision %d has weight %d, want 0 to 100", r.cfg.App, ErrInvalidWeights, rev, w)
		}
		sum += w
	}
	if len(weights) > 0 && sum != 100 {
		return fmt.Errorf("router %s: %w: weights sum to %d, want 100", r.cfg.App, ErrInvalidWeights, sum)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("router %s: %w", r.cfg.App, ErrClosed)
	}
	for _, rev := range slices.Sorted(maps.Keys(weights)) {
		if weights[rev] > 0 && r.readyCountLocked(rev) == 0 {
			return fmt.Errorf("router %s: revision %d: %w", r.cfg.App, rev, ErrNoReadyBackend)
		}
	}
	if len(weights) == 0 {
		r.weights = nil
	} else {
		r.weights = maps.Clone(weights)
	}
	r.rebuildLocked()
	return nil
}

// Switch sends every new request to rev (a blue-green switch) in one
// atomic step; requests in flight elsewhere finish where they are.
func (r *Router) Switch(rev int64) error {
	return r.SetWeights(map[int64]int{rev: 100})
}

// Drain takes the backend at addr out of rotation, waits up to timeout
// for its requests in flight to finish, cuts those still running (the
// client gets a 504, or a truncated response) and returns how many it cut.
// A backend already draining (removed by SetBackends) is waited for the
// same way. timeout <= 0 cuts at once.
func (r *Router) Drain(addr string, timeout time.Duration) (int, error) {
	r.mu.Lock()
	b := r.byAddr[addr]
	if b != nil {
		r.detachLocked(b)
		r.rebuildLocked()
		r.draining[b] = struct{}{}
	} else {
		for d := range r.draining {
			if d.addr == addr {
				b = d
				break
			}
		}
	}
	r.mu.Unlock()
	if b == nil {
		return 0, fmt.Errorf("router %s: %w: %s", r.cfg.App, ErrUnknownBackend, addr)
	}
	return r.drain(b, timeout), nil
}

func (r *Router) drain(b *backend, timeout time.Duration) int {
	start := time.Now()
	cut, first := b.drain(timeout, r.closing)
	if first {
		r.totals.cut.Add(uint64(cut))
		if cut > 0 {
			r.log.Warn("drain deadline passed; requests cut", "backend", b.addr, "revision", b.rev.id, "cut", cut, "timeout", timeout)
		}
	}
	r.mu.Lock()
	if _, ok := r.draining[b]; ok {
		delete(r.draining, b)
		r.log.Info("backend drained", "backend", b.addr, "revision", b.rev.id, "took", time.Since(start), "cut", cut)
	}
	r.mu.Unlock()
	return cut
}

// Forget drops the counters of a revision that has no backends and no
// weight, so its metrics series end.
func (r *Router) Forget(rev int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rv := r.revisions[rev]
	if rv == nil {
		return nil
	}
	if len(rv.backends) > 0 || r.weights[rev] > 0 {
		return fmt.Errorf("router %s: revision %d: %w", r.cfg.App, rev, ErrRevisionInUse)
	}
	for b := range r.draining {
		if b.rev == rv {
			return fmt.Errorf("router %s: revision %d: %w: a backend is draining", r.cfg.App, rev, ErrRevisionInUse)
		}
	}
	delete(r.revisions, rev)
	return nil
}

// Stats returns a revision's counters; false when the router never had it.
func (r *Router) Stats(rev int64) (Snapshot, bool) {
	r.mu.Lock()
	rv := r.revisions[rev]
	var inFlight int64
	if rv != nil {
		inFlight = r.inFlightLocked(rv)
	}
	r.mu.Unlock()
	if rv == nil {
		return Snapshot{}, false
	}
	st := &rv.stats
	// The histogram is read before the counters, so a window never has
	// more latency samples than requests.
	h := st.histogram()
	return newSnapshot(rev, time.Now(), st.requests.Load(), st.errors.Load(), inFlight, h), true
}

// Totals returns the counters over all revisions.
func (r *Router) Totals() Totals { return r.totals.load(time.Now()) }

// Shares reports the fraction of new requests each revision gets now,
// after spreading the share of revisions with no ready backend.
func (r *Router) Shares() map[int64]float64 { return r.table.Load().shares() }

// BackendState describes one backend for status and debugging.
type BackendState struct {
	Addr     string
	Revision int64
	Ready    bool
	Draining bool
	InFlight int64
}

// Backends lists the routed and draining backends, by revision and address.
func (r *Router) Backends() []BackendState {
	r.mu.Lock()
	out := make([]BackendState, 0, len(r.byAddr)+len(r.draining))
	for _, b := range r.byAddr {
		out = append(out, BackendState{Addr: b.addr, Revision: b.rev.id, Ready: b.ready, InFlight: b.inFlight()})
	}
	for b := range r.draining {
		out = append(out, BackendState{Addr: b.addr, Revision: b.rev.id, Draining: true, InFlight: b.inFlight()})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b BackendState) int {
		return cmp.Or(cmp.Compare(a.Revision, b.Revision), cmp.Compare(a.Addr, b.Addr), cmp.Compare(btoi(a.Draining), btoi(b.Draining)))
	})
	return out
}

// Serve answers requests on l until ctx ends, then stops accepting, lets
// requests in flight finish for up to Config.ShutdownTimeout, cuts the
// rest and returns nil. It returns an error only when l fails. Serve
// closes l; it does not Close the router.
func (r *Router) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           r,
		ReadHeaderTimeout: r.cfg.ReadHeaderTimeout,
		IdleTimeout:       r.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return fmt.Errorf("router %s: serve on %s: %w", r.cfg.App, l.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		r.log.Warn("shutdown deadline passed; cutting open requests", "in_flight", r.inFlight(), "timeout", r.cfg.ShutdownTimeout)
		_ = srv.Close()
	}
	<-served
	return nil
}

// Close stops routing: new requests get 503, draining backends are cut at
// once, and idle connections to backends are closed. Safe to call twice.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.table.Store(&table{})
		r.mu.Unlock()
		close(r.closing)
	})
	r.drains.Wait()
	r.transport.CloseIdleConnections()
	return nil
}

func (r *Router) revisionLocked(rev int64) *revision {
	rv := r.revisions[rev]
	if rv == nil {
		rv = &revision{id: rev, label: strconv.FormatInt(rev, 10)}
		r.revisions[rev] = rv
	}
	return rv
}

// detachLocked removes a routed backend from its revision; the caller
// rebuilds the table and drains it.
func (r *Router) detachLocked(b *backend) {
	delete(r.byAddr, b.addr)
	b.rev.backends = slices.DeleteFunc(b.rev.backends, func(x *backend) bool { return x == b })
}

func (r *Router) readyCountLocked(rev int64) int {
	n := 0
	if rv := r.revisions[rev]; rv != nil {
		for _, b := range rv.backends {
			if b.ready {
				n++
			}
		}
	}
	return n
}

// rebuildLocked builds the table from the revisions and weights and swaps
// it in.
func (r *Router) rebuildLocked() {
	if r.closed {
		return
	}
	revs := slices.Sorted(maps.Keys(r.revisions))
	build := func(weighted bool) *table {
		t := &table{}
		for _, id := range revs {
			rv := r.revisions[id]
			var ready []*backend
			for _, b := range rv.backends {
				if b.ready {
					ready = append(ready, b)
				}
			}
			w := len(ready)
			if weighted {
				w = r.weights[id]
			}
			if len(ready) == 0 || w == 0 {
				continue
			}
			t.routes = append(t.routes, route{rev: rv, backends: ready, weight: w})
			t.total += w
		}
		return t
	}
	t := build(r.weights != nil)
	if len(t.routes) == 0 && r.weights != nil {
		t = build(false)
		t.fallback = len(t.routes) > 0
	}
	if t.fallback != r.fallback {
		r.fallback = t.fallback
		if t.fallback {
			r.log.Warn("no revision given traffic has a ready backend; routing to every ready backend", "weights", r.weights)
		} else {
			r.log.Info("weighted revisions ready again; routing by weight", "weights", r.weights)
		}
	}
	r.table.Store(t)
}

func (r *Router) inFlightLocked(rv *revision) int64 {
	var n int64
	for _, b := range rv.backends {
		n += b.inFlight()
	}
	for b := range r.draining {
		if b.rev == rv {
			n += b.inFlight()
		}
	}
	return n
}

func (r *Router) inFlight() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, rv := range r.revisions {
		n += r.inFlightLocked(rv)
	}
	return n
}

// revisionView is one revision as the metrics collector reports it.
type revisionView struct {
	rev                      *revision
	ready, unready, draining int
	inFlight                 int64
}

type routerView struct {
	revisions []revisionView
	shares    map[int64]float64
}

func (r *Router) view() routerView {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := routerView{shares: r.table.Load().shares()}
	for _, id := range slices.Sorted(maps.Keys(r.revisions)) {
		rv := r.revisions[id]
		rview := revisionView{rev: rv, inFlight: r.inFlightLocked(rv)}
		for _, b := range rv.backends {
			if b.ready {
				rview.ready++
			} else {
				rview.unready++
			}
		}
		for b := range r.draining {
			if b.rev == rv {
				rview.draining++
			}
		}
		v.revisions = append(v.revisions, rview)
	}
	return v
}

func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidAddress, a, err)
	}
	if host == "" {
		return fmt.Errorf("%w: %q: no host", ErrInvalidAddress, a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%w: %q: port must be 1 to 65535", ErrInvalidAddress, a)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
