// Package gateway serves the suite's REST/JSON API by translating requests
// to gRPC with grpc-gateway, over client connections so the services' own
// interceptors (auth, logging, recovery) run for REST calls too. It also
// serves the OpenAPI document.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/opsuite/opsuite/gen/openapi"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/gateway/dashboard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Name is the gateway's name in readiness reports.
const Name = "gateway"

// DefaultMaxBodyBytes bounds a REST request body.
const DefaultMaxBodyBytes = 4 << 20

// Config tunes the gateway.
type Config struct {
	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64
	// Version is reported in the OpenAPI document.
	Version string
}

// Conns are the client connections to the services the gateway fronts; a
// nil connection leaves that service's routes unregistered (404).
type Conns struct {
	HealthChecker  *grpc.ClientConn
	Deployer       *grpc.ClientConn
	Monitor        *grpc.ClientConn
	LogAggregator  *grpc.ClientConn
	PipelineRunner *grpc.ClientConn
	// Gateway serves the gateway's own gRPC services (report, access).
	Gateway *grpc.ClientConn
}

// Deps are the gateway's collaborators.
type Deps struct {
	Logger *slog.Logger
	Conns  Conns
}

// Gateway is the REST handler.
type Gateway struct {
	handler http.Handler
	log     *slog.Logger
}

// New builds the REST handler for the services in deps.Conns.
func New(ctx context.Context, cfg Config, deps Deps) (*Gateway, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	jsonMarshaler := &namingMarshaler{JSONPb: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonMarshaler),
		runtime.WithErrorHandler(errorHandler(log)),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		runtime.WithForwardResponseOption(openStream),
	)
	routes := []struct {
		name     string
		tag      string
		conn     *grpc.ClientConn
		register func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error
	}{
		{"health-checker", "HealthCheckerService", deps.Conns.HealthChecker, hcv1.RegisterHealthCheckerServiceHandler},
		{"deployer", "DeployerService", deps.Conns.Deployer, deployerv1.RegisterDeployerServiceHandler},
		{"monitor", "MonitorService", deps.Conns.Monitor, monitorv1.RegisterMonitorServiceHandler},
		{"log-aggregator", "LogAggregatorService", deps.Conns.LogAggregator, lav1.RegisterLogAggregatorServiceHandler},
		{"pipeline-runner", "PipelineRunnerService", deps.Conns.PipelineRunner, prv1.RegisterPipelineRunnerServiceHandler},
		{"access", "AccessService", deps.Conns.Gateway, gatewayv1.RegisterAccessServiceHandler},
	}
	var served []string
	for _, r := range routes {
		if r.conn == nil {
			continue
		}
		if err := r.register(ctx, mux, r.conn); err != nil {
			return nil, fmt.Errorf("gateway: register %s routes: %w", r.name, err)
		}
		served = append(served, r.tag)
	}
	root := http.NewServeMux()
	root.Handle(dashboard.Prefix, dashboard.Handler())
	root.Handle("GET /{$}", http.RedirectHandler(dashboard.Prefix, http.StatusFound))
	if c := deps.Conns.PipelineRunner; c != nil {
		root.Handle("POST /v1/webhooks/{provider}/{pipeline}", webhookHandler(prv1.NewPipelineRunnerServiceClient(c)))
	}
	if c := deps.Conns.Gateway; c != nil {
		root.Handle("GET /v1/report", reportHandler(gatewayv1.NewReportServiceClient(c)))
		served = append(served, "ReportService")
	}
	doc, err := openAPIDocument(cfg.Version, served)
	if err != nil {
		return nil, err
	}
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
	root.Handle("/v1/", limitBody(cfg.MaxBodyBytes, mux))
	return &Gateway{handler: root, log: log}, nil
}

// ServeHTTP serves the REST API and the OpenAPI document.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// openStream sends a server stream's response header as soon as the gRPC
// stream is open, so REST clients see 200 before the first message (a watch
// may wait long for one). grpc-gateway calls forward-response options with a
// nil message exactly then.
func openStream(_ context.Context, w http.ResponseWriter, m proto.Message) error {
	if m != nil {
		return nil
	}
	w.Header().Set("Content-Type", ndjson)
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w).Flush()
}

