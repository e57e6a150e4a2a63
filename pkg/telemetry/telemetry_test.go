package telemetry_test

import (
	"context"
	"testing"

	"github.com/opsuite/opsuite/pkg/telemetry"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestSpansGetIDsAndPropagate(t *testing.T) {
	for _, cfg := range []telemetry.Config{
		{ServiceName: "test"},
		{ServiceName: "test", OTLPEndpoint: "127.0.0.1:1", Insecure: true}, // exporter connects lazily
	} {
		tp, err := telemetry.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, span := tp.Tracer("t").Start(context.Background(), "op")
		if !span.SpanContext().IsValid() {
			t.Fatal("span has no valid ids")
		}
		carrier := propagation.MapCarrier{}
		tp.Propagator.Inject(ctx, carrier)
		got := trace.SpanContextFromContext(tp.Propagator.Extract(context.Background(), carrier))
		if got.TraceID() != span.SpanContext().TraceID() {
			t.Fatalf("propagated trace %s, want %s", got.TraceID(), span.SpanContext().TraceID())
		}
		span.End()
		sctx, cancel := context.WithTimeout(context.Background(), 200_000_000)
		_ = tp.Shutdown(sctx)
		cancel()
	}
}
