package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// suiteShape starts the suite one way (one process, or split) and can
// restart the part that holds the health-checker.
type suiteShape struct {
	httpAddr string
	grpcAddr string
	natsURL  string
	restart  func(t *testing.T)
}

func oneProcess(t *testing.T) *suiteShape { return oneProcessRestartedBy(t, (*proc).stop) }

// oneProcessKilled restarts with SIGKILL: nothing gets to flush or say goodbye.
func oneProcessKilled(t *testing.T) *suiteShape { return oneProcessRestartedBy(t, (*proc).kill) }

func oneProcessRestartedBy(t *testing.T, halt func(*proc)) *suiteShape {
	dataDir := t.TempDir()
	s := &suiteShape{httpAddr: freeAddr(t), grpcAddr: freeAddr(t)}
	natsAddr := freeAddr(t)
	s.natsURL = "nats://" + natsAddr
	args := []string{"up", "--data-dir", dataDir, "--grpc-addr", s.grpcAddr, "--nats-listen", natsAddr}
	p := startOpsuite(t, s.httpAddr, args...)
	s.restart = func(t *testing.T) {
		halt(p)
		p = startOpsuite(t, s.httpAddr, args...)
	}
	return s
}

func splitProcesses(t *testing.T) *suiteShape {
	ns := startNATS(t)
	s := &suiteShape{httpAddr: freeAddr(t), grpcAddr: freeAddr(t), natsURL: ns.ClientURL()}
	hcHTTP := freeAddr(t)
	hcArgs := []string{"serve", "--target=healthchecker", "--nats-url", s.natsURL, "--grpc-addr", s.grpcAddr}
	hc := startOpsuite(t, hcHTTP, hcArgs...)
	startOpsuite(t, s.httpAddr, "serve", "--target=gateway", "--healthchecker-addr", s.grpcAddr, "--nats-url", s.natsURL, "--grpc-addr", freeAddr(t))
	s.restart = func(t *testing.T) {
		hc.stop()
		hc = startOpsuite(t, hcHTTP, hcArgs...)
	}
	return s
}

func TestHealthCheckerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	for _, tc := range []struct {
		name  string
		shape func(t *testing.T) *suiteShape
	}{
		{"one process", oneProcess},
		{"one process, SIGKILL and restart", oneProcessKilled},
		{"split with external NATS", splitProcesses},
	} {
		t.Run(tc.name, func(t *testing.T) { runHealthScenario(t, tc.shape(t)) })
	}
}

