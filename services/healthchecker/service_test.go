package healthchecker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/healthchecker"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// env is a real embedded NATS server shared by the service instances of one test.
type env struct {
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	bus *eventbus.Bus
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t, "")
	nc, js := srv.Conn, srv.JetStream
	bus, err := eventbus.New(t.Context(), nc, eventbus.Config{Source: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, nc: nc, js: js, bus: bus}
}

// instance is one running service with a gRPC client to it.
type instance struct {
	client hcv1.HealthCheckerServiceClient
	stop   func()
	// mayFail: Run may end with an error (its NATS connection is cut).
	mayFail atomic.Bool
}

// start runs a service on e and serves it over an in-memory gRPC listener.
func (e *env) start(t *testing.T) *instance {
	t.Helper()
	return e.startWith(t, healthchecker.Config{}, e.js, e.bus)
}

// startWith runs a service with cfg on its own JetStream connection.
func (e *env) startWith(t *testing.T, cfg healthchecker.Config, js jetstream.JetStream, bus *eventbus.Bus) *instance {
	t.Helper()
	svc, err := healthchecker.New(cfg, healthchecker.Deps{JetStream: js, Events: bus})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := svc.Run(ctx); err != nil && !inst.mayFail.Load() {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-svc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("service not ready")
	}
	srv := grpctest.Serve(t, svc.Register, grpctest.Options{})
	conn := srv.Conn
	var once sync.Once
	stop := func() {
		once.Do(func() {
			svc.Drain()
			srv.Stop()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	inst.client, inst.stop = hcv1.NewHealthCheckerServiceClient(conn), stop
	return inst
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func httpTarget(name, url string) *hcv1.Target {
	return &hcv1.Target{
		Name: name, Interval: dur(100 * time.Millisecond), FailureThreshold: 1,
		Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: url}},
	}
}

// waitState polls until the target reaches want.
func waitState(t *testing.T, c hcv1.HealthCheckerServiceClient, name string, want hcv1.CheckState) *hcv1.Target {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.GetTarget(t.Context(), &hcv1.GetTargetRequest{Name: name})
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		if resp.GetTarget().GetStatus().GetState() == want {
			return resp.GetTarget()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %s, want %s", name, resp.GetTarget().GetStatus().GetState(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func okServer(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(s.Close)
	return s
}

func TestCRUDAndPagination(t *testing.T) {
	e := newEnv(t)
	c := e.start(t).client
	ctx := t.Context()
	app := okServer(t)
	for _, name := range []string{"c", "a", "b", "e", "d"} {
		if _, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: httpTarget(name, app.URL)}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	if _, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: httpTarget("a", app.URL)}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate create: %v, want AlreadyExists", err)
	}
	var names []string
	token := ""
	for {
		resp, err := c.ListTargets(ctx, &hcv1.ListTargetsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range resp.GetTargets() {
			names = append(names, tg.GetName())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if got := len(names); got != 5 || names[0] != "a" || names[4] != "e" {
		t.Fatalf("paged list = %v, want a..e in order", names)
	}
	if _, err := c.DeleteTarget(ctx, &hcv1.DeleteTargetRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTarget(ctx, &hcv1.GetTargetRequest{Name: "c"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get deleted: %v, want NotFound", err)
	}
}

func TestUpdateKeepsStateUnlessCheckChanges(t *testing.T) {
	e := newEnv(t)
	c := e.start(t).client
	ctx := t.Context()
	app := okServer(t)
	if _, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: httpTarget("web", app.URL)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "web", hcv1.CheckState_CHECK_STATE_PASSING)

	resp, err := c.UpdateTarget(ctx, &hcv1.UpdateTargetRequest{
		Target:     &hcv1.Target{Name: "web", Labels: map[string]string{"app": "shop"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTarget().GetStatus().GetState() != hcv1.CheckState_CHECK_STATE_PASSING || resp.GetTarget().GetLabels()["app"] != "shop" {
		t.Fatalf("label update: %v", resp.GetTarget())
	}
	if resp.GetTarget().GetHttp().GetUrl() != app.URL {
		t.Fatalf("label update lost the check: %v", resp.GetTarget())
	}

	resp, err = c.UpdateTarget(ctx, &hcv1.UpdateTargetRequest{
		Target:     &hcv1.Target{Name: "web", Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "127.0.0.1:1"}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"tcp"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTarget().GetStatus().GetState() != hcv1.CheckState_CHECK_STATE_PENDING || resp.GetTarget().GetHttp() != nil {
		t.Fatalf("check change: state %s, http %v; want pending with only tcp", resp.GetTarget().GetStatus().GetState(), resp.GetTarget().GetHttp())
	}
	waitState(t, c, "web", hcv1.CheckState_CHECK_STATE_CRITICAL)
}

func TestTTLTargetFollowsHeartbeats(t *testing.T) {
	e := newEnv(t)
	c := e.start(t).client
	ctx := t.Context()
	tg := &hcv1.Target{Name: "job", Check: &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: dur(300 * time.Millisecond)}}}
	if _, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: tg}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Heartbeat(ctx, &hcv1.HeartbeatRequest{Name: "job", Message: "alive"}); err != nil {
		t.Fatal(err)
	}
	got := waitState(t, c, "job", hcv1.CheckState_CHECK_STATE_PASSING)
	if got.GetStatus().GetLastResult().GetMessage() != "alive" {
		t.Errorf("last result %v", got.GetStatus().GetLastResult())
	}
	// No more heartbeats: critical once the TTL runs out.
	got = waitState(t, c, "job", hcv1.CheckState_CHECK_STATE_CRITICAL)
	if got.GetStatus().GetLastResult().GetMessage() == "" {
		t.Error("expiry result has no message")
	}
	if _, err := c.Heartbeat(ctx, &hcv1.HeartbeatRequest{Name: "job", Outcome: hcv1.CheckOutcome_CHECK_OUTCOME_WARN}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "job", hcv1.CheckState_CHECK_STATE_WARNING)
}

func TestRestartRestoresTargetsAndState(t *testing.T) {
	e := newEnv(t)
	first := e.start(t)
	ctx := t.Context()
	app := okServer(t)
	if _, err := first.client.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: httpTarget("web", app.URL)}); err != nil {
		t.Fatal(err)
	}
	before := waitState(t, first.client, "web", hcv1.CheckState_CHECK_STATE_PASSING)
	first.stop()

	second := e.start(t)
	resp, err := second.client.GetTarget(ctx, &hcv1.GetTargetRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	after := resp.GetTarget()
	if after.GetStatus().GetState() != hcv1.CheckState_CHECK_STATE_PASSING ||
		!after.GetStatus().GetLastTransitionTime().AsTime().Equal(before.GetStatus().GetLastTransitionTime().AsTime()) {
		t.Fatalf("after restart: %v, want passing since %v", after.GetStatus(), before.GetStatus().GetLastTransitionTime().AsTime())
	}
	// And it is checked again.
	app.Close()
	waitState(t, second.client, "web", hcv1.CheckState_CHECK_STATE_CRITICAL)
}

func TestRunChecksAndGroupHealth(t *testing.T) {
	e := newEnv(t)
	c := e.start(t).client
	ctx := t.Context()
	app := okServer(t)
	for _, tg := range []*hcv1.Target{
		{Name: "up", Group: "shop", Interval: dur(time.Hour), Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: app.URL}}},
		{Name: "down", Group: "shop", Interval: dur(time.Hour), FailureThreshold: 1, Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "127.0.0.1:1"}}},
		{Name: "other", Group: "blog", Interval: dur(time.Hour), Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: app.URL}}},
	} {
		if _, err := c.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: tg}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.RunChecks(ctx, &hcv1.RunChecksRequest{Group: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTargets()) != 2 {
		t.Fatalf("ran %d targets, want the 2 of group shop", len(resp.GetTargets()))
	}
	h, err := c.GetHealth(ctx, &hcv1.GetHealthRequest{Group: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if h.GetHealth() != hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY || h.GetPassing() != 1 || h.GetCritical() != 1 {
		t.Fatalf("shop health = %s (%d passing, %d critical), want unhealthy 1/1", h.GetHealth(), h.GetPassing(), h.GetCritical())
	}
	h, err = c.GetHealth(ctx, &hcv1.GetHealthRequest{Group: "blog"})
	if err != nil {
		t.Fatal(err)
	}
	if h.GetHealth() != hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY || h.GetPending() != 1 {
		t.Fatalf("blog health = %s with %d pending, want healthy with its target not yet checked", h.GetHealth(), h.GetPending())
	}
	res, err := c.ListResults(ctx, &hcv1.ListResultsRequest{Name: "down"})
	if err != nil || len(res.GetResults()) != 1 {
		t.Fatalf("results of down: %v %v", res, err)
	}
}

func TestWatchStreamsTransitionsAndEndsOnDrain(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t)
	ctx := t.Context()
	w, err := inst.client.Watch(ctx, &hcv1.WatchRequest{Group: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Header(); err != nil {
		t.Fatal(err)
	}
	tg := httpTarget("web", okServer(t).URL)
	tg.Group = "shop"
	if _, err := inst.client.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: tg}); err != nil {
		t.Fatal(err)
	}
	msg, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if tr := msg.GetTransition(); tr.GetName() != "web" || tr.GetState() != hcv1.CheckState_CHECK_STATE_PASSING {
		t.Fatalf("transition %v", tr)
	}
	inst.stop()
	if _, err := w.Recv(); err == nil {
		t.Fatal("watch still open after the service stopped")
	}
}
