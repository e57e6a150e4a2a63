package healthchecker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// newTestProber returns a prober whose idle connections are closed when the
// test ends.
func newTestProber(tb testing.TB) *prober {
	tb.Helper()
	p := newProber("")
	tb.Cleanup(p.close)
	return p
}

// testHandler serves the endpoints the HTTP probe tests check.
func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d", code)
	})
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Version", "2")
		io.WriteString(w, `{"status": "ok", "items": [1, 2, 3], "db": {"up": true}}`)
	})
	// /echo writes back what the check sent.
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "method=%s host=%s x-test=%s ua=%s body=%s", r.Method, r.Host, r.Header.Get("X-Test"), r.UserAgent(), body)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/status/200", http.StatusFound)
	})
	// /hang never answers; it returns when the client gives up.
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	// /stall sends headers, then stalls the body until the client gives up.
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	return mux
}

func newHTTPServer(tb testing.TB, tls bool) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(testHandler())
	// Failed handshakes are expected; keep them out of the test log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	tb.Cleanup(srv.Close)
	return srv
}

func TestProbeHTTP(t *testing.T) {
	srv := newHTTPServer(t, false)
	tlsSrv := newHTTPServer(t, true)
	p := newTestProber(t)

	tests := []struct {
		name        string
		url         string
		check       func(h *hcv1.HttpCheck)
		timeout     time.Duration // default 5s
		want        hcv1.CheckOutcome
		wantMessage string
		wantDetails map[string]string
	}{
		{name: "200 passes by default", url: srv.URL + "/status/200", want: outPass, wantMessage: "status 200", wantDetails: map[string]string{"status_code": "200"}},
		{name: "204 passes by default", url: srv.URL + "/status/204", want: outPass},
		{name: "399 passes by default", url: srv.URL + "/status/399", want: outPass},
		{name: "400 fails by default", url: srv.URL + "/status/400", want: outFail, wantMessage: "status 400, expected 200-399", wantDetails: map[string]string{"status_code": "400"}},
		{name: "503 fails by default, quoting the body", url: srv.URL + "/status/503", want: outFail, wantMessage: "status 503, expected 200-399: status 503"},
		{
			name: "an expected 404 passes", url: srv.URL + "/status/404", want: outPass,
			check: func(h *hcv1.HttpCheck) { h.ExpectedStatuses = []uint32{404} },
		},
		{
			name: "200 fails when other statuses are expected", url: srv.URL + "/status/200", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.ExpectedStatuses = []uint32{201, 202} },
			wantMessage: "status 200, expected 201, 202",
		},
		{
			name: "method, headers, host and body are sent", url: srv.URL + "/echo", want: outPass,
			check: func(h *hcv1.HttpCheck) {
				h.Method = "post"
				h.Headers = map[string]string{"X-Test": "yes", "Host": "example.test"}
				h.Body = "ping"
				h.BodyContains = "method=POST host=example.test x-test=yes ua=opsuite-healthchecker body=ping"
			},
		},
		{
			name: "body_contains matches", url: srv.URL + "/json", want: outPass,
			check: func(h *hcv1.HttpCheck) { h.BodyContains = `"status": "ok"` },
		},
		{
			name: "body_contains misses", url: srv.URL + "/json", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.BodyContains = "degraded" },
			wantMessage: `body does not contain "degraded"`,
		},
		{
			name: "body_regex matches", url: srv.URL + "/json", want: outPass,
			check: func(h *hcv1.HttpCheck) { h.BodyRegex = `"items":\s*\[1,` },
		},
		{
			name: "body_regex misses", url: srv.URL + "/json", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.BodyRegex = `^\[` },
			wantMessage: "body does not match /^\\[/",
		},
		{
			name: "condition on json and status holds", url: srv.URL + "/json", want: outPass,
			check: func(h *hcv1.HttpCheck) {
				h.Condition = `status == 200 && json.status == "ok" && json.db.up && size(json.items) == 3`
			},
		},
		{
			name: "condition on headers holds", url: srv.URL + "/json", want: outPass,
			check: func(h *hcv1.HttpCheck) {
				h.Condition = `headers["x-version"] == "2" && headers["content-type"].startsWith("application/json")`
			},
		},
		{
			name: "condition on body holds", url: srv.URL + "/json", want: outPass,
			check: func(h *hcv1.HttpCheck) { h.Condition = `body.contains("items")` },
		},
		{
			name: "false condition fails", url: srv.URL + "/json", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.Condition = `json.status == "down"` },
			wantMessage: `condition "json.status == \"down\"" is false`,
		},
		{
			name: "condition on a missing json field fails", url: srv.URL + "/json", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.Condition = `json.missing == 1` },
			wantMessage: "condition:",
		},
		{
			name: "condition on json of a non-json body fails", url: srv.URL + "/status/200", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.Condition = `json.status == "ok"` },
			wantMessage: "condition:",
		},
		{
			name: "max_latency exceeded warns", url: srv.URL + "/status/200", want: outWarn,
			check:       func(h *hcv1.HttpCheck) { h.MaxLatency = pbDur(time.Nanosecond) },
			wantMessage: "over max latency 1ns",
		},
		{
			name: "max_latency met passes", url: srv.URL + "/status/200", want: outPass,
			check: func(h *hcv1.HttpCheck) { h.MaxLatency = pbDur(time.Minute) },
		},
		{
			name: "redirect not followed by default", url: srv.URL + "/redirect", want: outPass,
			wantMessage: "status 302",
		},
		{
			name: "redirect not followed fails an exact status", url: srv.URL + "/redirect", want: outFail,
			check:       func(h *hcv1.HttpCheck) { h.ExpectedStatuses = []uint32{200} },
			wantMessage: "status 302, expected 200",
		},
		{
			name: "redirect followed", url: srv.URL + "/redirect", want: outPass,
			check: func(h *hcv1.HttpCheck) {
				h.FollowRedirects = true
				h.ExpectedStatuses = []uint32{200}
				h.BodyContains = "status 200"
			},
		},
		{
			name: "timeout waiting for headers", url: srv.URL + "/hang", want: outFail,
			timeout: 100 * time.Millisecond, wantMessage: "timed out",
		},
		{
			name: "timeout reading the body", url: srv.URL + "/stall", want: outFail,
			check:   func(h *hcv1.HttpCheck) { h.BodyContains = "partial" },
			timeout: 100 * time.Millisecond, wantMessage: "read body: timed out",
		},
		{
			name: "connection refused", url: "http://" + closedLoopbackAddr(t) + "/", want: outFail,
			wantMessage: "refused",
		},
		{
			name: "TLS with an untrusted certificate fails", url: tlsSrv.URL + "/status/200", want: outFail,
			wantMessage: "certificate",
		},
		{
			name: "TLS with skip verify passes and reports the expiry", url: tlsSrv.URL + "/status/200", want: outPass,
			check: func(h *hcv1.HttpCheck) { h.TlsSkipVerify = true },
		},
		{
			name: "TLS certificate inside the expiry warning window warns", url: tlsSrv.URL + "/status/200", want: outWarn,
			check: func(h *hcv1.HttpCheck) {
				h.TlsSkipVerify = true
				h.TlsExpiryWarning = pbDur(200 * 365 * 24 * time.Hour)
			},
			wantMessage: "certificate expires in",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := testHTTPTarget("web", tt.url)
			if tt.check != nil {
				tt.check(target.GetHttp())
			}
			cc := mustNormalize(t, target)
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()

			start := time.Now()
			res := p.probeHTTP(ctx, target.GetHttp(), cc)
			elapsed := time.Since(start)

			if res.GetOutcome() != tt.want {
				t.Fatalf("outcome %s (%q), want %s", res.GetOutcome(), res.GetMessage(), tt.want)
			}
			assertContains(t, "message", res.GetMessage(), tt.wantMessage)
			for k, v := range tt.wantDetails {
				if got := res.GetDetails()[k]; got != v {
					t.Errorf("details[%s] = %q, want %q", k, got, v)
				}
			}
			if res.GetTime() == nil || res.GetResponseTime() == nil {
				t.Errorf("result lacks time or response_time: %v", res)
			}
			if rt := res.GetResponseTime().AsDuration(); rt < 0 || rt > elapsed {
				t.Errorf("response_time %s outside [0, %s]", rt, elapsed)
			}
			if tt.timeout > 0 && elapsed > tt.timeout+2*time.Second {
				t.Errorf("check took %s with a %s timeout", elapsed, tt.timeout)
			}
			if strings.HasPrefix(tt.url, tlsSrv.URL) && res.GetOutcome() != outFail {
				if _, err := time.Parse(time.RFC3339, res.GetDetails()["cert_expiry"]); err != nil {
					t.Errorf("details[cert_expiry] = %q: %v", res.GetDetails()["cert_expiry"], err)
				}
			}
		})
	}
}

func TestProbeTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })

	tests := []struct {
		name        string
		addr        string
		want        hcv1.CheckOutcome
		wantMessage string
	}{
		{name: "listening port", addr: l.Addr().String(), want: outPass, wantMessage: "connected to " + l.Addr().String()},
		{name: "closed port", addr: closedLoopbackAddr(t), want: outFail, wantMessage: "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res := probeTCP(ctx, &hcv1.TcpCheck{Address: tt.addr})
			if res.GetOutcome() != tt.want {
				t.Fatalf("outcome %s (%q), want %s", res.GetOutcome(), res.GetMessage(), tt.want)
			}
			assertContains(t, "message", res.GetMessage(), tt.wantMessage)
		})
	}
}

// newHealthServer serves grpc.health.v1 on a loopback port with the given
// per-service statuses.
func newHealthServer(tb testing.TB, statuses map[string]healthpb.HealthCheckResponse_ServingStatus) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	for svc, st := range statuses {
		hs.SetServingStatus(svc, st)
	}
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	tb.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			tb.Errorf("grpc serve: %v", err)
		}
	})
	return l.Addr().String()
}

func newTestGRPCConn(tb testing.TB, g *hcv1.GrpcCheck) *grpc.ClientConn {
	tb.Helper()
	conn, err := newGRPCConn(g)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestProbeGRPC(t *testing.T) {
	addr := newHealthServer(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"api":     healthpb.HealthCheckResponse_SERVING,
		"billing": healthpb.HealthCheckResponse_NOT_SERVING,
	})
	down := closedLoopbackAddr(t)

	tests := []struct {
		name        string
		addr        string
		service     string
		want        hcv1.CheckOutcome
		wantMessage string
		wantStatus  string
	}{
		{name: "serving service", addr: addr, service: "api", want: outPass, wantMessage: "SERVING", wantStatus: "SERVING"},
		{name: "whole server", addr: addr, service: "", want: outPass, wantStatus: "SERVING"},
		{name: "not serving service", addr: addr, service: "billing", want: outFail, wantMessage: "serving status NOT_SERVING", wantStatus: "NOT_SERVING"},
		{name: "unknown service", addr: addr, service: "nope", want: outFail, wantMessage: "NotFound"},
		{name: "no server", addr: down, service: "api", want: outFail, wantMessage: "health check RPC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &hcv1.GrpcCheck{Address: tt.addr, Service: tt.service}
			conn := newTestGRPCConn(t, g)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res := probeGRPC(ctx, conn, g)
			if res.GetOutcome() != tt.want {
				t.Fatalf("outcome %s (%q), want %s", res.GetOutcome(), res.GetMessage(), tt.want)
			}
			assertContains(t, "message", res.GetMessage(), tt.wantMessage)
			if got := res.GetDetails()["serving_status"]; got != tt.wantStatus {
				t.Errorf("details[serving_status] = %q, want %q", got, tt.wantStatus)
			}
		})
	}
}

