package integration_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestDeployerBadInput: invalid applications and requests get 4xx naming the
// field; an image workload with no Docker daemon gets 503 saying why; nothing
// is half-created.
func TestDeployerBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	httpAddr := freeAddr(t)
	startOpsuite(t, httpAddr, "up", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "off")
	api := "http://" + httpAddr
	ok := `{"name":"shop","spec":{"process":{"argv":["/bin/true"]},"ports":[{"container_port":8080}]}}`
	if code := restJSON(t, "POST", api+"/v1/applications", ok, nil); code != http.StatusOK {
		t.Fatalf("setup: HTTP %d", code)
	}
	for _, tc := range []struct {
		name, method, path, body string
		wantCode                 int
		wantInMsg                string
	}{
		{"invalid name", "POST", "/v1/applications", `{"name":"Shop!","spec":{"process":{"argv":["x"]}}}`, 400, "name"},
		{"invalid image", "POST", "/v1/applications", `{"name":"a","spec":{"image":"UPPER/Case::tag"}}`, 400, "spec.image"},
		{"port out of range", "POST", "/v1/applications", `{"name":"a","spec":{"process":{"argv":["x"]},"ports":[{"container_port":70000}]}}`, 400, "spec.ports[0].container_port"},
		{"rolling that cannot move", "POST", "/v1/applications", `{"name":"a","spec":{"process":{"argv":["x"]},"strategy":{"rolling":{"max_surge":{"count":0},"max_unavailable":{"count":0}}}}}`, 400, "spec.strategy.rolling"},
		{"canary going backwards", "POST", "/v1/applications", `{"name":"a","spec":{"process":{"argv":["x"]},"strategy":{"canary":{"steps":[{"set_weight":{"weight":50}},{"set_weight":{"weight":10}}]}}}}`, 400, "weight"},
		{"two workloads", "POST", "/v1/applications", `{"name":"a","spec":{"image":"x","process":{"argv":["x"]}}}`, 400, "process"},
		{"unknown key", "POST", "/v1/applications", `{"name":"a","spec":{"imagee":"x"}}`, 400, "spec.imagee"},
		{"image without docker", "POST", "/v1/applications", `{"name":"web","spec":{"image":"nginx:1"}}`, 503, "docker driver is not available"},
		{"duplicate", "POST", "/v1/applications", ok, 409, "shop"},
		{"deploy unknown app", "POST", "/v1/applications/nope:deploy", `{}`, 404, "nope"},
		{"deploy unknown environment", "POST", "/v1/applications/shop:deploy", `{"environment":"prod"}`, 400, "environment"},
		{"deploy invalid spec", "POST", "/v1/applications/shop:deploy", `{"spec":{"process":{"argv":[]}}}`, 400, "spec.process.argv"},
		{"deploy unknown revision", "POST", "/v1/applications/shop:deploy", `{"revision":42}`, 404, "42"},
		{"promote with nothing running", "POST", "/v1/applications/shop:promote", `{}`, 400, "no rollout"},
		{"rollback with no history", "POST", "/v1/applications/shop:rollback", `{}`, 400, "revision"},
		{"scale before deploy", "POST", "/v1/applications/shop:scale", `{"replicas":3}`, 400, "not been deployed"},
		{"unknown rollout", "GET", "/v1/applications/shop/rollouts/nope", ``, 404, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st struct {
				Message string `json:"message"`
			}
			code := restJSON(t, tc.method, api+tc.path, tc.body, &st)
			if code != tc.wantCode || !strings.Contains(st.Message, tc.wantInMsg) {
				t.Fatalf("HTTP %d %q, want %d mentioning %q", code, st.Message, tc.wantCode, tc.wantInMsg)
			}
		})
	}
	var list struct {
		Applications []struct {
			Name string `json:"name"`
		} `json:"applications"`
	}
	if code := restJSON(t, "GET", api+"/v1/applications", "", &list); code != http.StatusOK || len(list.Applications) != 1 {
		t.Fatalf("applications after bad input: HTTP %d, %v", code, list.Applications)
	}
}
