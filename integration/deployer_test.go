package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// appJSON is the demo app (a local process) at a version, checked on /healthz.
func appJSON(version string, extraEnv string) string {
	return fmt.Sprintf(`{
	  "process": {"argv": [%q]},
	  "env": [{"name": "VERSION", "value": %q}%s],
	  "ports": [{"name": "http", "container_port": 8080}],
	  "replicas": 2,
	  "health_check": {"http": {"path": "/healthz"}, "interval": "0.1s", "failure_threshold": 2},
	  "strategy": {"canary": {"steps": [{"set_weight": {"weight": 50}}, {"pause": {"duration": "0.3s"}}]}},
	  "progress_deadline": "30s",
	  "rollback_policy": {"verification_window": "0s"}
	}`, demoBin, version, extraEnv)
}

type rolloutView struct {
	ID           string `json:"id"`
	Phase        string `json:"phase"`
	Message      string `json:"message"`
	FromRevision int    `json:"from_revision"`
	ToRevision   int    `json:"to_revision"`
}

func waitRolloutREST(t *testing.T, api, id string) rolloutView {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got struct {
			Rollout rolloutView `json:"rollout"`
		}
		code := restJSON(t, "GET", api+"/v1/applications/shop/rollouts/"+id, "", &got)
		if code == http.StatusOK {
			switch got.Rollout.Phase {
			case "ROLLOUT_PHASE_SUCCEEDED", "ROLLOUT_PHASE_ROLLED_BACK", "ROLLOUT_PHASE_FAILED":
				time.Sleep(150 * time.Millisecond) // the environment records the outcome just after
				return got.Rollout
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s: HTTP %d, still %q", id, code, got.Rollout.Phase)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func deployREST(t *testing.T, api, spec string) string {
	t.Helper()
	var resp struct {
		Rollout rolloutView `json:"rollout"`
	}
	if code := restJSON(t, "POST", api+"/v1/applications/shop:deploy", `{"spec":`+spec+`,"reason":"integration test"}`, &resp); code != http.StatusOK {
		t.Fatalf("deploy: HTTP %d", code)
	}
	return resp.Rollout.ID
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDeployerThroughREST runs the binary and deploys the demo app through
// the gateway: v1, a canary to v2, a broken v3 that is rolled back, and
// rollouts that survive a SIGKILL of the whole suite.
func TestDeployerThroughREST(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	httpAddr, dataDir := freeAddr(t), t.TempDir()
	args := []string{"up", "--data-dir", dataDir, "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "off"}
	p := startOpsuite(t, httpAddr, args...)
	t.Cleanup(func() {
		// Whatever happened, stop the demo processes the suite started.
		q := startOpsuite(t, httpAddr, args...)
		restJSON(t, "DELETE", "http://"+httpAddr+"/v1/applications/shop?force=true", "", nil)
		q.stop()
	})
	api := "http://" + httpAddr

	if code := restJSON(t, "POST", api+"/v1/applications", `{"name":"shop","spec":`+appJSON("v1", "")+`}`, nil); code != http.StatusOK {
		t.Fatalf("create application: HTTP %d", code)
	}
	var bad struct {
		Message string `json:"message"`
	}
	if code := restJSON(t, "POST", api+"/v1/applications", `{"name":"other","spec":{"process":{"argv":["x"]},"replicas":-1}}`, &bad); code != http.StatusBadRequest || !strings.Contains(bad.Message, "spec.replicas") {
		t.Fatalf("invalid application: HTTP %d %q, want 400 naming spec.replicas", code, bad.Message)
	}

	r := waitRolloutREST(t, api, deployREST(t, api, appJSON("v1", "")))
	if r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("v1: %+v", r)
	}
	endpoint := envStatusREST(t, api, "shop").Endpoint
	if got := getBody(t, endpoint); got != "v1" {
		t.Fatalf("router at %s serves %q, want v1", endpoint, got)
	}

	r = waitRolloutREST(t, api, deployREST(t, api, appJSON("v2", "")))
	if r.Phase != "ROLLOUT_PHASE_SUCCEEDED" || r.ToRevision != 2 {
		t.Fatalf("v2: %+v", r)
	}
	if got := getBody(t, endpoint); got != "v2" {
		t.Fatalf("serves %q, want v2", got)
	}
	r = waitRolloutREST(t, api, deployREST(t, api, appJSON("v3", `, {"name": "UNHEALTHY", "value": "1"}`)))
	if r.Phase != "ROLLOUT_PHASE_ROLLED_BACK" || !strings.Contains(r.Message, "unhealthy") {
		t.Fatalf("broken v3: %+v", r)
	}
	if got := getBody(t, endpoint); got != "v2" {
		t.Fatalf("after rolling back v3 serves %q, want v2", got)
	}

	// SIGKILL the suite in the middle of a rollout; after a restart the
	// rollout finishes and the router is back on its endpoint.
	slow := strings.Replace(appJSON("v4", ""), `"duration": "0.3s"`, `"duration": "3s"`, 1)
	id := deployREST(t, api, slow)
	time.Sleep(800 * time.Millisecond)
	p.kill()
	p = startOpsuite(t, httpAddr, args...)
	r = waitRolloutREST(t, api, id)
	if r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("rollout across a SIGKILL: %+v", r)
	}
	deadline := time.Now().Add(20 * time.Second)
	for getBodyOrEmpty(endpoint) != "v4" {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart %s does not serve v4", endpoint)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var replicas struct {
		Rollouts []rolloutView `json:"rollouts"`
	}
	restJSON(t, "GET", api+"/v1/applications/shop/rollouts", "", &replicas)
	if len(replicas.Rollouts) != 4 {
		t.Fatalf("%d rollouts listed, want 4", len(replicas.Rollouts))
	}
	p.stop()
}

func getBodyOrEmpty(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// envStatus is the part of an environment's status the tests read.
type envStatus struct {
	Endpoint        string `json:"endpoint"`
	CurrentRevision int    `json:"current_revision"`
}

// envStatusREST reads the first environment's status of an application.
func envStatusREST(t *testing.T, api, app string) envStatus {
	t.Helper()
	var got struct {
		Application struct {
			Environments []struct {
				Status envStatus `json:"status"`
			} `json:"environments"`
		} `json:"application"`
	}
	if code := restJSON(t, "GET", api+"/v1/applications/"+app, "", &got); code != http.StatusOK || len(got.Application.Environments) == 0 {
		t.Fatalf("get application %s: HTTP %d, %d environments", app, code, len(got.Application.Environments))
	}
	return got.Application.Environments[0].Status
}