func TestProbeExec(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name        string
		argv        []string
		env         map[string]string
		workingDir  string
		want        hcv1.CheckOutcome
		wantMessage string
		wantDetails map[string]string
	}{
		{
			name: "exit 0 passes", argv: []string{"sh", "-c", "exit 0"}, want: outPass,
			wantMessage: "exit 0", wantDetails: map[string]string{"exit_code": "0"},
		},
		{
			name: "output is the message", argv: []string{"sh", "-c", "echo all good; echo second line"}, want: outPass,
			wantMessage: "all good", wantDetails: map[string]string{"output": "all good\nsecond line"},
		},
		{
			name: "exit 1 warns", argv: []string{"sh", "-c", "echo disk 85% full; exit 1"}, want: outWarn,
			wantMessage: "disk 85% full", wantDetails: map[string]string{"exit_code": "1", "output": "disk 85% full"},
		},
		{
			name: "exit 3 fails", argv: []string{"sh", "-c", "echo broken >&2; exit 3"}, want: outFail,
			wantMessage: "exit 3: broken", wantDetails: map[string]string{"exit_code": "3", "output": "broken"},
		},
		{
			name: "arguments are passed without a shell", argv: []string{"sh", "-c", `printf '%s|' "$@"`, "sh", "a b", "$HOME", ";"}, want: outPass,
			wantDetails: map[string]string{"output": "a b|$HOME|;|"},
		},
		{
			name: "env is added", argv: []string{"sh", "-c", `echo "$HC_TEST_VAR"`}, env: map[string]string{"HC_TEST_VAR": "from env"}, want: outPass,
			wantDetails: map[string]string{"output": "from env"},
		},
		{
			name: "working dir is used", argv: []string{"sh", "-c", "pwd -P"}, workingDir: dir, want: outPass,
			wantDetails: map[string]string{"output": realPath(t, dir)},
		},
		{
			name: "missing program fails to start", argv: []string{filepath.Join(dir, "no-such-program")}, want: outFail,
			wantMessage: "start:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res := probeExec(ctx, &hcv1.ExecCheck{Argv: tt.argv, Env: tt.env, WorkingDir: tt.workingDir})
			if res.GetOutcome() != tt.want {
				t.Fatalf("outcome %s (%q), want %s", res.GetOutcome(), res.GetMessage(), tt.want)
			}
			assertContains(t, "message", res.GetMessage(), tt.wantMessage)
			for k, v := range tt.wantDetails {
				if got := res.GetDetails()[k]; got != v {
					t.Errorf("details[%s] = %q, want %q", k, got, v)
				}
			}
			if out := res.GetDetails()["output"]; len(out) > maxExecOutput {
				t.Errorf("output is %d bytes, more than %d", len(out), maxExecOutput)
			}
		})
	}
}

