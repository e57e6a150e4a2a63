package healthload

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// serverEnv makes the test binary run as the loopback server process.
	serverEnv = "OPSUITE_HEALTHLOAD_SERVER"
	// portsEnv says how many ports the server process listens on.
	portsEnv = "OPSUITE_HEALTHLOAD_PORTS"
	// serverMaxLife bounds the server process even if its parent never
	// closes its stdin.
	serverMaxLife = 15 * time.Minute
	readyLine     = "ready"
)

// serveLoopback is the server process: it listens on $OPSUITE_HEALTHLOAD_PORTS
// loopback ports with a handler that answers 200, prints one address a line
// and then "ready" to out, and serves until in reaches EOF (the parent closed
// the pipe or died) or serverMaxLife passes.
func serveLoopback(in io.Reader, out io.Writer) error {
	n, err := strconv.Atoi(os.Getenv(portsEnv))
	if err != nil || n < 1 || n > 4096 {
		return fmt.Errorf("%s=%q: want a port count 1-4096", portsEnv, os.Getenv(portsEnv))
	}
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), serverMaxLife)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, in)
		cancel()
	}()

	errLog := &errorLines{w: os.Stderr, keep: 3}
	defer errLog.summary()
	ok := []byte("ok\n")
	srv := &http.Server{
		// Overload makes accept fail for want of descriptors, once a
		// line per port and retry: say so a few times, then count.
		ErrorLog: log.New(errLog, "healthload server: ", log.LstdFlags),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(ok)))
			_, _ = w.Write(ok)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	errs := make(chan error, n)
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("listen: %w", err)
		}
		addrs = append(addrs, l.Addr().String())
		go func() { errs <- srv.Serve(l) }()
	}
	fmt.Fprintf(out, "%s\n%s\n", strings.Join(addrs, "\n"), readyLine)

	select {
	case <-ctx.Done():
	case err := <-errs:
		_ = srv.Close()
		return fmt.Errorf("serve: %w", err)
	}
	_ = srv.Close()
	return nil
}

// errorLines passes the first keep lines written to it on to w and counts
// the rest.
type errorLines struct {
	mu      sync.Mutex
	w       io.Writer
	keep    int
	dropped int
}

func (e *errorLines) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.keep > 0 {
		e.keep--
		return e.w.Write(p)
	}
	e.dropped++
	return len(p), nil
}

func (e *errorLines) summary() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dropped > 0 {
		fmt.Fprintf(e.w, "healthload server: %d more errors not shown\n", e.dropped)
	}
}

// loopbackServers is a running server process seen from the benchmark.
type loopbackServers struct {
	addrs []string
	pid   int
}

// startLoopbackServers re-executes the test binary as a server process with
// n loopback ports and stops it when tb ends.
func startLoopbackServers(tb testing.TB, n int) *loopbackServers {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), serverEnv+"=1", portsEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start server process: %v", err)
	}
	exited := make(chan error, 1)
	tb.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	type scanned struct {
		addrs []string
		err   error
	}
	got := make(chan scanned, 1)
	go func() {
		var s scanned
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == readyLine {
				got <- s
				// Keep reading so the child never blocks on a full pipe.
				_, _ = io.Copy(io.Discard, stdout)
				exited <- cmd.Wait()
				return
			}
			s.addrs = append(s.addrs, sc.Text())
		}
		s.err = errors.Join(errors.New("server process ended before it was ready"), sc.Err())
		got <- s
		exited <- cmd.Wait()
	}()
	select {
	case s := <-got:
		if s.err != nil {
			tb.Fatal(s.err)
		}
		if len(s.addrs) != n {
			tb.Fatalf("server process reported %d addresses, want %d", len(s.addrs), n)
		}
		return &loopbackServers{addrs: s.addrs, pid: cmd.Process.Pid}
	case <-time.After(30 * time.Second):
		tb.Fatal("server process not ready within 30s")
	}
	return nil
}

// raiseFileLimit lifts the soft open-file limit to the hard one and returns it.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit nofile %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

func TestLoopbackServers(t *testing.T) {
	srv := startLoopbackServers(t, 3)
	client := &http.Client{Timeout: 5 * time.Second}
	for _, addr := range srv.addrs {
		resp, err := client.Get("http://" + addr + "/health/0")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Fatalf("%s: got %d %q, want 200 \"ok\\n\"", addr, resp.StatusCode, body)
		}
	}
	if _, err := openMeter(t, srv.pid).serverCPU(); err != nil {
		t.Fatalf("server process CPU: %v", err)
	}
}