// ndjson is the content type of streamed responses: one JSON object a line.
const ndjson = "application/x-ndjson"

// openAPIDocument returns the generated document with a proper title and
// version, keeping only the operations of the services this gateway serves
// (tagged with their service name), so it never advertises a route that
// answers 404.
func openAPIDocument(version string, services []string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		return nil, fmt.Errorf("gateway: decode OpenAPI document: %w", err)
	}
	served := map[string]bool{}
	for _, s := range services {
		served[s] = true
	}
	if paths, ok := doc["paths"].(map[string]any); ok {
		for p, item := range paths {
			ops, ok := item.(map[string]any)
			if !ok {
				continue
			}
			for method, op := range ops {
				tags, _ := op.(map[string]any)["tags"].([]any)
				keep := false
				for _, tag := range tags {
					if name, _ := tag.(string); served[name] {
						keep = true
					}
				}
				if !keep {
					delete(ops, method)
				}
			}
			if len(ops) == 0 {
				delete(paths, p)
			}
		}
	}
	if tags, ok := doc["tags"].([]any); ok {
		kept := tags[:0]
		for _, tag := range tags {
			if m, ok := tag.(map[string]any); ok && served[fmt.Sprint(m["name"])] {
				kept = append(kept, tag)
			}
		}
		doc["tags"] = kept
	}
	if version == "" {
		version = "dev"
	}
	doc["info"] = map[string]any{
		"title":       "Opsuite API",
		"description": "REST/JSON API of the Opsuite services, translated to gRPC by the gateway.",
		"version":     version,
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("gateway: encode OpenAPI document: %w", err)
	}
	return out, nil
}

// limitBody answers 413 for bodies over limit and caps what handlers may read.
func limitBody(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			writeStatus(w, http.StatusRequestEntityTooLarge, status.New(codes.InvalidArgument,
				"request body of "+strconv.FormatInt(r.ContentLength, 10)+" bytes is over the limit of "+strconv.FormatInt(limit, 10)))
			return
		}
		st := &bodyState{}
		r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, limit), state: st}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyStateKey{}, st)))
	})
}

// bodyState records that a request body went over the limit, which
// grpc-gateway otherwise reports as a plain decode error.
type bodyState struct{ overLimit atomic.Int64 }

type bodyStateKey struct{}

type limitedBody struct {
	io.ReadCloser
	state *bodyState
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.state.overLimit.Store(mbe.Limit)
	}
	return n, err
}

func writeStatus(w http.ResponseWriter, httpStatus int, st *status.Status) {
	body, err := protojson.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":13,"message":"encode error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// errorHandler writes google.rpc.Status JSON with the HTTP status grpc-gateway
// maps from the gRPC code; a body over the size limit is 413.
func errorHandler(log *slog.Logger) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		if st, ok := r.Context().Value(bodyStateKey{}).(*bodyState); ok && st.overLimit.Load() > 0 {
			writeStatus(w, http.StatusRequestEntityTooLarge, status.New(codes.InvalidArgument,
				"request body is over the limit of "+strconv.FormatInt(st.overLimit.Load(), 10)+" bytes"))
			return
		}
		if st, ok := status.FromError(err); ok && st.Code() == codes.Internal {
			log.Error("internal error behind REST call", "method", r.Method, "path", r.URL.Path, "err", st.Message())
		}
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
	}
}

// routingErrorHandler answers unknown routes and methods as google.rpc.Status JSON.
func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusNotFound:
		writeStatus(w, http.StatusNotFound, status.Newf(codes.NotFound, "no route for %s %s", r.Method, r.URL.Path))
	case http.StatusMethodNotAllowed:
		writeStatus(w, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented, "method %s not allowed on %s", r.Method, r.URL.Path))
	default:
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
	}
}
