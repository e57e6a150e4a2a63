package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// maxPicks bounds how often a request picks again after finding its
// backend draining (it raced a table swap).
const maxPicks = 3

// statusClientClosed is logged for requests whose client went away.
const statusClientClosed = 499

func newTransport(cfg Config) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// A proxy passes Accept-Encoding through; it must not add its own
		// and decompress behind the client's back.
		DisableCompression: true,
	}
}

func (r *Router) newProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        r.rewrite,
		Transport:      retryTransport{r: r},
		ModifyResponse: r.modifyResponse,
		ErrorHandler:   r.proxyError,
		BufferPool:     &bufferPool{},
		ErrorLog:       slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
}

// reqState is a proxied request's routing state. It is also the request's
// context (a cancellable child of the client's), so the proxy's transport
// finds it without another allocation, and a drain deadline can cancel it.
type reqState struct {
	context.Context
	cancel context.CancelCauseFunc
	// client is the inbound request's context: when it ends, the client
	// went away and the request is no failure of the backend.
	client context.Context
	b      *backend
	// stopCut unregisters the request from its backend's cut signal.
	stopCut func() bool
	// status is what the client got: the backend's status, or the
	// router's when proxyErr is set.
	status   int
	proxyErr bool
}

type stateKey struct{}

func (s *reqState) Value(key any) any {
	if key == (stateKey{}) {
		return s
	}
	return s.Context.Value(key)
}

func stateOf(ctx context.Context) *reqState {
	s, _ := ctx.Value(stateKey{}).(*reqState)
	return s
}

// bind makes b the request's backend: the request is cut when b's drain
// deadline passes.
func (s *reqState) bind(b *backend) {
	s.b = b
	s.stopCut = context.AfterFunc(b.cut, func() { s.cancel(context.Cause(b.cut)) })
}

// ServeHTTP routes one request.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	r.totals.requests.Add(1)
	b := r.acquire(nil)
	if b == nil {
		r.unavailable(w)
		return
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	st := &reqState{Context: ctx, cancel: cancel, client: req.Context()}
	st.bind(b)
	completed := false
	// Deferred so that a response the proxy aborts mid-body (it panics
	// with http.ErrAbortHandler) is still counted and released.
	defer func() { r.finish(st, time.Since(start), completed) }()
	r.proxy.ServeHTTP(w, req.WithContext(st))
	completed = true
}

// acquire picks a backend from the current table and counts the request
// in flight on it; nil when no backend is ready.
func (r *Router) acquire(exclude *backend) *backend {
	for range maxPicks {
		b := r.table.Load().pick(r.cfg.Balancing, exclude)
		if b == nil {
			return nil
		}
		if b.acquire() {
			return b
		}
	}
	return nil
}

// finish releases the request's backend and counts the outcome.
func (r *Router) finish(st *reqState, elapsed time.Duration, completed bool) {
	st.stopCut()
	st.cancel(nil)
	failed := true
	switch {
	case st.status == statusClientClosed:
		failed = false
	case st.proxyErr:
		r.totals.proxyErrors.Add(1)
	case !completed:
		if st.client.Err() != nil {
			failed = false // the client went away mid-body
			break
		}
		r.totals.aborted.Add(1)
	case st.status >= 500:
		r.totals.backend5xx.Add(1)
	default:
		failed = false
	}
	st.b.rev.stats.observe(elapsed, failed)
	// Released last: once nothing is in flight, every request is counted.
	st.b.release()
}

// unavailable answers 503 when no backend is ready.
func (r *Router) unavailable(w http.ResponseWriter) {
	r.totals.noBackend.Add(1)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Retry-After", r.retryAfter)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(r.unavailableBody)
}

// rewrite points the outbound request at the chosen backend, keeping the
// client's Host, path and query verbatim, and sets X-Forwarded-*.
func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.Out.Context())
	if r.cfg.TrustForwardedHeaders {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	if r.cfg.TrustForwardedHeaders {
		for _, k := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := pr.In.Header.Get(k); v != "" {
				pr.Out.Header.Set(k, v)
			}
		}
	}
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.b.addr
	pr.Out.Host = pr.In.Host
	// ReverseProxy drops query parameters it cannot parse; the router makes
	// no decision on them, so they pass untouched.
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
}

func (r *Router) modifyResponse(resp *http.Response) error {
	st := stateOf(resp.Request.Context())
	st.status = resp.StatusCode
	resp.Header.Set(RevisionHeader, st.b.rev.label)
	return nil
}

// proxyError answers a request whose backend gave no response.
func (r *Router) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	st := stateOf(req.Context())
	cause := context.Cause(st)
	var status int
	var msg string
	switch {
	case errors.Is(cause, errDrainDeadline):
		status, msg = http.StatusGatewayTimeout, "the backend was drained before it answered"
	case errors.Is(cause, errRouterClosed):
		status, msg = http.StatusServiceUnavailable, "the router is shutting down"
	case st.client.Err() != nil:
		st.status = statusClientClosed
		w.WriteHeader(statusClientClosed)
		return
	case isDialError(err):
		status, msg = http.StatusBadGateway, "the backend could not be reached"
	case isTimeout(err):
		status, msg = http.StatusGatewayTimeout, "the backend did not answer in time"
	default:
		status, msg = http.StatusBadGateway, "the backend closed the connection before answering"
	}
	st.status, st.proxyErr = status, true
	r.log.Warn("proxy error", "backend", st.b.addr, "revision", st.b.rev.id, "method", req.Method, "path", req.URL.Path, "status", status, "err", err)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set(RevisionHeader, st.b.rev.label)
	w.WriteHeader(status)
	_, _ = w.Write([]byte("opsuite router: application " + r.cfg.App + " revision " + st.b.rev.label + ": " + msg + "\n"))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retryTransport sends a request once more to another backend when the
// connection to the first failed before any response, if that cannot
// run the request twice: the request has no body and either is idempotent
// or never reached the backend (the dial failed).
type retryTransport struct{ r *Router }

func (t retryTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	r := t.r
	resp, err := r.transport.RoundTrip(out)
	for attempt := 0; err != nil && attempt < r.cfg.Retries; attempt++ {
		st := stateOf(out.Context())
		dialFailed := isDialError(err)
		if dialFailed {
			st.b.eject(r.cfg.EjectFor)
		}
		if !retryable(out, dialFailed) {
			break
		}
		next := r.acquire(st.b)
		if next == nil {
			break
		}
		failed := st.b
		st.stopCut()
		failed.release()
		st.bind(next)
		r.totals.retries.Add(1)
		r.log.Debug("retrying on another backend", "failed", failed.addr, "backend", next.addr, "method", out.Method, "path", out.URL.Path, "err", err)
		out = out.Clone(out.Context())
		out.URL.Host = next.addr
		resp, err = r.transport.RoundTrip(out)
	}
	return resp, err
}

// retryable reports whether sending out again cannot run it twice.
func retryable(out *http.Request, dialFailed bool) bool {
	if out.Context().Err() != nil {
		return false
	}
	if out.Body != nil && out.Body != http.NoBody {
		return false
	}
	if dialFailed {
		return true
	}
	switch out.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, hasKey := out.Header["Idempotency-Key"]
	_, hasXKey := out.Header["X-Idempotency-Key"]
	return hasKey || hasXKey
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// bufferPool lends the proxy its copy buffers, instead of one 32 KiB
// allocation per request.
type bufferPool struct{ p sync.Pool }

func (bp *bufferPool) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32<<10)
}

func (bp *bufferPool) Put(b []byte) { bp.p.Put(&b) }
