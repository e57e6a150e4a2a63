package integration_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoRunsEndToEnd is the README's first command in miniature: `opsuite
// up --demo` builds and tests the demo app with the bundled pipeline,
// deploys v1 and then a v2 canary under traffic, gates on health and prints
// a report whose sections are filled.
func TestDemoRunsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs the demo (builds the demo app)")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	p := startOpsuiteIn(t, repo, httpAddr, "up", "--demo", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "off")
	t.Cleanup(func() {
		restJSON(t, "DELETE", "http://"+httpAddr+"/v1/applications/demo?force=true", "", nil)
		p.stop()
	})
	// The pipeline compiles and tests the demo app twice: minutes on a busy
	// machine.
	deadline := time.Now().Add(10 * time.Minute)
	for !strings.Contains(p.stdout.String(), "== dashboard:") && !strings.Contains(p.stdout.String(), "== demo failed") {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not finish within 10 minutes:\n%s", p.stdout)
		}
		time.Sleep(500 * time.Millisecond)
	}
	out := p.stdout.String()
	if strings.Contains(out, "== demo failed") {
		t.Fatalf("demo failed:\n%s", out)
	}
	for _, want := range []string{
		"run #1 success", "run #2 success", "(rollout", "succeeded)",
		"# Deployment report", "Overall health: HEALTHY",
		"## Recent rollouts\n\n| application", "| demo | default | 1 → 2 | canary | SUCCEEDED |",
		"## Recent pipeline runs\n\n| pipeline", "| demo | #2 | SUCCESS |",
		"## Metrics\n\n| series",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
