// Package demoapp builds the demo workload the deployer's tests deploy
// (examples/demoapp: answers its VERSION, can be unhealthy or fail on request),
// as a local binary or as a FROM scratch image, since no registry is
// reachable where the tests run.
package demoapp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver/docker"
)

const pkg = "github.com/opsuite/opsuite/examples/demoapp"

// Build compiles the demo program into dir and returns its path. A static
// build (no cgo) runs in a FROM scratch image.
func Build(dir string, static bool) (string, error) {
	bin := filepath.Join(dir, "demoapp")
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = os.Environ()
	if static {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build demoapp: %w\n%s", err, out)
	}
	return bin, nil
}

// Image builds a FROM scratch image of the demo program with the docker CLI
// and removes it when the test ends. It skips the test when there is no
// docker CLI.
func Image(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		tb.Skip("docker CLI not found")
	}
	dir := tb.TempDir()
	if _, err := Build(dir, true); err != nil {
		tb.Fatal(err)
	}
	dockerfile := "FROM scratch\nCOPY demoapp /demoapp\nENTRYPOINT [\"/demoapp\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o600); err != nil {
		tb.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tag := "opsuite-test/demoapp:" + hex.EncodeToString(b)
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		tb.Fatalf("docker build: %v\n%s", err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

// Docker returns a Docker driver for a test, closed when it ends. Without a
// daemon the test is skipped, or fails when OPSUITE_REQUIRE_DOCKER=1 (CI).
func Docker(tb testing.TB) *docker.Driver {
	tb.Helper()
	d, err := docker.New(context.Background(), docker.Config{PingTimeout: 3 * time.Second}, nil)
	if err != nil {
		if os.Getenv("OPSUITE_REQUIRE_DOCKER") == "1" {
			tb.Fatalf("no Docker daemon answers and OPSUITE_REQUIRE_DOCKER=1: %v", err)
		}
		tb.Skipf("no Docker daemon answers: %v", err)
	}
	tb.Cleanup(func() { _ = d.Close() })
	return d
}
