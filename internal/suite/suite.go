// Package suite assembles Opsuite's components into one process: embedded
// or external NATS, the services, the gRPC server, and the REST gateway with
// the operational HTTP endpoints. `opsuite up` runs every component;
// `opsuite serve --target=...` runs a chosen few. Both come from Run.
package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/grpcserver"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/pkg/readiness"
	"github.com/opsuite/opsuite/pkg/telemetry"
	"github.com/opsuite/opsuite/services/gateway"
	"github.com/opsuite/opsuite/services/healthchecker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Component names accepted by --target.
const (
	TargetHealthChecker = healthchecker.Name
	TargetGateway       = gateway.Name
)

// AllTargets are the components `opsuite up` runs, in start order.
var AllTargets = []string{TargetHealthChecker, TargetGateway}

// Config is everything a suite process needs; cmd/opsuite fills it from
// flags and OPSUITE_* variables.
type Config struct {
	// DataDir holds the embedded NATS JetStream store.
	DataDir string
	// GRPCAddr is where the gRPC services listen.
	GRPCAddr string
	// HTTPAddr is where the gateway, /metrics, /healthz and /readyz listen.
	HTTPAddr string
	// NATSURL names an external NATS server; empty embeds one.
	NATSURL string
	// NATSListen is where the embedded NATS accepts clients; empty means
	// in-process connections only.
	NATSListen string
	// Targets are the components to run; empty means all.
	Targets []string
	// HealthCheckerAddr is where the gateway reaches a health-checker that
	// runs in another process.
	HealthCheckerAddr string
	// ShutdownTimeout bounds a graceful stop; default 10s.
	ShutdownTimeout time.Duration
	// OTLPEndpoint exports traces over OTLP/gRPC when set.
	OTLPEndpoint string
	// Version is reported by the API.
	Version string
}

func (c *Config) has(target string) bool { return slices.Contains(c.Targets, target) }

