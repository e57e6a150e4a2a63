package integration_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dockerImage builds the demo workload as a FROM scratch image (no registry
// is reachable here) and removes it when the test ends. Without a daemon the
// test is skipped, or fails when OPSUITE_REQUIRE_DOCKER=1 (CI).
func dockerImage(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		if os.Getenv("OPSUITE_REQUIRE_DOCKER") == "1" {
			t.Fatalf("no Docker daemon answers and OPSUITE_REQUIRE_DOCKER=1: %v: %s", err, out)
		}
		t.Skipf("no Docker daemon answers: %v", err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "demoapp"), "../examples/demoapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static demoapp: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY demoapp /demoapp\nENTRYPOINT [\"/demoapp\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tag := "opsuite-it/demoapp:" + hex.EncodeToString(b)
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

func imageAppJSON(image, version, extraEnv string) string {
	return fmt.Sprintf(`{
	  "image": %q,
	  "env": [{"name": "VERSION", "value": %q}, {"name": "PORT", "value": "8080"}, {"name": "BIND", "value": "0.0.0.0"}%s],
	  "ports": [{"name": "http", "container_port": 8080}],
	  "replicas": 2,
	  "health_check": {"http": {"path": "/healthz"}, "interval": "0.2s", "failure_threshold": 2},
	  "stop_grace_period": "2s",
	  "strategy": {"canary": {"steps": [{"set_weight": {"weight": 50}}, {"pause": {"duration": "3s"}}]}},
	  "progress_deadline": "60s",
	  "rollback_policy": {"verification_window": "0s"}
	}`, image, version, extraEnv)
}

// containersByRevision counts the application's containers per revision label.
func containersByRevision(t *testing.T, app string) map[string]int {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=opsuite.app="+app, "--format", `{{.Label "opsuite.revision"}}`).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	got := map[string]int{}
	for _, rev := range strings.Fields(string(out)) {
		got[rev]++
	}
	return got
}

// TestDeployerOnDockerSurvivesSIGKILL deploys the demo image through the
// gateway with the Docker driver, kills the whole suite with SIGKILL in the
// middle of a canary, and checks the rollout finishes after a restart with
// exactly the wanted containers (none orphaned, none doubled); then a broken
// revision is rolled back saying why, and a manual rollback returns to v1.
func TestDeployerOnDockerSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary and containers")
	}
	image := dockerImage(t)
	httpAddr, dataDir := freeAddr(t), t.TempDir()
	args := []string{"up", "--data-dir", dataDir, "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "on"}
	p := startOpsuite(t, httpAddr, args...)
	t.Cleanup(func() {
		q := startOpsuite(t, httpAddr, args...)
		restJSON(t, "DELETE", "http://"+httpAddr+"/v1/applications/shop?force=true", "", nil)
		q.stop()
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=opsuite.app=shop").Output()
		if f := strings.Fields(string(ids)); len(f) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, f...)...).Run()
		}
	})
	api := "http://" + httpAddr
	if code := restJSON(t, "POST", api+"/v1/applications", `{"name":"shop","spec":`+imageAppJSON(image, "v1", "")+`}`, nil); code != http.StatusOK {
		t.Fatalf("create application: HTTP %d", code)
	}
	if r := waitRolloutREST(t, api, deployREST(t, api, imageAppJSON(image, "v1", ""))); r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("v1: %+v", r)
	}
	id := deployREST(t, api, imageAppJSON(image, "v2", ""))
	time.Sleep(1500 * time.Millisecond) // inside the 3s pause at 50%
	p.kill()
	p = startOpsuite(t, httpAddr, args...)
	if r := waitRolloutREST(t, api, id); r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("v2 across a SIGKILL: %+v", r)
	}
	if got := containersByRevision(t, "shop"); len(got) != 1 || got["2"] != 2 {
		t.Fatalf("containers by revision after the restart: %v, want exactly 2 of revision 2", got)
	}
	endpoint := envStatusREST(t, api, "shop").Endpoint
	if got := getBody(t, endpoint); got != "v2" {
		t.Fatalf("serves %q, want v2", got)
	}

	r := waitRolloutREST(t, api, deployREST(t, api, imageAppJSON(image, "v3", `, {"name": "UNHEALTHY", "value": "1"}`)))
	if r.Phase != "ROLLOUT_PHASE_ROLLED_BACK" || !strings.Contains(r.Message, "unhealthy on purpose") {
		t.Fatalf("broken v3: %+v; want rolled back, saying why", r)
	}
	if got := containersByRevision(t, "shop"); len(got) != 1 || got["2"] != 2 {
		t.Fatalf("containers after rolling back v3: %v", got)
	}

	var rb struct {
		Rollout rolloutView `json:"rollout"`
	}
	if code := restJSON(t, "POST", api+"/v1/applications/shop:rollback", `{"revision": 1}`, &rb); code != http.StatusOK {
		t.Fatalf("rollback: HTTP %d", code)
	}
	if r := waitRolloutREST(t, api, rb.Rollout.ID); r.Phase != "ROLLOUT_PHASE_SUCCEEDED" || r.ToRevision != 1 {
		t.Fatalf("manual rollback: %+v", r)
	}
	if got := getBody(t, endpoint); got != "v1" {
		t.Fatalf("after the rollback serves %q, want v1", got)
	}
	p.stop()
}
