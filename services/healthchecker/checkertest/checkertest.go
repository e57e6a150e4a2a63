// Package checkertest runs the real health-checker service in process for
// other packages' tests: embedded NATS, the service, and a gRPC client to
// it over an in-memory connection, all stopped when the test ends.
package checkertest

import (
	"context"
	"testing"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/healthchecker"
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
	g := grpctest.Serve(tb, svc.Register, grpctest.Options{})
	tb.Cleanup(func() {
		svc.Drain()
		g.Stop()
		cancel()
		<-done
	})
	return hcv1.NewHealthCheckerServiceClient(g.Conn)
}
