package monitor_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor"
)

// TestRESTRoutes drives the REST routes through grpc-gateway over
// the service's gRPC connection, as the suite's gateway does.
func TestRESTRoutes(t *testing.T) {
	e := newEnv(t)
	in := e.start(t, monitor.Config{})
	mux := runtime.NewServeMux()
	if err := monitorv1.RegisterMonitorServiceHandler(t.Context(), mux, in.conn); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	call := func(method, path, body string, wantStatus int) map[string]any {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, wantStatus)
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
		return out
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	out := call("POST", "/v1/metrics:push", `{"samples":[{"name":"disk_used","labels":{"host":"a"},"value":0.97,"time":"`+now+`"}]}`, 200)
	if out["accepted"] != "1" {
		t.Fatalf("push %v", out)
	}
	call("POST", "/v1/metrics:push", `{"samples":[{"name":"bad name","value":1}]}`, 400)
	out = call("GET", "/v1/metrics/disk_used:summary?window=60s", "", 200)
	if s, _ := out["series"].([]any); len(s) != 1 {
		t.Fatalf("summary %v", out)
	}
	call("POST", "/v1/rules", `{"name":"disk-full","threshold":{"metric":"disk_used","high":0.95}}`, 200)
	out = call("GET", "/v1/rules", "", 200)
	if r, _ := out["rules"].([]any); len(r) != 1 {
		t.Fatalf("rules %v", out)
	}
	eventually(t, 5*time.Second, func() error {
		out := call("GET", "/v1/alerts", "", 200)
		if a, _ := out["alerts"].([]any); len(a) != 1 {
			return errNotYet
		}
		return nil
	})
	call("GET", "/v1/metrics:query?query=sum(", "", 400)
}
