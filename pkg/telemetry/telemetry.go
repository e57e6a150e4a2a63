// Package telemetry sets up OpenTelemetry tracing for a process: W3C trace
// context propagation always, and export over OTLP/gRPC when an endpoint is
// configured.
package telemetry

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Config says where traces go.
type Config struct {
	// ServiceName is the resource's service.name.
	ServiceName string
	// OTLPEndpoint is host:port of an OTLP/gRPC collector; empty keeps spans
	// in process (trace ids still flow through gRPC and NATS headers).
	OTLPEndpoint string
	// Insecure disables TLS to the collector.
	Insecure bool
}

// Provider is a tracer provider with its shutdown.
type Provider struct {
	*sdktrace.TracerProvider
	Propagator propagation.TextMapPropagator
}

// New builds a tracer provider. It does not install itself globally; pass
// it to the components that trace.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	res := resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName))
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	}
	if cfg.OTLPEndpoint != "" {
		eopts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.Insecure {
			eopts = append(eopts, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, eopts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter for %s: %w", cfg.OTLPEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return &Provider{
		TracerProvider: sdktrace.NewTracerProvider(opts...),
		Propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}