// Validate fills defaults and reports the first setting that cannot work.
func (c *Config) Validate() error {
	if len(c.Targets) == 0 {
		c.Targets = slices.Clone(AllTargets)
	}
	for _, t := range c.Targets {
		if !slices.Contains(AllTargets, t) {
			return fmt.Errorf("target %q is not a component; choose from %s", t, strings.Join(AllTargets, ", "))
		}
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	needsNATS := c.has(TargetHealthChecker)
	if needsNATS && c.NATSURL == "" && c.DataDir == "" {
		return errors.New("data dir is required for the embedded NATS server (or give --nats-url)")
	}
	if c.has(TargetHealthChecker) {
		if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
			return fmt.Errorf("grpc address %q: %w", c.GRPCAddr, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http address %q: %w", c.HTTPAddr, err)
	}
	if c.has(TargetGateway) {
		if !c.has(TargetHealthChecker) && c.HealthCheckerAddr == "" {
			return errors.New("the gateway without an in-process health-checker needs --healthchecker-addr")
		}
	}
	if c.NATSListen != "" {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			return fmt.Errorf("nats listen address %q: %w", c.NATSListen, err)
		}
	}
	return nil
}

// Run runs the configured components until ctx ends or one fails, then
// stops them in reverse order within the shutdown timeout. It prints where
// each endpoint is reachable to out.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	tp, err := telemetry.New(ctx, telemetry.Config{ServiceName: "opsuite", OTLPEndpoint: cfg.OTLPEndpoint, Insecure: true})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ready := readiness.New()

	// NATS first: everything stateful stands on it.
	var nc *nats.Conn
	var natsURL string
	if cfg.has(TargetHealthChecker) {
		if cfg.NATSURL == "" {
			if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
				return fmt.Errorf("create data dir: %w", err)
			}
			ns, err := natsembed.Start(natsembed.Config{DataDir: filepath.Join(cfg.DataDir, "nats"), ListenAddr: cfg.NATSListen}, log.With("component", "nats"))
			if err != nil {
				return err
			}
			cleanups = append(cleanups, ns.Shutdown)
			nc, err = ns.Connect("opsuite")
			if err != nil {
				return err
			}
			natsURL = ns.ClientURL()
		} else {
			nc, err = nats.Connect(cfg.NATSURL, nats.Name("opsuite"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
				nats.ReconnectWait(time.Second), nats.Timeout(5*time.Second))
			if err != nil {
				return fmt.Errorf("connect to NATS at %s: %w", cfg.NATSURL, err)
			}
			natsURL = cfg.NATSURL
		}
		cleanups = append(cleanups, func() { _ = nc.Drain() })
	}

	// A failing service stops the whole process, like a failing server does.
	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	g, gctx := errgroup.WithContext(runCtx)
	// Services run on their own context, cancelled after the servers stop.
	svcCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServices()
	svcGroup, _ := errgroup.WithContext(svcCtx)

	var gs *grpcserver.Server
	var drainers []interface{ Drain() }
	var inproc *bufconn.Listener
	var grpcLis net.Listener
	var gatewayConns gateway.Conns
	if cfg.has(TargetHealthChecker) {
		gs, err = grpcserver.New(grpcserver.Config{}, grpcserver.Deps{Logger: log.With("component", "grpc"), Registerer: reg, TracerProvider: tp})
		if err != nil {
			return err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/" + healthchecker.Name}, log.With("component", "eventbus"))
		if err != nil {
			return err
		}
		hc, err := healthchecker.New(healthchecker.Config{}, healthchecker.Deps{
			Logger: log.With("service", healthchecker.Name), Registerer: reg, JetStream: js, Events: bus,
		})
		if err != nil {
			return err
		}
		hc.Register(gs)
		drainers = append(drainers, hc)
		svcName := hcv1.HealthCheckerService_ServiceDesc.ServiceName
		gs.SetServing(svcName, false)
		ready.Add(healthchecker.Name)
		svcGroup.Go(func() error {
			if err := hc.Run(svcCtx); err != nil {
				err = fmt.Errorf("%s: %w", healthchecker.Name, err)
				cancelRun(err)
				return err
			}
			return nil
		})
		g.Go(func() error {
			select {
			case <-hc.Ready():
				gs.SetServing(svcName, true)
				gs.SetServing("", true)
				ready.Set(healthchecker.Name, true)
			case <-gctx.Done():
			}
			return nil
		})

		grpcLis, err = net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
		}
		inproc = bufconn.Listen(1 << 20)
		g.Go(func() error { return serveGRPC(gs.Server, grpcLis) })
		g.Go(func() error { return serveGRPC(gs.Server, inproc) })
		conn, err := grpc.NewClient("passthrough:///inprocess",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return inproc.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp))))
		if err != nil {
			return fmt.Errorf("in-process gRPC client: %w", err)
		}
		cleanups = append(cleanups, func() { _ = conn.Close() })
		gatewayConns.HealthChecker = conn
	}

	// Every process serves /metrics, /healthz and /readyz; the gateway adds
	// the REST API and the OpenAPI document.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ready.Register(mux)
	if cfg.has(TargetGateway) {
		if gatewayConns.HealthChecker == nil {
			conn, err := grpc.NewClient(cfg.HealthCheckerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp))))
			if err != nil {
				return fmt.Errorf("health-checker client for %s: %w", cfg.HealthCheckerAddr, err)
			}
			cleanups = append(cleanups, func() { _ = conn.Close() })
			gatewayConns.HealthChecker = conn
		}
		gw, err := gateway.New(ctx, gateway.Config{Version: cfg.Version}, gateway.Deps{Logger: log.With("component", "gateway"), Conns: gatewayConns})
		if err != nil {
			return err
		}
		mux.Handle("/", gw)
		ready.Add(gateway.Name)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	g.Go(func() error {
		if cfg.has(TargetGateway) {
			ready.Set(gateway.Name, true)
		}
		if err := httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})

	fmt.Fprintf(out, "opsuite %s running: components %s\n", cfg.Version, strings.Join(cfg.Targets, ","))
	if grpcLis != nil {
		fmt.Fprintf(out, "  gRPC:    %s\n", grpcLis.Addr())
	}
	if cfg.has(TargetGateway) {
		fmt.Fprintf(out, "  REST:    http://%s/v1/  (OpenAPI: http://%s/openapi.json)\n", httpLis.Addr(), httpLis.Addr())
	}
	fmt.Fprintf(out, "  HTTP:    http://%s/metrics, /healthz, /readyz\n", httpLis.Addr())
	if natsURL != "" {
		fmt.Fprintf(out, "  NATS:    %s  (events on opsuite.>)\n", natsURL)
	}

	// Shutdown in reverse dependency order: REST, gRPC, services, NATS.
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		step := cfg.ShutdownTimeout / 4
		if gs != nil {
			gs.SetServing("", false)
		}
		for _, d := range drainers {
			d.Drain()
		}
		sctx, cancel := context.WithTimeout(context.Background(), step)
		if err := httpSrv.Shutdown(sctx); err != nil {
			_ = httpSrv.Close()
		}
		cancel()
		if gs != nil {
			stopGRPC(gs.Server, step)
		}
		stopServices()
		return nil
	})
	err = g.Wait()
	stopServices()
	if serr := svcGroup.Wait(); serr != nil && err == nil {
		err = serr
	}
	if err == nil && ctx.Err() == nil {
		err = context.Cause(runCtx)
	}
	return err
}

func serveGRPC(s *grpc.Server, lis net.Listener) error {
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("gRPC server on %s: %w", lis.Addr(), err)
	}
	return nil
}

// stopGRPC lets in-flight RPCs finish for up to grace, then cuts the rest
// (long-lived watch streams) off.
func stopGRPC(s *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		s.Stop()
		<-done
	}
}
