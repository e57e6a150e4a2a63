//go:build linux

package process_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
	"go.uber.org/goleak"
)

// testApp is the workload built from testdata/testapp in TestMain.
var testApp string

// fakeDeployerEnv makes the test binary act as a deployer that starts the
// replicas in fakeSpecsEnv and then waits to be killed.
const (
	fakeDeployerEnv = "PROCESS_TEST_FAKE_DEPLOYER_DIR"
	fakeSpecsEnv    = "PROCESS_TEST_FAKE_DEPLOYER_SPECS"
	// fakeStopEnv names a replica the fake deployer stops, with a grace
	// period of a minute, once it reported the replicas.
	fakeStopEnv = "PROCESS_TEST_FAKE_DEPLOYER_STOP"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(fakeDeployerEnv); dir != "" {
		fakeDeployer(dir)
		return
	}
	tmp, err := os.MkdirTemp("", "process-driver-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testApp = filepath.Join(tmp, "testapp")
	build := exec.Command("go", "build", "-o", testApp, "./testdata/testapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build testapp:", err)
		_ = os.RemoveAll(tmp)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(tmp)
		os.Exit(code)
	}))
}

// fakeDeployer starts the replicas it is given, reports them as JSON on
// stdout and waits for SIGKILL.
func fakeDeployer(dir string) {
	var specs []driver.Spec
	if err := json.Unmarshal([]byte(os.Getenv(fakeSpecsEnv)), &specs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	d, err := process.New(process.Config{StateDir: dir, PollInterval: 25 * time.Millisecond}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var started []driver.Replica
	for _, s := range specs {
		r, err := d.Start(context.Background(), s)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		started = append(started, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(started); err != nil {
		os.Exit(2)
	}
	for _, r := range started {
		if r.ID == os.Getenv(fakeStopEnv) {
			// Once it answers, it has set up its signal handling.
			for _, err := get(r.Bindings[0], "/healthz"); err != nil; _, err = get(r.Bindings[0], "/healthz") {
				time.Sleep(10 * time.Millisecond)
			}
			_ = d.Stop(context.Background(), r.ID, time.Minute)
		}
	}
	time.Sleep(time.Hour)
}

var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}

// get fetches path from the replica's port b.
func get(b driver.Binding, path string) (string, error) {
	resp, err := client.Get(fmt.Sprintf("http://%s:%d%s", b.HostIP, b.HostPort, path))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(body), nil
}

func mustGet(tb testing.TB, b driver.Binding, path string) string {
	tb.Helper()
	body, err := get(b, path)
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

// waitHTTP waits until the replica answers /healthz on b.
func waitHTTP(tb testing.TB, b driver.Binding) {
	tb.Helper()
	eventually(tb, 5*time.Second, fmt.Sprintf("port %d answers", b.HostPort), func() bool {
		body, err := get(b, "/healthz")
		return err == nil && body == "ok"
	})
}

func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReplica waits until Inspect reports a replica for which ok holds.
func waitReplica(tb testing.TB, d *process.Driver, id, what string, ok func(driver.Replica) bool) driver.Replica {
	tb.Helper()
	var last driver.Replica
	eventually(tb, 10*time.Second, id+" "+what, func() bool {
		r, err := d.Inspect(context.Background(), id)
		if err != nil {
			tb.Fatalf("inspect %s: %v", id, err)
		}
		last = r
		return ok(r)
	})
	return last
}

func testConfig(dir string) process.Config {
	return process.Config{StateDir: dir, PollInterval: 25 * time.Millisecond}
}

// newStateDir returns a state directory whose replicas are all killed when
// the test ends, whatever happened to the drivers using it.
func newStateDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	tb.Cleanup(func() {
		d, err := process.New(testConfig(dir), nil)
		if err != nil {
			tb.Errorf("sweep %s: %v", dir, err)
			return
		}
		defer d.Close()
		rs, err := d.List(context.Background(), nil)
		if err != nil {
			tb.Errorf("sweep %s: %v", dir, err)
		}
		for _, r := range rs {
			if err := d.Stop(context.Background(), r.ID, -1); err != nil {
				tb.Errorf("sweep %s: %v", r.ID, err)
			}
		}
	})
	return dir
}

// newDriver returns a driver on dir, closed when the test ends.
func newDriver(tb testing.TB, dir string) *process.Driver {
	tb.Helper()
	d, err := process.New(testConfig(dir), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Error(err)
		}
	})
	return d
}

// appSpec is a spec running the test app with one port named http.
func appSpec(id string, env map[string]string) driver.Spec {
	return driver.Spec{
		ID:          id,
		App:         "shop",
		Environment: "test",
		Revision:    1,
		Command:     []string{testApp},
		Env:         env,
		Ports:       []driver.Port{{Name: "http", ContainerPort: 8080}},
	}
}

func startApp(tb testing.TB, d *process.Driver, spec driver.Spec) driver.Replica {
	tb.Helper()
	r, err := d.Start(context.Background(), spec)
	if err != nil {
		tb.Fatalf("start %s: %v", spec.ID, err)
	}
	if len(r.Bindings) > 0 {
		waitHTTP(tb, r.Bindings[0])
	}
	return r
}

// running reports whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func pidOf(tb testing.TB, r driver.Replica) int {
	tb.Helper()
	pid, err := strconv.Atoi(r.RuntimeID)
	if err != nil {
		tb.Fatalf("replica %s runtime id %q: %v", r.ID, r.RuntimeID, err)
	}
	return pid
}

// lineWriter records each Write as one line, checking it is one.
type lineWriter struct {
	mu    sync.Mutex
	lines []string
	bad   []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := string(p)
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		w.bad = append(w.bad, s)
	}
	w.lines = append(w.lines, strings.TrimSuffix(s, "\n"))
	return len(p), nil
}

func (w *lineWriter) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) > 0 {
		panic(fmt.Sprintf("writes that are not one line: %q", w.bad))
	}
	return append([]string(nil), w.lines...)
}

func (w *lineWriter) has(line string) bool {
	for _, l := range w.get() {
		if l == line {
			return true
		}
	}
	return false
}

func isNotFound(err error) bool { return errors.Is(err, driver.ErrNotFound) }
