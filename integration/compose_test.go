package integration_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestComposeOnEngine brings docker-compose.yaml up on the real engine (NATS,
// the five services and the gateway, each its own container), waits for
// every health check, deploys the demo image through the gateway, and tears
// it all down again.
func TestComposeOnEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: builds images and runs docker-compose")
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		if os.Getenv("OPSUITE_REQUIRE_DOCKER") == "1" {
			t.Fatal("docker-compose is not installed and OPSUITE_REQUIRE_DOCKER=1")
		}
		t.Skip("docker-compose is not installed")
	}
	demoImage := dockerImage(t) // skips or fails when no daemon answers
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The images: opsuite:dev from a static host build, nats:2.15.
	run([]string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", "bin/opsuite-linux-amd64", "./cmd/opsuite")
	run(nil, "docker", "build", "-q", "-t", "opsuite:dev", ".")
	run(nil, "scripts/nats-image.sh")

	env := []string{"OPSUITE_ADMIN_TOKEN=" + adminToken, "DOCKER_GID=" + dockerGID(t)}
	compose := func(args ...string) string {
		return run(env, "docker-compose", append([]string{"-p", "opsuite-compose-test"}, args...)...)
	}
	t.Cleanup(func() {
		cmd := exec.Command("docker-compose", "-p", "opsuite-compose-test", "down", "-v", "--timeout", "20")
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=opsuite.app=shop").Output()
		if f := strings.Fields(string(ids)); len(f) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, f...)...).Run()
		}
	})
	compose("up", "-d", "--no-build")

	// Every container reports healthy.
	ids := strings.Fields(compose("ps", "-q"))
	if len(ids) != 7 {
		t.Fatalf("%d containers, want 7 (NATS, five services, gateway)", len(ids))
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out := run(nil, "docker", append([]string{"inspect", "-f", "{{.Name}} {{.State.Health.Status}}"}, ids...)...)
		if !strings.Contains(out, "starting") && !strings.Contains(out, "unhealthy") {
			t.Logf("containers:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			logs := compose("logs", "--tail", "30")
			t.Fatalf("not all containers healthy within 3 minutes:\n%s\n%s", out, logs)
		}
		time.Sleep(2 * time.Second)
	}

	// The example deploy through the gateway.
	api := "http://127.0.0.1:8080"
	app := fmt.Sprintf(`{"name": "shop", "spec": %s}`, imageAppJSON(demoImage, "v1", ""))
	if code := restJSON(t, "POST", api+"/v1/applications", app, nil); code != http.StatusOK {
		t.Fatalf("create application through the gateway: HTTP %d\n%s", code, compose("logs", "--tail", "30", "gateway", "deployer"))
	}
	r := waitRolloutREST(t, api, deployREST(t, api, imageAppJSON(demoImage, "v1", "")))
	if r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("deploy through compose: %+v\n%s", r, compose("logs", "--tail", "40", "deployer", "healthchecker"))
	}
	if body := getBody(t, envStatusREST(t, api, "shop").Endpoint); body != "v1" {
		t.Fatalf("the deployed app answers %q, want v1", body)
	}
	if code := restJSON(t, "DELETE", api+"/v1/applications/shop?force=true", "", nil); code != http.StatusOK {
		t.Errorf("delete application: HTTP %d", code)
	}
}

// dockerGID is the group owning the Docker socket, which the deployer and
// pipeline-runner containers join.
func dockerGID(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("stat", "-c", "%g", "/var/run/docker.sock").Output()
	if err != nil {
		t.Fatalf("stat docker socket: %v", err)
	}
	return strings.TrimSpace(string(out))
}
