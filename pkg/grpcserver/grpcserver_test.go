package grpcserver_test

import (
	"context"
	"net"
	"strings"
	"testing"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/grpcserver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// panicky is a service whose GetTarget panics, to exercise recovery.
type panicky struct {
	hcv1.UnimplementedHealthCheckerServiceServer
}

func (panicky) GetTarget(context.Context, *hcv1.GetTargetRequest) (*hcv1.GetTargetResponse, error) {
	panic("boom")
}

func start(t *testing.T, cfg grpcserver.Config, reg prometheus.Registerer) (*grpcserver.Server, *grpc.ClientConn) {
	t.Helper()
	s, err := grpcserver.New(cfg, grpcserver.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	hcv1.RegisterHealthCheckerServiceServer(s, panicky{})
	lis := bufconn.Listen(1 << 16)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///buf",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return s, conn
}

func TestHealthReflectsReadiness(t *testing.T) {
	s, conn := start(t, grpcserver.Config{}, nil)
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("before ready: %s, want NOT_SERVING", resp.GetStatus())
	}
	s.SetServing("", true)
	s.SetServing("svc.v1.Svc", true)
	for _, name := range []string{"", "svc.v1.Svc"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("after ready %q: %v %v", name, resp.GetStatus(), err)
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v, want NotFound", err)
	}
}

func TestPanicBecomesInternalAndIsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, conn := start(t, grpcserver.Config{}, reg)
	_ = s
	client := hcv1.NewHealthCheckerServiceClient(conn)
	_, err := client.GetTarget(context.Background(), &hcv1.GetTargetRequest{Name: "x"})
	if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "internal error") {
		t.Fatalf("panicking handler: %v, want Internal", err)
	}
	if strings.Contains(status.Convert(err).Message(), "boom") {
		t.Fatalf("panic value leaked to the client: %v", err)
	}
	// The server keeps serving after the panic.
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("after panic: %v", err)
	}
	out, err := testutil.GatherAndLint(reg)
	if err != nil || len(out) > 0 {
		t.Fatalf("metrics lint: %v %v", out, err)
	}
	if n, err := testutil.GatherAndCount(reg, "opsuite_grpc_server_handled_total"); err != nil || n < 2 {
		t.Fatalf("handled series = %d (%v), want one per method and code", n, err)
	}
}

func TestAuthInterceptorRuns(t *testing.T) {
	called := false
	cfg := grpcserver.Config{Auth: grpcserver.Interceptors{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			called = true
			return nil, status.Error(codes.Unauthenticated, "no token")
		},
	}}
	_, conn := start(t, cfg, nil)
	_, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unauthenticated || !called {
		t.Fatalf("auth slot: %v (called %v), want Unauthenticated", err, called)
	}
}
