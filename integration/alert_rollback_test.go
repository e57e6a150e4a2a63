package integration_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFiringAlertRollsBackARollout runs the whole suite: the monitor has a
// threshold rule for the application; a rollout verifying after promotion
// sees the alert fire (samples pushed through the gateway) and is rolled
// back to the stable revision with the alert named as the reason.
func TestFiringAlertRollsBackARollout(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	httpAddr, dataDir := freeAddr(t), t.TempDir()
	args := []string{"up", "--data-dir", dataDir, "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "off"}
	p := startOpsuite(t, httpAddr, args...)
	t.Cleanup(func() {
		restJSON(t, "DELETE", "http://"+httpAddr+"/v1/applications/shop?force=true", "", nil)
		p.stop()
	})
	api := "http://" + httpAddr

	group := `{"name": "shop-alerts", "interval": "1s", "rules": [{
	  "name": "shop-errors", "alert": "ShopErrors",
	  "threshold": {"metric": "shop_errors", "matchers": [{"name": "app", "value": "shop"}], "high": 5},
	  "labels": {"severity": "critical", "app": "shop"}
	}]}`
	if code := restJSON(t, "POST", api+"/v1/ruleGroups", group, nil); code != http.StatusOK {
		t.Fatalf("create rule group: HTTP %d", code)
	}
	if code := restJSON(t, "POST", api+"/v1/applications", `{"name":"shop","spec":`+appJSON("v1", "")+`}`, nil); code != http.StatusOK {
		t.Fatalf("create application: HTTP %d", code)
	}
	if r := waitRolloutREST(t, api, deployREST(t, api, appJSON("v1", ""))); r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("v1: %+v", r)
	}
	verifying := strings.Replace(appJSON("v2", ""), `"verification_window": "0s"`, `"verification_window": "30s"`, 1)
	id := deployREST(t, api, verifying)
	waitPhaseREST(t, api, id, "ROLLOUT_PHASE_VERIFYING")

	// The application's error count crosses the threshold.
	push := fmt.Sprintf(`{"samples": [{"name": "shop_errors", "labels": {"app": "shop"}, "value": 42, "time": %q}]}`, time.Now().UTC().Format(time.RFC3339Nano))
	if code := restJSON(t, "POST", api+"/v1/metrics:push", push, nil); code != http.StatusOK {
		t.Fatalf("push: HTTP %d", code)
	}
	r := waitRolloutREST(t, api, id)
	if r.Phase != "ROLLOUT_PHASE_ROLLED_BACK" || !strings.Contains(r.Message, "ShopErrors") || r.ToRevision != 2 {
		t.Fatalf("v2 with a firing alert: %+v; want rolled back naming the alert", r)
	}
	if st := envStatusREST(t, api, "shop"); st.CurrentRevision != 1 || getBody(t, st.Endpoint) != "v1" {
		t.Fatalf("after the rollback: %+v", st)
	}
}

func waitPhaseREST(t *testing.T, api, id, phase string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got struct {
			Rollout rolloutView `json:"rollout"`
		}
		restJSON(t, "GET", api+"/v1/applications/shop/rollouts/"+id, "", &got)
		if got.Rollout.Phase == phase {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s still %q, want %s", id, got.Rollout.Phase, phase)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
