package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// opsuiteBin is the binary under test and demoBin the workload the deployer
// tests deploy, both built once by TestMain.
var opsuiteBin, demoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "opsuite-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	opsuiteBin = filepath.Join(dir, "opsuite")
	build := exec.Command("go", "build", "-o", opsuiteBin, "../cmd/opsuite")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build opsuite:", err)
		os.Exit(1)
	}
	demoBin = filepath.Join(dir, "demoapp")
	build = exec.Command("go", "build", "-o", demoBin, "../examples/demoapp")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build demoapp:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// syncBuffer is a bytes.Buffer safe for a process writer and test readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running opsuite process.
type proc struct {
	t        testing.TB
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	httpAddr string
	done     chan struct{}
	exitErr  error
}

// adminToken is the bootstrap admin token every test process starts with
// (OPSUITE_ADMIN_TOKEN); restJSON sends it.
const adminToken = "ops_integration-test-admin-token"

// startOpsuite runs the binary with args and waits until /readyz says ready.
func startOpsuite(t testing.TB, httpAddr string, args ...string) *proc {
	t.Helper()
	return startOpsuiteIn(t, "", httpAddr, args...)
}

// startOpsuiteIn is startOpsuite with the process's working directory set
// to dir ("" is the test's own).
func startOpsuiteIn(t testing.TB, dir, httpAddr string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, stdout: &syncBuffer{}, stderr: &syncBuffer{}, httpAddr: httpAddr, done: make(chan struct{})}
	p.cmd = exec.Command(opsuiteBin, append(args, "--http-addr", httpAddr)...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = append(os.Environ(), "OPSUITE_LOG_LEVEL=debug", "OPSUITE_ADMIN_TOKEN="+adminToken, "OPSUITE_SERVICE_TOKEN="+adminToken)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start opsuite: %v", err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("opsuite %v stdout:\n%s\nstderr:\n%s", args, p.stdout, p.stderr)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("opsuite exited early: %v\nstderr:\n%s", p.exitErr, p.stderr)
		default:
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("opsuite not ready within 30s\nstderr:\n%s", p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and requires a clean exit within 10 seconds.
func (p *proc) stop() {
	p.t.Helper()
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("opsuite did not stop within 10s of SIGTERM\nstderr:\n%s", p.stderr)
	}
	if p.exitErr != nil {
		p.t.Fatalf("opsuite exited with %v after SIGTERM\nstderr:\n%s", p.exitErr, p.stderr)
	}
	p.t.Logf("opsuite stopped in %s", time.Since(start).Round(time.Millisecond))
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// restJSON calls the REST API and decodes the JSON answer into out (when
// not nil), returning the HTTP status.
func restJSON(t testing.TB, method, url, body string, out any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: status %d, undecodable body %q: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// startNATS runs an external NATS server with JetStream for split mode,
// the real server from its Go module, on a free loopback port.
func startNATS(t testing.TB) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, ServerName: "external",
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("external NATS not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// restJSONProto is restJSON decoding into a protobuf message the way the
// gateway encodes it.
func restJSONProto(t testing.TB, method, url, body string, out proto.Message) int {
	t.Helper()
	var raw json.RawMessage
	code := restJSON(t, method, url, body, &raw)
	if code == http.StatusOK {
		if err := protojson.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, raw, err)
		}
	}
	return code
}

// tokenCreds sends the admin token on gRPC calls.
type tokenCreds struct{}

func (tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + adminToken}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }
