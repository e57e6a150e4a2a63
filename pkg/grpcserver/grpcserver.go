// Package grpcserver builds the gRPC server every Opsuite service runs on:
// grpc.health.v1 with real readiness, server reflection, OpenTelemetry
// tracing, panic recovery, request logging and metrics, and a slot for
// authentication.
package grpcserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Config tunes the server.
type Config struct {
	// MaxRecvMsgSize bounds a request message; default 8 MiB.
	MaxRecvMsgSize int
	// Auth, when set, runs before every handler (after recovery and logging).
	Auth Interceptors
	// TLS, when set, serves gRPC over TLS only.
	TLS *tls.Config
}

// Interceptors is a unary and stream interceptor pair.
type Interceptors struct {
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
}

// Deps are the server's collaborators.
type Deps struct {
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	TracerProvider trace.TracerProvider
}

// Server is a gRPC server with a health service whose statuses the suite
// sets as components become ready.
type Server struct {
	*grpc.Server
	Health *health.Server
}

// New builds the server. Register services on it, then Serve.
func New(cfg Config, deps Deps) (*Server, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMetrics()
	if deps.Registerer != nil {
		if err := m.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("grpcserver: register metrics: %w", err)
		}
	}
	// Observe outermost so a recovered panic is logged and counted as Internal.
	unary := []grpc.UnaryServerInterceptor{observeUnary(log, m), recoverUnary(log)}
	stream := []grpc.StreamServerInterceptor{observeStream(log, m), recoverStream(log)}
	if cfg.Auth.Unary != nil {
		unary = append(unary, cfg.Auth.Unary)
	}
	if cfg.Auth.Stream != nil {
		stream = append(stream, cfg.Auth.Stream)
	}
	maxRecv := cfg.MaxRecvMsgSize
	if maxRecv <= 0 {
		maxRecv = 8 << 20
	}
	otelOpts := []otelgrpc.Option{}
	if deps.TracerProvider != nil {
		otelOpts = append(otelOpts, otelgrpc.WithTracerProvider(deps.TracerProvider))
	}
	opts := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelOpts...)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(maxRecv),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	// Overall server status stays NOT_SERVING until the suite marks it ready.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return &Server{Server: gs, Health: hs}, nil
}

// SetServing marks one service (or "" for the whole server) as serving or not.
func (s *Server) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.Health.SetServingStatus(service, st)
}

type metrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsuite_grpc_server_handled_total",
			Help: "RPCs completed on the server, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "opsuite_grpc_server_handling_seconds",
			Help:    "Time to handle an RPC, by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method"}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	if err := r.Register(m.handled); err != nil {
		return err
	}
	return r.Register(m.duration)
}

func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.handled.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

func panicError(log *slog.Logger, method string, p any) error {
	log.Error("panic in gRPC handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s; the server logged the cause", method)
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				resp, err = nil, panicError(log, info.FullMethod, p)
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicError(log, info.FullMethod, p)
			}
		}()
		return handler(srv, ss)
	}
}

func logRPC(ctx context.Context, log *slog.Logger, method string, start time.Time, err error) codes.Code {
	code := status.Code(err)
	level := slog.LevelDebug
	switch code {
	case codes.OK, codes.Canceled:
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	attrs := []any{"method", method, "code", code.String(), "duration", time.Since(start)}
	if err != nil {
		attrs = append(attrs, "err", status.Convert(err).Message())
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		attrs = append(attrs, "trace_id", sc.TraceID().String())
	}
	log.Log(ctx, level, "rpc", attrs...)
	return code
}

func observeUnary(log *slog.Logger, m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observe(info.FullMethod, logRPC(ctx, log, info.FullMethod, start, err), time.Since(start))
		return resp, err
	}
}

func observeStream(log *slog.Logger, m *metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observe(info.FullMethod, logRPC(ss.Context(), log, info.FullMethod, start, err), time.Since(start))
		return err
	}
}
