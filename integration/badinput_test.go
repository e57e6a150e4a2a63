package integration_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRESTBadInput sends malformed and invalid requests through the gateway:
// each gets the right 4xx with a google.rpc.Status body naming what is wrong,
// and the process keeps serving.
func TestRESTBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	httpAddr := freeAddr(t)
	startOpsuite(t, httpAddr, "up", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--nats-listen", "")
	api := "http://" + httpAddr

	valid := `{"name":"dup","tcp":{"address":"127.0.0.1:9"}}`
	if code := restJSON(t, "POST", api+"/v1/targets", valid, nil); code != http.StatusOK {
		t.Fatalf("setup: create target: HTTP %d", code)
	}
	ttl := `{"name":"beat","ttl":{"ttl":"5s"}}`
	if code := restJSON(t, "POST", api+"/v1/targets", ttl, nil); code != http.StatusOK {
		t.Fatalf("setup: create ttl target: HTTP %d", code)
	}
	huge := `{"name":"big","http":{"url":"http://127.0.0.1:1/","body":"` + strings.Repeat("x", 5<<20) + `"}}`

	for _, tc := range []struct {
		name, method, path, body string
		wantCode                 int
		wantInMsg                string
	}{
		{"malformed JSON", "POST", "/v1/targets", `{"name":`, 400, "unexpected"},
		{"not JSON at all", "POST", "/v1/targets", `name=web`, 400, "invalid"},
		{"unknown field", "POST", "/v1/targets", `{"name":"a","bogus":1,"tcp":{"address":"127.0.0.1:9"}}`, 400, "bogus"},
		{"wrong type", "POST", "/v1/targets", `{"name":"a","interval":5,"tcp":{"address":"127.0.0.1:9"}}`, 400, "interval"},
		{"empty body", "POST", "/v1/targets", ``, 400, "target"},
		{"invalid name", "POST", "/v1/targets", `{"name":"Web Server","tcp":{"address":"127.0.0.1:9"}}`, 400, "target.name"},
		{"name too long", "POST", "/v1/targets", `{"name":"` + strings.Repeat("a", 64) + `","tcp":{"address":"127.0.0.1:9"}}`, 400, "target.name"},
		{"no check", "POST", "/v1/targets", `{"name":"a"}`, 400, "target.check"},
		{"URL without host", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://"}}`, 400, "target.http.url"},
		{"URL with bad scheme", "POST", "/v1/targets", `{"name":"a","http":{"url":"file:///etc/passwd"}}`, 400, "target.http.url"},
		{"URL unparsable", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://[::1"}}`, 400, "target.http.url"},
		{"negative interval", "POST", "/v1/targets", `{"name":"a","interval":"-5s","tcp":{"address":"127.0.0.1:9"}}`, 400, "target.interval"},
		{"absurd interval", "POST", "/v1/targets", `{"name":"a","interval":"315576000000s","tcp":{"address":"127.0.0.1:9"}}`, 400, "target.interval"},
		{"absurd timeout", "POST", "/v1/targets", `{"name":"a","interval":"10s","timeout":"99999s","tcp":{"address":"127.0.0.1:9"}}`, 400, "target.timeout"},
		{"malformed duration", "POST", "/v1/targets", `{"name":"a","interval":"soon","tcp":{"address":"127.0.0.1:9"}}`, 400, "interval"},
		{"huge threshold", "POST", "/v1/targets", `{"name":"a","failure_threshold":1000000,"tcp":{"address":"127.0.0.1:9"}}`, 400, "target.failure_threshold"},
		{"bad tcp address", "POST", "/v1/targets", `{"name":"a","tcp":{"address":"localhost"}}`, 400, "target.tcp.address"},
		{"bad port", "POST", "/v1/targets", `{"name":"a","grpc":{"address":"127.0.0.1:70000"}}`, 400, "target.grpc.address"},
		{"bad regex", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://127.0.0.1:1/","body_regex":"(("}}`, 400, "target.http.body_regex"},
		{"bad condition", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://127.0.0.1:1/","condition":"json.status =="}}`, 400, "target.http.condition"},
		{"non-boolean condition", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://127.0.0.1:1/","condition":"1 + 2"}}`, 400, "target.http.condition"},
		{"header injection", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://127.0.0.1:1/","headers":{"X-A":"b\r\nX-Evil: 1"}}}`, 400, "target.http.headers"},
		{"empty argv", "POST", "/v1/targets", `{"name":"a","exec":{"argv":[]}}`, 400, "target.exec.argv"},
		{"expected status out of range", "POST", "/v1/targets", `{"name":"a","http":{"url":"http://127.0.0.1:1/","expected_statuses":[42]}}`, 400, "expected_statuses"},
		{"bad enum", "POST", "/v1/targets/beat:heartbeat", `{"outcome":"CHECK_OUTCOME_MAYBE"}`, 400, "outcome"},
		{"oversized body", "POST", "/v1/targets", huge, 413, "limit"},
		{"duplicate name", "POST", "/v1/targets", valid, 409, "dup"},
		{"unknown target", "GET", "/v1/targets/nope", ``, 404, "nope"},
		{"delete unknown target", "DELETE", "/v1/targets/nope", ``, 404, "nope"},
		{"negative page size", "GET", "/v1/targets?page_size=-1", ``, 400, "page_size"},
		{"bad page token", "GET", "/v1/targets?page_token=%25%25", ``, 400, "page_token"},
		{"non-numeric page size", "GET", "/v1/targets?page_size=many", ``, 400, "page_size"},
		{"heartbeat on a non-TTL target", "POST", "/v1/targets/dup:heartbeat", `{}`, 400, "not a TTL"},
		{"update with unknown mask path", "PATCH", "/v1/targets/dup?update_mask=status", `{"interval":"5s"}`, 400, "update_mask"},
		{"update with invalid value", "PATCH", "/v1/targets/dup", `{"interval":"-1s"}`, 400, "target.interval"},
		{"unknown route", "GET", "/v1/nothing", ``, 404, "no route"},
		{"wrong method", "PUT", "/v1/targets/dup", `{}`, 405, "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			code := restJSON(t, tc.method, api+tc.path, tc.body, &st)
			if code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d (message %q)", code, tc.wantCode, st.Message)
			}
			if st.Code == 0 || !strings.Contains(strings.ToLower(st.Message), strings.ToLower(tc.wantInMsg)) {
				t.Fatalf("status body %+v: want a code and a message containing %q", st, tc.wantInMsg)
			}
		})
	}

	// A chunked body (no Content-Length) over the limit is cut off with 413 too.
	req, err := http.NewRequest("POST", api+"/v1/targets", io.MultiReader(strings.NewReader(`{"name":"big","http":{"url":"http://127.0.0.1:1/","body":"`), strings.NewReader(strings.Repeat("x", 5<<20))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversized body: HTTP %d, want 413", resp.StatusCode)
	}

	// A valid PATCH changes only what its body names (the mask comes from it).
	var patched struct {
		Target struct {
			Interval string `json:"interval"`
			Tcp      struct {
				Address string `json:"address"`
			} `json:"tcp"`
		} `json:"target"`
	}
	if code := restJSON(t, "PATCH", api+"/v1/targets/dup", `{"interval":"5s"}`, &patched); code != http.StatusOK ||
		patched.Target.Interval != "5s" || patched.Target.Tcp.Address != "127.0.0.1:9" {
		t.Fatalf("PATCH interval: HTTP %d %+v", code, patched)
	}

	// Nothing was lost or half-created: the two set-up targets are all there is.
	var list struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if code := restJSON(t, "GET", api+"/v1/targets", "", &list); code != http.StatusOK || len(list.Targets) != 2 {
		t.Fatalf("after bad input: HTTP %d with %d targets, want 200 with 2", code, len(list.Targets))
	}
	if code := restJSON(t, "GET", api+"/readyz", "", nil); code != http.StatusOK {
		t.Fatalf("after bad input: /readyz HTTP %d", code)
	}
}
