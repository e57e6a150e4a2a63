package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend is a real HTTP server on loopback standing in for a replica. It
// answers "ok from ADDR" with an X-Backend header; query parameters make
// it slow (sleep=DURATION), fail (status=CODE) or wait until released
// (block=1, announcing itself on started). /headers echoes what it got.
type backend struct {
	addr    string
	srv     *http.Server
	hits    atomic.Int64
	started chan struct{}
	release chan struct{}
	once    sync.Once
	done    chan struct{}
}

func startBackend(tb testing.TB) *backend {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &backend{
		addr:    l.Addr().String(),
		started: make(chan struct{}, 16),
		release: make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(l)
	}()
	tb.Cleanup(func() {
		b.unblock()
		b.kill()
	})
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	w.Header().Set("X-Backend", b.addr)
	if r.URL.Path == "/headers" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"host":  r.Host,
			"xff":   r.Header.Get("X-Forwarded-For"),
			"proto": r.Header.Get("X-Forwarded-Proto"),
			"xfh":   r.Header.Get("X-Forwarded-Host"),
			"query": r.URL.RawQuery,
		})
		return
	}
	q := r.URL.Query()
	if d, err := time.ParseDuration(q.Get("sleep")); err == nil {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if q.Get("block") != "" {
		b.started <- struct{}{}
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		}
	}
	status := http.StatusOK
	if s, err := strconv.Atoi(q.Get("status")); err == nil {
		status = s
	}
	body := "ok from " + b.addr + "\n"
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// unblock lets every blocked request (block=1) answer.
func (b *backend) unblock() { b.once.Do(func() { close(b.release) }) }

// kill stops the server abruptly, as a crashed replica: its listener and
// every connection close at once, requests in flight included.
func (b *backend) kill() {
	_ = b.srv.Close()
	<-b.done
}

// waitStarted waits for a blocked request to reach the backend.
func (b *backend) waitStarted(tb testing.TB) {
	tb.Helper()
	select {
	case <-b.started:
	case <-time.After(5 * time.Second):
		tb.Fatalf("no request reached backend %s", b.addr)
	}
}

func addrs(bs ...*backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.addr
	}
	return out
}

// closedAddr is a loopback address nobody listens on.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// served is a router serving on a loopback listener.
type served struct {
	*router.Router
	url  string
	stop func() error // ends Serve and returns its result
}

// newRouter builds a router for app "shop" and serves it until the test
// ends (or stop is called); cfg.App defaults to "shop".
func newRouter(tb testing.TB, cfg router.Config, reg prometheus.Registerer) *served {
	tb.Helper()
	if cfg.App == "" {
		cfg.App = "shop"
	}
	r, err := router.New(cfg, router.Deps{Logger: testLogger(tb), Registerer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, l) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			serveErr = <-done
		})
		return serveErr
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Serve: %v", err)
		}
		_ = r.Close()
	})
	return &served{Router: r, url: "http://" + l.Addr().String(), stop: stop}
}

func testLogger(tb testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newClient is a keep-alive HTTP client closed when the test ends.
func newClient(tb testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// reply is one response as a test sees it.
type reply struct {
	status   int
	revision string
	backend  string
	body     string
	header   http.Header
}

func get(tb testing.TB, c *http.Client, url string) reply {
	tb.Helper()
	rep, err := do(c, http.MethodGet, url, nil)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	return rep
}

func do(c *http.Client, method, url string, body io.Reader) (reply, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return reply{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{
		status:   resp.StatusCode,
		revision: resp.Header.Get(router.RevisionHeader),
		backend:  resp.Header.Get("X-Backend"),
		body:     string(b),
		header:   resp.Header,
	}, nil
}

// load is a bounded request load: workers clients each sending count GETs
// in a closed loop, recording every outcome.
type load struct {
	done    atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []loadResult
}

type loadResult struct {
	start    time.Time
	status   int
	revision string
	backend  string
	err      error
}

func startLoad(tb testing.TB, c *http.Client, url string, workers, count int) *load {
	tb.Helper()
	l := &load{}
	for range workers {
		l.wg.Go(func() {
			for range count {
				start := time.Now()
				rep, err := do(c, http.MethodGet, url, nil)
				l.mu.Lock()
				l.results = append(l.results, loadResult{start: start, status: rep.status, revision: rep.revision, backend: rep.backend, err: err})
				l.mu.Unlock()
				l.done.Add(1)
			}
		})
	}
	tb.Cleanup(l.wg.Wait)
	return l
}

// waitFor waits until n requests of the load completed.
func (l *load) waitFor(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for l.done.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("load stalled at %d requests, want %d", l.done.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// finish waits for the whole load and returns its results.
func (l *load) finish() []loadResult {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.results
}

// failures reports every result that is not a 200.
func failures(results []loadResult) []error {
	var errs []error
	for _, r := range results {
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.status != http.StatusOK:
			errs = append(errs, errors.New("status "+strconv.Itoa(r.status)+" from revision "+r.revision))
		}
	}
	return errs
}

// settle waits until no request is in flight through r and no backend is
// draining, so its counters include every request the test sent.
func settle(tb testing.TB, r *router.Router) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := false
		for _, b := range r.Backends() {
			busy = busy || b.InFlight > 0 || b.Draining
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("requests still in flight: %+v", r.Backends())
		}
		time.Sleep(time.Millisecond)
	}
}

// startDropper listens on loopback and drops every connection once it has
// read a request's headers, without answering: a replica dying mid-request.
func startDropper(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				var got []byte
				for !strings.Contains(string(got), "\r\n\r\n") {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					got = append(got, buf[:n]...)
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // reset, not a clean close
				}
			})
		}
	})
	tb.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}
