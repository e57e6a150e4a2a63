package docker_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/docker"
)

// faultProxy forwards the Engine API from a loopback port to the real
// daemon's socket and breaks chosen calls the way a dying daemon or network
// would: the connection drops, before or after the daemon acted.
type faultProxy struct {
	srv *httptest.Server

	mu     sync.Mutex
	before *regexp.Regexp // drop matching calls without forwarding them
	after  *regexp.Regexp // forward matching calls, then drop the answer
}

func newFaultProxy(tb testing.TB) *faultProxy {
	tb.Helper()
	requireDocker(tb)
	u, err := url.Parse(suite.cli.DaemonHost())
	if err != nil || u.Scheme != "unix" {
		tb.Skipf("the fault proxy needs a daemon on a unix socket, not %s", suite.cli.DaemonHost())
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", u.Path)
		},
	}
	p := &faultProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: "docker"}) },
		Transport:     transport,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if p.match(&p.after, resp.Request.URL.Path) {
				return errors.New("fault proxy: answer dropped")
			}
			return nil
		},
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) },
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.match(&p.before, r.URL.Path) {
			panic(http.ErrAbortHandler) // closes the connection unanswered
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(func() {
		p.srv.Close()
		transport.CloseIdleConnections()
	})
	return p
}

func (p *faultProxy) host() string { return "tcp://" + p.srv.Listener.Addr().String() }

func (p *faultProxy) set(before, after string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.before, p.after = nil, nil
	if before != "" {
		p.before = regexp.MustCompile(before)
	}
	if after != "" {
		p.after = regexp.MustCompile(after)
	}
}

func (p *faultProxy) match(re **regexp.Regexp, path string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return *re != nil && (*re).MatchString(path)
}

// TestDaemonUnavailable breaks the connection to the daemon at each step of
// Start: the error wraps ErrUnavailable and no container is left behind,
// even when the daemon created it and only the answer was lost.
func TestDaemonUnavailable(t *testing.T) {
	t.Parallel()
	proxy := newFaultProxy(t)
	d, err := docker.New(context.Background(), docker.Config{Host: proxy.host()}, testLogger(t))
	if err != nil {
		t.Fatalf("New through the proxy: %v", err)
	}
	t.Cleanup(func() { d.Close() })

	tests := []struct {
		name          string
		before, after string
	}{
		{name: "create dropped", before: `/containers/create$`},
		{name: "create answer lost", after: `/containers/create$`},
		{name: "start dropped", before: `/containers/[^/]+/start$`},
		{name: "start answer lost", after: `/containers/[^/]+/start$`},
		{name: "inspect dropped", before: `/containers/[^/]+/json$`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec("unavail" + string(rune('a'+i)))
			removeAfter(t, spec.ID)
			proxy.set(tt.before, tt.after)
			_, err := d.Start(context.Background(), spec)
			proxy.set("", "")
			if !errors.Is(err, driver.ErrUnavailable) {
				t.Fatalf("Start = %v, want ErrUnavailable", err)
			}
			t.Logf("Start: %v", err)
			assertGone(t, spec.ID)
		})
	}

	t.Run("daemon gone", func(t *testing.T) {
		spec := testSpec("unavail-gone")
		removeAfter(t, spec.ID)
		start(t, d, spec)
		proxy.set(`.`, "")
		ctx := context.Background()
		_, err := d.Inspect(ctx, spec.ID)
		checkUnavailable(t, "Inspect", err)
		_, err = d.List(ctx, nil)
		checkUnavailable(t, "List", err)
		checkUnavailable(t, "Logs", d.Logs(ctx, spec.ID, driver.LogOptions{}, newLines()))
		checkUnavailable(t, "Stop", d.Stop(ctx, spec.ID, time.Second))
		_, err = d.Start(ctx, testSpec("unavail-gone2"))
		checkUnavailable(t, "Start", err)
		proxy.set("", "")
		if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
			t.Fatalf("Stop once the daemon is back: %v", err)
		}
		assertGone(t, spec.ID)
		assertGone(t, "t"+suite.run+"-unavail-gone2")
	})
}

func checkUnavailable(tb testing.TB, what string, err error) {
	tb.Helper()
	if !errors.Is(err, driver.ErrUnavailable) {
		tb.Errorf("%s = %v, want ErrUnavailable", what, err)
	} else if !strings.Contains(err.Error(), what) && !strings.Contains(err.Error(), strings.ToLower(what)) {
		tb.Errorf("%s error %q does not say what failed", what, err)
	}
}

// closedLoopbackAddr returns a loopback address nobody listens on any more.
func closedLoopbackAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	return addr
}
