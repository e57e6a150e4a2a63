package integration_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// lookTool finds an off-the-shelf client. `make test` puts the pinned tools
// on PATH and sets OPSUITE_REQUIRE_TOOLS=1, so there a missing tool fails.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("OPSUITE_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not on PATH; scripts/install-tools.sh installs it", name)
		}
		t.Skipf("%s not on PATH (run through `make test`, which installs the pinned tools)", name)
	}
	return p
}

// TestOffTheShelfClients checks the suite with clients nobody wrote for it:
// grpcurl lists the services by reflection and calls one, grpc_health_probe
// reports SERVING, curl fetches the OpenAPI document.
func TestOffTheShelfClients(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	grpcurl := lookTool(t, "grpcurl")
	probe := lookTool(t, "grpc-health-probe")
	curl := lookTool(t, "curl")

	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	startOpsuite(t, httpAddr, "up", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--nats-listen", "")

	out := run(t, grpcurl, "-plaintext", grpcAddr, "list")
	for _, svc := range []string{"opsuite.healthchecker.v1.HealthCheckerService", "opsuite.deployer.v1.DeployerService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(out, svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, out)
		}
	}
	out = run(t, grpcurl, "-plaintext", "-H", "authorization: Bearer "+adminToken, "-d", `{"target":{"name":"db","tcp":{"address":"127.0.0.1:9"}}}`, grpcAddr, "opsuite.healthchecker.v1.HealthCheckerService/CreateTarget")
	if !strings.Contains(out, `"name": "db"`) {
		t.Errorf("grpcurl CreateTarget answered:\n%s", out)
	}
	out = run(t, grpcurl, "-plaintext", "-H", "authorization: Bearer "+adminToken, grpcAddr, "describe", "opsuite.healthchecker.v1.Target")
	if !strings.Contains(out, "failure_threshold") {
		t.Errorf("grpcurl describe lacks fields:\n%s", out)
	}

	out = run(t, probe, "-addr", grpcAddr)
	if !strings.Contains(out, "SERVING") {
		t.Errorf("grpc-health-probe: %s", out)
	}
	out = run(t, probe, "-addr", grpcAddr, "-service", "opsuite.healthchecker.v1.HealthCheckerService")
	if !strings.Contains(out, "SERVING") {
		t.Errorf("grpc-health-probe for the service: %s", out)
	}

	out = run(t, curl, "-fsS", "http://"+httpAddr+"/openapi.json")
	var doc struct {
		Swagger string         `json:"swagger"`
		Info    map[string]any `json:"info"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("OpenAPI document is not JSON: %v", err)
	}
	// Every service runs in `opsuite up`, so every service's routes are there.
	for _, p := range []string{"/v1/targets", "/v1/targets/{name}", "/v1/health", "/v1/applications", "/v1/applications/{name}:deploy",
		"/v1/metrics:push", "/v1/pipelines", "/v1/logs", "/v1/tokens", "/v1/report"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("OpenAPI document lacks path %s", p)
		}
	}
	if doc.Info["title"] != "Opsuite API" {
		t.Errorf("OpenAPI title = %v", doc.Info["title"])
	}
	metrics := run(t, curl, "-fsS", "http://"+httpAddr+"/metrics")
	for _, m := range []string{"opsuite_grpc_server_handled_total", "opsuite_healthchecker_targets", "go_goroutines"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
