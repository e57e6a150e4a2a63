package integration_test

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRefusesBadConfiguration starts the binary with settings that cannot
// work: it must exit non-zero at once with a message naming the setting.
func TestRefusesBadConfiguration(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs the opsuite binary")
	}
	busy := freeAddr(t)
	startOpsuite(t, busy, "up", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--nats-listen", "")
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"bad grpc address", []string{"up", "--grpc-addr", "nowhere"}, nil, "grpc address"},
		{"bad http address from env", []string{"up"}, []string{"OPSUITE_HTTP_ADDR=nowhere"}, "http address"},
		{"bad duration from env", []string{"up"}, []string{"OPSUITE_SHUTDOWN_TIMEOUT=soon"}, "OPSUITE_SHUTDOWN_TIMEOUT"},
		{"unknown target", []string{"serve", "--target", "frontend"}, nil, `target "frontend"`},
		{"gateway alone without a health-checker address", []string{"serve", "--target", "gateway"}, nil, "--healthchecker-addr"},
		{"bad log level", []string{"up", "--log-level", "loud"}, nil, "--log-level"},
		{"port in use", []string{"up", "--http-addr", busy, "--nats-listen", ""}, nil, "address already in use"},
		{"unknown flag", []string{"up", "--colour"}, nil, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args, "--data-dir", t.TempDir())
			if tc.args[0] == "up" && !slices.Contains(tc.args, "--grpc-addr") {
				args = append(args, "--grpc-addr", freeAddr(t))
			}
			if !slices.Contains(tc.args, "--http-addr") && !envHas(tc.env, "OPSUITE_HTTP_ADDR") {
				args = append(args, "--http-addr", freeAddr(t))
			}
			cmd := exec.Command(opsuiteBin, args...)
			cmd.Env = append(os.Environ(), tc.env...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() {
				out, err = cmd.CombinedOutput()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("did not exit within 20s")
			}
			if err == nil {
				t.Fatalf("exited 0; output:\n%s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output does not mention %q:\n%s", tc.want, out)
			}
		})
	}
}

func envHas(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}