func TestProbeExecOutputTail(t *testing.T) {
	script := "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"
	res := probeExec(t.Context(), &hcv1.ExecCheck{Argv: []string{"sh", "-c", script}})
	out := res.GetDetails()["output"]
	if !strings.HasSuffix(out, "line-1999") || strings.Contains(out, "line-0\n") {
		t.Errorf("output should keep the tail of what was written, got %d bytes ending %q", len(out), out[max(0, len(out)-20):])
	}
}

// TestProbeExecTimeoutKillsProcessGroup checks that a timed-out exec check
// returns promptly and kills what the program started, not only the program.
func TestProbeExecTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	script := `sleep 30 & echo $! > "$1"; wait`
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()

	start := time.Now()
	res := probeExec(ctx, &hcv1.ExecCheck{Argv: []string{"sh", "-c", script, "sh", pidFile}})
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("timed-out check took %s", elapsed)
	}
	if res.GetOutcome() != outFail {
		t.Fatalf("outcome %s (%q), want FAIL", res.GetOutcome(), res.GetMessage())
	}
	assertContains(t, "message", res.GetMessage(), "timed out")

	waitProcessGone(t, readPid(t, pidFile), 3*time.Second)
}

// TestProbeExecLeftoverChild checks a program that exits 0 but leaves a
// background child holding its output: the check is judged by the exit code
// and does not leave the child running.
func TestProbeExecLeftoverChild(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	script := `sleep 30 & echo $! > "$1"; echo started; exit 0`
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	start := time.Now()
	res := probeExec(ctx, &hcv1.ExecCheck{Argv: []string{"sh", "-c", script, "sh", pidFile}})
	elapsed := time.Since(start)
	pid := readPid(t, pidFile)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

	if elapsed > 3*time.Second {
		t.Errorf("check took %s", elapsed)
	}
	if res.GetOutcome() != outPass {
		t.Errorf("outcome %s (%q), want PASS: the program exited 0", res.GetOutcome(), res.GetMessage())
	}
	waitProcessGone(t, pid, 3*time.Second)
}

func readPid(tb testing.TB, file string) int {
	tb.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		tb.Fatalf("the script did not record its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		tb.Fatalf("pid file %q: %v", data, err)
	}
	return pid
}

// waitProcessGone polls until pid no longer runs, failing (and killing it)
// after d. A zombie awaiting its reaper counts as gone: it runs nothing.
func waitProcessGone(tb testing.TB, pid int, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		if !processRunning(pid) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			tb.Fatalf("child process %d still runs %s after the check returned", pid, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func processRunning(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

func realPath(tb testing.TB, p string) string {
	tb.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
