package integration_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type logRecord struct {
	Source  string            `json:"source"`
	Level   string            `json:"level"`
	Message string            `json:"message"`
	Labels  map[string]string `json:"labels"`
}

func queryLogs(t *testing.T, api string, q url.Values) []logRecord {
	t.Helper()
	var resp struct {
		Records []logRecord `json:"records"`
	}
	if code := restJSON(t, "GET", api+"/v1/logs?"+q.Encode(), "", &resp); code != http.StatusOK {
		t.Fatalf("query logs %v: HTTP %d", q, code)
	}
	return resp.Records
}

// TestSuiteLogsAreQueryable: the log-aggregator of a running `opsuite up`
// holds every service's own log, by source and level, and the output of the
// replicas the deployer runs.
func TestSuiteLogsAreQueryable(t *testing.T) {
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

	for _, source := range []string{"healthchecker", "monitor", "logaggregator", "deployer", "pipelinerunner"} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			recs := queryLogs(t, api, url.Values{"sources": {source}, "levels": {"LOG_LEVEL_INFO"}, "contains": {"ready"}})
			if len(recs) > 0 {
				if recs[0].Source != source || recs[0].Level != "LOG_LEVEL_INFO" {
					t.Fatalf("%s: record %+v", source, recs[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no INFO record from %s mentioning ready", source)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	if code := restJSON(t, "POST", api+"/v1/applications", `{"name":"shop","spec":`+appJSON("v1", "")+`}`, nil); code != http.StatusOK {
		t.Fatalf("create application: HTTP %d", code)
	}
	if r := waitRolloutREST(t, api, deployREST(t, api, appJSON("v1", ""))); r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("v1: %+v", r)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		recs := queryLogs(t, api, url.Values{"sources": {"apps/shop/default"}, "contains": {"demoapp v1 listening"}})
		if len(recs) == 2 { // one start line per replica
			if recs[0].Labels["app"] != "shop" || recs[0].Labels["revision"] != "1" || !strings.HasPrefix(recs[0].Labels["replica"], "shop-default-") {
				t.Fatalf("replica record labels %v", recs[0].Labels)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica output: %d start lines, want 2: %+v", len(recs), recs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
