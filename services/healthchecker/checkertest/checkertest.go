// Package checkertest runs the real health-checker service in process for
// other packages' tests: embedded NATS, the service, and a gRPC client to
// it over an in-memory connection, all stopped when the test ends.
package checkertest

import (
	"context"
	"net"
	"testing"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/healthchecker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Start runs a health-checker on its own embedded NATS and returns a client.
func Start(tb testing.TB) hcv1.HealthCheckerServiceClient {
	tb.Helper()
	srv := natstest.Start(tb, "")
	bus, err := eventbus.New(context.Background(), srv.Conn, eventbus.Config{Source: "test"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := healthchecker.New(healthchecker.Config{}, healthchecker.Deps{JetStream: srv.JetStream, Events: bus})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	<-svc.Ready()
	gs := grpc.NewServer()
	svc.Register(gs)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///buf",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		svc.Drain()
		_ = conn.Close()
		gs.Stop()
		cancel()
		<-done
	})
	return hcv1.NewHealthCheckerServiceClient(conn)
}
