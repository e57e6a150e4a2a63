package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"go.uber.org/goleak"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/docker"
)

// labelRun marks everything one test run creates, so TestMain can sweep
// what a failed test left behind.
const labelRun = "opsuite.test.run"

// suite is what TestMain prepares for the tests.
var suite struct {
	run   string         // random, makes names unique per test process
	cli   *client.Client // for checks and cleanup behind the driver's back
	image string         // the demo image, FROM scratch
	// dockerErr says why no daemon answers; tests skip or fail on it.
	dockerErr error
}

func TestMain(m *testing.M) {
	code := runTests(m)
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// runTests prepares the daemon's side (the demo image), runs the tests and
// sweeps what they left.
func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // unit tests only: no daemon, no image
	}
	suite.run = randomHex(4)

	cli, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
		if err != nil {
			cli.Close()
		}
	}
	if err != nil {
		suite.dockerErr = err
		return m.Run()
	}
	suite.cli = cli
	defer cli.Close()

	suite.image = "opsuite-test/demo:" + suite.run
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err = buildImage(ctx, cli, suite.image)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build the demo image: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "built %s in %s\n", suite.image, time.Since(begin).Round(time.Millisecond))

	code := m.Run()

	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sweep(ctx, cli); err != nil {
		fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
		code = 1
	}
	return code
}

// buildImage compiles testdata/demo statically and builds a FROM scratch
// image of it through the Engine API, from a tar context made here.
func buildImage(ctx context.Context, cli *client.Client, tag string) error {
	dir, err := os.MkdirTemp("", "opsuite-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "demo")
	// go test puts its own toolchain first on PATH.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/demo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./testdata/demo: %w\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}

	var buildContext bytes.Buffer
	tw := tar.NewWriter(&buildContext)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY demo /demo\nEXPOSE 8080\nENTRYPOINT [\"/demo\"]\n")},
		{"demo", 0o755, binary},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}

	res, err := cli.ImageBuild(ctx, &buildContext, client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{labelRun: suite.run},
	})
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	defer res.Body.Close()
	// The build reports failures inside its JSON message stream.
	dec := json.NewDecoder(res.Body)
	var log strings.Builder
	for {
		var msg struct {
			Stream string
			Error  string
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("image build: read progress: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("image build: %s\n%s", msg.Error, log.String())
		}
		log.WriteString(msg.Stream)
	}
	if _, err := cli.ImageInspect(ctx, tag); err != nil {
		return fmt.Errorf("image build: %s is missing afterwards: %w\n%s", tag, err, log.String())
	}
	return nil
}

// sweep removes whatever this run left: containers (which t.Cleanup should
// already have removed), volumes, and the demo image.
func sweep(ctx context.Context, cli *client.Client) error {
	var errs []error
	filter := make(client.Filters).Add("label", labelRun+"="+suite.run)
	res, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	errs = append(errs, err)
	for _, c := range res.Items {
		errs = append(errs, fmt.Errorf("container %v left behind by a test", c.Names))
		_, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		errs = append(errs, err)
	}
	_, err = cli.ImageRemove(ctx, suite.image, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	errs = append(errs, err)
	return errors.Join(errs...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var loopbackAddr = netip.MustParseAddr("127.0.0.1")

// requireDocker skips the test with -short, and when no daemon answers
// unless CI asks for Docker with OPSUITE_REQUIRE_DOCKER=1: then it fails.
func requireDocker(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test against the Docker daemon; skipped with -short")
	}
	if suite.dockerErr == nil {
		return
	}
	if os.Getenv("OPSUITE_REQUIRE_DOCKER") == "1" {
		tb.Fatalf("OPSUITE_REQUIRE_DOCKER=1 but no Docker daemon answers: %v", suite.dockerErr)
	}
	tb.Skipf("no Docker daemon answers (%v); set OPSUITE_REQUIRE_DOCKER=1 to make this a failure", suite.dockerErr)
}

// newDriver returns a driver on the test daemon, closed when the test ends.
func newDriver(tb testing.TB) *docker.Driver {
	tb.Helper()
	requireDocker(tb)
	d, err := docker.New(context.Background(), docker.Config{}, testLogger(tb))
	if err != nil {
		tb.Fatalf("docker.New: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// testLogger logs through tb: at debug level in tests, where it shows only
// on failure or -v, and from warnings up in benchmarks, which always show.
func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelDebug
	if _, ok := tb.(*testing.B); ok {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: level}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// testSpec is a spec for the demo image, unique to this run and name.
func testSpec(name string) driver.Spec {
	return driver.Spec{
		ID:              "t" + suite.run + "-" + name,
		App:             "app" + suite.run + "-" + name,
		Environment:     "test",
		Revision:        1,
		Image:           suite.image,
		Ports:           []driver.Port{{Name: "http", ContainerPort: 8080}},
		Labels:          map[string]string{labelRun: suite.run},
		StopGracePeriod: 5 * time.Second,
	}
}

// removeAfter force-removes the container named id when the test ends,
// whatever the driver did.
func removeAfter(tb testing.TB, id string) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := suite.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("remove container %s: %v", id, err)
		}
	})
}

// start starts spec on d and fails the test on error; the container is
// removed when the test ends.
func start(tb testing.TB, d driver.Driver, spec driver.Spec) driver.Replica {
	tb.Helper()
	removeAfter(tb, spec.ID)
	r, err := d.Start(context.Background(), spec)
	if err != nil {
		tb.Fatalf("Start(%s): %v", spec.ID, err)
	}
	return r
}

// assertGone fails unless no container named id exists.
func assertGone(tb testing.TB, id string) {
	tb.Helper()
	_, err := suite.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err == nil {
		tb.Errorf("container %s still exists", id)
	} else if !cerrdefs.IsNotFound(err) {
		tb.Errorf("inspect container %s: %v", id, err)
	}
}

// binding returns the replica's binding named name.
func binding(tb testing.TB, r driver.Replica, name string) driver.Binding {
	tb.Helper()
	for _, b := range r.Bindings {
		if b.Name == name {
			return b
		}
	}
	tb.Fatalf("replica %s has no binding %q: %+v", r.ID, name, r.Bindings)
	return driver.Binding{}
}

// get fetches path from the binding, retrying while the program starts.
func get(tb testing.TB, b driver.Binding, path string) string {
	tb.Helper()
	url := fmt.Sprintf("http://%s:%d%s", b.HostIP, b.HostPort, path)
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := fetch(url)
		if err == nil {
			return body
		}
		if time.Now().After(deadline) {
			tb.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpClient keeps no idle connections, so none outlive the tests.
var httpClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func fetch(url string) (string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return string(body), nil
}

// eventually polls cond until it holds or timeout passes; cond says what
// it saw, for the failure message.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s; last saw %s", what, timeout, saw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