func runHealthScenario(t *testing.T, s *suiteShape) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	api := "http://" + s.httpAddr

	// A real HTTP server on loopback to check.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, `{"status":"UP"}`)
	}))
	defer app.Close()

	// Events as a consumer on NATS sees them.
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	defer nc.Close()
	events := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("opsuite.health.target.changed", events)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Transitions as a gRPC client sees them.
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(tokenCreds{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := hcv1.NewHealthCheckerServiceClient(conn)
	watch, err := client.Watch(ctx, &hcv1.WatchRequest{Names: []string{"web"}})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if _, err := watch.Header(); err != nil {
		t.Fatalf("watch header: %v", err)
	}

	// And as a REST client sees them: NDJSON through the gateway.
	restLines := streamNDJSON(t, ctx, api+"/v1/targets:watch?names=web")

	// Create the target through REST.
	var created hcv1.CreateTargetResponse
	body := fmt.Sprintf(`{"name":"web","group":"shop","interval":"0.2s","failure_threshold":2,
		"http":{"url":%q,"condition":"json.status == \"UP\""}}`, app.URL+"/health")
	if code := restJSONProto(t, "POST", api+"/v1/targets", body, &created); code != http.StatusOK {
		t.Fatalf("create target: HTTP %d", code)
	}

	waitTransition(t, watch, hcv1.CheckState_CHECK_STATE_PASSING)
	waitEvent(t, events, hcv1.CheckState_CHECK_STATE_PASSING)
	var got hcv1.GetTargetResponse
	restJSONProto(t, "GET", api+"/v1/targets/web", "", &got)
	if st := got.GetTarget().GetStatus().GetState(); st != hcv1.CheckState_CHECK_STATE_PASSING {
		t.Fatalf("REST state = %s, want passing", st)
	}

	// Stop the server: the target goes critical on Watch and on NATS.
	app.Close()
	tr := waitTransition(t, watch, hcv1.CheckState_CHECK_STATE_CRITICAL)
	if tr.GetPreviousState() != hcv1.CheckState_CHECK_STATE_PASSING {
		t.Errorf("previous state = %s, want passing", tr.GetPreviousState())
	}
	waitNDJSONState(t, restLines, "CHECK_STATE_CRITICAL")
	ev := waitEvent(t, events, hcv1.CheckState_CHECK_STATE_CRITICAL)
	for _, h := range []string{"ce-id", "ce-source", "ce-type", "ce-time", "ce-specversion"} {
		if ev.Header.Get(h) == "" {
			t.Errorf("event lacks header %s: %v", h, ev.Header)
		}
	}
	if ev.Header.Get("Nats-Msg-Id") != ev.Header.Get("ce-id") {
		t.Errorf("Nats-Msg-Id %q != ce-id %q", ev.Header.Get("Nats-Msg-Id"), ev.Header.Get("ce-id"))
	}
	var health hcv1.GetHealthResponse
	restJSONProto(t, "GET", api+"/v1/health?group=shop", "", &health)
	if health.GetHealth() != hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY || health.GetCritical() != 1 {
		t.Errorf("health = %s with %d critical, want unhealthy with 1", health.GetHealth(), health.GetCritical())
	}
	var before hcv1.GetTargetResponse
	restJSONProto(t, "GET", api+"/v1/targets/web", "", &before)

	// Restart: the target and its state are still there.
	s.restart(t)
	var after hcv1.GetTargetResponse
	if code := restJSONProto(t, "GET", api+"/v1/targets/web", "", &after); code != http.StatusOK {
		t.Fatalf("after restart: GET target: HTTP %d", code)
	}
	bt, at := before.GetTarget(), after.GetTarget()
	if at.GetStatus().GetState() != hcv1.CheckState_CHECK_STATE_CRITICAL {
		t.Errorf("after restart: state = %s, want critical", at.GetStatus().GetState())
	}
	if !proto.Equal(at.GetStatus().GetLastTransitionTime(), bt.GetStatus().GetLastTransitionTime()) {
		t.Errorf("after restart: last transition %v, want %v", at.GetStatus().GetLastTransitionTime().AsTime(), bt.GetStatus().GetLastTransitionTime().AsTime())
	}
	if !proto.Equal(at.GetCreateTime(), bt.GetCreateTime()) || at.GetHttp().GetCondition() != bt.GetHttp().GetCondition() {
		t.Errorf("after restart: target changed:\n got %v\nwant %v", at, bt)
	}
}

func waitTransition(t *testing.T, w grpc.ServerStreamingClient[hcv1.WatchResponse], want hcv1.CheckState) *hcv1.TargetTransition {
	t.Helper()
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("watch: waiting for %s: %v", want, err)
		}
		if resp.GetTransition().GetState() == want {
			return resp.GetTransition()
		}
	}
}

func waitEvent(t *testing.T, ch <-chan *nats.Msg, want hcv1.CheckState) *nats.Msg {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-ch:
			var ev eventsv1.HealthTargetChanged
			if err := proto.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("decode event: %v", err)
			}
			if ev.GetTransition().GetState() == want {
				return m
			}
		case <-timeout:
			t.Fatalf("no NATS event with state %s within 20s", want)
		}
	}
}

// streamNDJSON opens a streaming REST call and returns its lines as they come.
func streamNDJSON(t *testing.T, ctx context.Context, url string) <-chan string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	lines := make(chan string, 64)
	go func() {
		defer resp.Body.Close()
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

func waitNDJSONState(t *testing.T, lines <-chan string, state string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("REST watch stream ended before state %s", state)
			}
			var msg struct {
				Result struct {
					Transition struct {
						State string `json:"state"`
					} `json:"transition"`
				} `json:"result"`
			}
			if err := json.Unmarshal([]byte(line), &msg); err != nil {
				t.Fatalf("REST watch line is not JSON: %q: %v", line, err)
			}
			if msg.Result.Transition.State == state {
				return
			}
		case <-timeout:
			t.Fatalf("REST watch: no %s line within 20s", state)
		}
	}
}
