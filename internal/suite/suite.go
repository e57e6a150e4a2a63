// Package suite assembles Opsuite's components into one process: embedded
// or external NATS, the services, the gRPC server, and the REST gateway with
// the operational HTTP endpoints. `opsuite up` runs every component;
// `opsuite serve --target=...` runs a chosen few. Both come from Run.
package suite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/internal/demo"
	"github.com/opsuite/opsuite/pkg/auth"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/grpcserver"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/pkg/logship"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/pkg/readiness"
	"github.com/opsuite/opsuite/pkg/telemetry"
	"github.com/opsuite/opsuite/services/deployer"
	"github.com/opsuite/opsuite/services/gateway"
	"github.com/opsuite/opsuite/services/gateway/access"
	"github.com/opsuite/opsuite/services/gateway/report"
	"github.com/opsuite/opsuite/services/healthchecker"
	"github.com/opsuite/opsuite/services/logaggregator"
	"github.com/opsuite/opsuite/services/monitor"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Component names accepted by --target.
const (
	TargetHealthChecker  = healthchecker.Name
	TargetMonitor        = monitor.Name
	TargetLogAggregator  = logaggregator.Name
	TargetDeployer       = deployer.Name
	TargetPipelineRunner = pipelinerunner.Name
	TargetGateway        = gateway.Name
)

// AllTargets are the components `opsuite up` runs, in start order: a
// service starts after those it calls.
var AllTargets = []string{TargetHealthChecker, TargetMonitor, TargetLogAggregator, TargetDeployer, TargetPipelineRunner, TargetGateway}

// serviceTargets are the components that keep state in NATS and serve gRPC.
var serviceTargets = []string{TargetHealthChecker, TargetMonitor, TargetLogAggregator, TargetDeployer, TargetPipelineRunner}

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
	// HealthCheckerAddr is where the gateway and the deployer reach a
	// health-checker that runs in another process.
	HealthCheckerAddr string
	// DeployerAddr is where the gateway and the pipeline-runner reach a
	// deployer in another process.
	DeployerAddr string
	// MonitorAddr is where the gateway and the deployer reach a monitor in
	// another process; without one the deployer analyses with its router.
	MonitorAddr string
	// LogAggregatorAddr is where the gateway reaches a log-aggregator in
	// another process.
	LogAggregatorAddr string
	// PipelineRunnerAddr is where the gateway reaches a pipeline-runner in
	// another process.
	PipelineRunnerAddr string
	// TLSCert and TLSKey, when set, serve gRPC and HTTP over TLS only.
	TLSCert, TLSKey string
	// TLSCA verifies services in other processes; empty uses the system's
	// roots. Set with TLS on both sides of split mode.
	TLSCA string
	// Auth is "on" (default: every call needs a token with the right role)
	// or "off".
	Auth string
	// AdminToken is the bootstrap admin token's secret ($OPSUITE_ADMIN_TOKEN);
	// empty generates one at the first start and prints it once.
	AdminToken string
	// ServiceToken is the token services use to call services in other
	// processes ($OPSUITE_SERVICE_TOKEN, split mode with auth on).
	ServiceToken string
	// Docker selects the deployer's Docker driver: "auto" (when the daemon
	// answers), "on" (required) or "off".
	Docker string
	// Kubeconfig turns the deployer's kubernetes driver on: a kubeconfig
	// file, or "in-cluster" for the pod's service account; KubeContext is
	// the kubeconfig context (empty: its current one).
	Kubeconfig, KubeContext string
	// ShutdownTimeout bounds a graceful stop; default 10s.
	ShutdownTimeout time.Duration
	// OTLPEndpoint exports traces over OTLP/gRPC when set.
	OTLPEndpoint string
	// Demo runs the bundled example end to end once the suite is ready
	// (needs every component in this process and the repository).
	Demo bool
	// Version is reported by the API.
	Version string
	// ReplicaID names this process among replicas of its services sharing
	// one NATS (leases, pkg/lease); unique among live processes. Empty:
	// the one kept in the data dir (replicaID) — for the health-checker
	// only with the embedded NATS, else random per start.
	ReplicaID string
	// StoreReplicas is the JetStream replica count of every stream and
	// bucket the services create (1, 3 or 5; 0 means 1). More than 1 needs
	// an external clustered NATS.
	StoreReplicas int
}

func (c *Config) has(target string) bool { return slices.Contains(c.Targets, target) }

// hasService reports whether any stateful service runs in this process.
func (c *Config) hasService() bool {
	return slices.ContainsFunc(serviceTargets, c.has)
}

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
	if c.hasService() && c.NATSURL == "" && c.DataDir == "" {
		return errors.New("data dir is required for the embedded NATS server (or give --nats-url)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS needs both --tls-cert and --tls-key")
	}
	switch c.Auth {
	case "":
		c.Auth = "on"
	case "on", "off":
	default:
		return fmt.Errorf("auth %q: use on or off", c.Auth)
	}
	switch c.Docker {
	case "":
		c.Docker = "auto"
	case "auto", "on", "off":
	default:
		return fmt.Errorf("docker %q: use auto, on or off", c.Docker)
	}
	if c.has(TargetDeployer) && !c.has(TargetHealthChecker) && c.HealthCheckerAddr == "" {
		return errors.New("the deployer without an in-process health-checker needs --healthchecker-addr")
	}
	if c.has(TargetPipelineRunner) && !c.has(TargetHealthChecker) && c.HealthCheckerAddr == "" {
		return errors.New("the pipeline-runner without an in-process health-checker needs --healthchecker-addr")
	}
	if c.hasService() || c.has(TargetGateway) {
		if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
			return fmt.Errorf("grpc address %q: %w", c.GRPCAddr, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http address %q: %w", c.HTTPAddr, err)
	}
	if c.has(TargetGateway) {
		if !c.hasService() && c.HealthCheckerAddr == "" && c.DeployerAddr == "" && c.MonitorAddr == "" &&
			c.LogAggregatorAddr == "" && c.PipelineRunnerAddr == "" {
			return errors.New("the gateway alone needs the address of at least one service (--healthchecker-addr, --deployer-addr, --monitor-addr, --logaggregator-addr, --pipelinerunner-addr)")
		}
	}
	if c.Auth == "on" && c.has(TargetGateway) && !c.hasService() && c.NATSURL == "" {
		return errors.New("the gateway alone needs --nats-url to check tokens (or --auth=off)")
	}
	if c.Demo && len(c.Targets) != len(AllTargets) {
		return errors.New("the demo needs every component in this process (opsuite up)")
	}
	switch c.StoreReplicas {
	case 0:
		c.StoreReplicas = 1
	case 1, 3, 5:
	default:
		return fmt.Errorf("store replicas %d: use 1, 3 or 5 (a JetStream cluster keeps an odd number of copies)", c.StoreReplicas)
	}
	if c.StoreReplicas > 1 && c.NATSURL == "" {
		return fmt.Errorf("store replicas %d needs a clustered NATS (--nats-url): the embedded server is a single node", c.StoreReplicas)
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
	if cfg.hasService() || (cfg.has(TargetGateway) && cfg.Auth == "on") {
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
	var accessSvc *access.Service
	var drainers []interface{ Drain() }
	var grpcLis net.Listener
	serverTLS, inprocTLS, remoteTLS, err := tlsConfigs(cfg)
	if err != nil {
		return err
	}
	// Two kinds of client connections: the gateway's carry each REST
	// caller's own token; the services' carry the suite's credential (this
	// process's internal secret in process, the service token across).
	var gatewayConns, svcConns gateway.Conns
	var inprocConn, inprocSvcConn *grpc.ClientConn
	var inprocLis *bufconn.Listener
	internalSecret := auth.NewSecret()
	newClient := func(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
		opts = append(opts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp))))
		switch {
		case target == inprocTarget && inprocTLS != nil:
			opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(inprocTLS)))
		case target != inprocTarget && remoteTLS != nil:
			opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(remoteTLS)))
		default:
			opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, fmt.Errorf("gRPC client for %s: %w", target, err)
		}
		cleanups = append(cleanups, func() { _ = conn.Close() })
		return conn, nil
	}
	// dial connects to a service in another process, for the gateway and for
	// the services here.
	dial := func(addr string) (gw, svc *grpc.ClientConn, err error) {
		if gw, err = newClient(addr); err != nil {
			return nil, nil, err
		}
		if cfg.ServiceToken == "" {
			return gw, gw, nil
		}
		svc, err = newClient(addr, grpc.WithPerRPCCredentials(bearer(cfg.ServiceToken)))
		return gw, svc, err
	}
	js, err := jetstreamOf(nc)
	if err != nil {
		return err
	}
	if cfg.hasService() || cfg.has(TargetGateway) {
		// Large enough for a metrics batch of 100k series; REST bodies stay at
		// the gateway's 4 MiB.
		gcfg := grpcserver.Config{MaxRecvMsgSize: 64 << 20, TLS: serverTLS}
		var tokens *auth.Store
		if cfg.Auth == "on" {
			if tokens, err = auth.Open(ctx, js, cfg.StoreReplicas); err != nil {
				return err
			}
			generated, err := tokens.Bootstrap(ctx, cfg.AdminToken)
			if err != nil {
				return err
			}
			if generated != "" {
				fmt.Fprintf(out, "  admin token (shown once; set OPSUITE_ADMIN_TOKEN to choose your own): %s\n", generated)
			}
			var audit auth.Publisher
			if nc != nil {
				bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/audit", Replicas: cfg.StoreReplicas}, log.With("component", "eventbus"))
				if err != nil {
					return err
				}
				audit = bus
			}
			guard := &auth.Guard{Store: tokens, Internal: internalSecret, Audit: audit, Log: log.With("component", "auth")}
			gcfg.Auth = guard.Interceptors()
		}
		accessSvc = access.New(tokens)
		gs, err = grpcserver.New(gcfg, grpcserver.Deps{Logger: log.With("component", "grpc"), Registerer: reg, TracerProvider: tp})
		if err != nil {
			return err
		}
		grpcLis, err = net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
		}
		// The gateway and services in this process reach each other over an
		// in-memory connection, through the same interceptors as outside callers.
		inproc := bufconn.Listen(1 << 20)
		dialer := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return inproc.DialContext(ctx) })
		if inprocConn, err = newClient(inprocTarget, dialer); err != nil {
			return err
		}
		if inprocSvcConn, err = newClient(inprocTarget, dialer, grpc.WithPerRPCCredentials(bearer(internalSecret))); err != nil {
			return err
		}
		inprocLis = inproc
	}
	// Every service's own log goes to stderr and, when a log-aggregator is
	// reachable, to it as source <service> (spooled on disk while it is not).
	var laConn *grpc.ClientConn
	switch {
	case cfg.has(TargetLogAggregator):
		gatewayConns.LogAggregator, svcConns.LogAggregator = inprocConn, inprocSvcConn
	case cfg.LogAggregatorAddr != "":
		if gatewayConns.LogAggregator, svcConns.LogAggregator, err = dial(cfg.LogAggregatorAddr); err != nil {
			return err
		}
	}
	laConn = svcConns.LogAggregator
	serviceLog := func(name string) *slog.Logger {
		base := log.With("service", name)
		if laConn == nil {
			return base
		}
		ship, err := logship.New(logship.Config{
			Source: name, SpoolDir: filepath.Join(dataDirOf(cfg), "logship", name), Logger: log.With("component", "logship", "source", name),
		}, lav1.NewLogAggregatorServiceClient(laConn))
		if err != nil {
			log.Warn("service logs stay local", "service", name, "err", err)
			return base
		}
		svcGroup.Go(func() error { return ship.Run(svcCtx) })
		return slog.New(ship.Handler(log.Handler())).With("service", name)
	}
	// start runs a service and marks it serving once it is ready.
	var readyChans []<-chan struct{}
	start := func(name, grpcName string, svc service) {
		if d, ok := svc.(interface{ Drain() }); ok {
			drainers = append(drainers, d) // ends its streams at shutdown
		}
		svc.Register(gs)
		gs.SetServing(grpcName, false)
		ready.Add(name)
		readyChans = append(readyChans, svc.Ready())
		svcGroup.Go(func() error {
			if err := svc.Run(svcCtx); err != nil {
				err = fmt.Errorf("%s: %w", name, err)
				cancelRun(err)
				return err
			}
			return nil
		})
		g.Go(func() error {
			select {
			case <-svc.Ready():
				gs.SetServing(grpcName, true)
				ready.Set(name, true)
			case <-gctx.Done():
			}
			return nil
		})
	}
	if cfg.has(TargetHealthChecker) {
		bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/" + healthchecker.Name, Replicas: cfg.StoreReplicas}, log.With("component", "eventbus"))
		if err != nil {
			return err
		}
		// The health-checker keeps nothing on disk: its id is kept in the
		// data dir only where the embedded NATS uses that dir anyway.
		hcReplica, err := replicaOf(cfg, cfg.NATSURL == "")
		if err != nil {
			return err
		}
		hc, err := healthchecker.New(healthchecker.Config{ReplicaID: hcReplica, StoreReplicas: cfg.StoreReplicas}, healthchecker.Deps{
			Logger: serviceLog(healthchecker.Name), Registerer: reg, JetStream: js, Events: bus,
		})
		if err != nil {
			return err
		}
		start(healthchecker.Name, hcv1.HealthCheckerService_ServiceDesc.ServiceName, hc)
		gatewayConns.HealthChecker, svcConns.HealthChecker = inprocConn, inprocSvcConn
	} else if cfg.HealthCheckerAddr != "" {
		if gatewayConns.HealthChecker, svcConns.HealthChecker, err = dial(cfg.HealthCheckerAddr); err != nil {
			return err
		}
	}
	if cfg.has(TargetMonitor) {
		bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/" + monitor.Name, Replicas: cfg.StoreReplicas}, log.With("component", "eventbus"))
		if err != nil {
			return err
		}
		monReplica, err := replicaOf(cfg, true)
		if err != nil {
			return err
		}
		mon, err := monitor.New(monitor.Config{DataDir: filepath.Join(dataDirOf(cfg), "monitor"), ReplicaID: monReplica, StoreReplicas: cfg.StoreReplicas}, monitor.Deps{
			Logger: serviceLog(monitor.Name), Registerer: reg, JetStream: js, Events: bus, Consumer: bus,
		})
		if err != nil {
			return err
		}
		start(monitor.Name, monitorv1.MonitorService_ServiceDesc.ServiceName, mon)
		gatewayConns.Monitor, svcConns.Monitor = inprocConn, inprocSvcConn
	} else if cfg.MonitorAddr != "" {
		if gatewayConns.Monitor, svcConns.Monitor, err = dial(cfg.MonitorAddr); err != nil {
			return err
		}
	}
	if cfg.has(TargetLogAggregator) {
		bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/" + logaggregator.Name, Replicas: cfg.StoreReplicas}, log.With("component", "eventbus"))
		if err != nil {
			return err
		}
		laReplica, err := replicaOf(cfg, true)
		if err != nil {
			return err
		}
		la, err := logaggregator.New(logaggregator.Config{DataDir: filepath.Join(dataDirOf(cfg), "logaggregator"), ReplicaID: laReplica, StreamReplicas: cfg.StoreReplicas}, logaggregator.Deps{
			Logger: serviceLog(logaggregator.Name), Registerer: reg, JetStream: js, Events: bus, Deploys: bus,
		})
		if err != nil {
			return err
		}
		start(logaggregator.Name, lav1.LogAggregatorService_ServiceDesc.ServiceName, la)
	}
	if cfg.has(TargetDeployer) {
		bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/" + deployer.Name, Replicas: cfg.StoreReplicas}, log.With("component", "eventbus"))
		if err != nil {
			return err
		}
		deps := deployer.Deps{
			Logger: serviceLog(deployer.Name), Registerer: reg, JetStream: js, Events: bus,
			HealthChecker: hcv1.NewHealthCheckerServiceClient(svcConns.HealthChecker),
		}
		if svcConns.Monitor != nil {
			deps.Monitor = monitorv1.NewMonitorServiceClient(svcConns.Monitor)
		}
		replica, err := replicaOf(cfg, true)
		if err != nil {
			return err
		}
		dep, err := deployer.New(deployer.Config{
			ProcessStateDir: filepath.Join(dataDirOf(cfg), "deployer", "process"), Docker: cfg.Docker,
			Kubeconfig: cfg.Kubeconfig, KubeContext: cfg.KubeContext, ReplicaID: replica, StoreReplicas: cfg.StoreReplicas,
		}, deps)
		if err != nil {
			return err
		}
		start(deployer.Name, deployerv1.DeployerService_ServiceDesc.ServiceName, dep)
		gatewayConns.Deployer, svcConns.Deployer = inprocConn, inprocSvcConn
	} else if cfg.DeployerAddr != "" {
		if gatewayConns.Deployer, svcConns.Deployer, err = dial(cfg.DeployerAddr); err != nil {
			return err
		}
	}
	if cfg.has(TargetPipelineRunner) {
		bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/" + pipelinerunner.Name, Replicas: cfg.StoreReplicas}, log.With("component", "eventbus"))
		if err != nil {
			return err
		}
		deps := pipelinerunner.Deps{
			Logger: serviceLog(pipelinerunner.Name), Registerer: reg, JetStream: js, Events: bus,
			HealthChecker: hcv1.NewHealthCheckerServiceClient(svcConns.HealthChecker),
		}
		if svcConns.Deployer != nil {
			deps.Deployer = deployerv1.NewDeployerServiceClient(svcConns.Deployer)
		}
		if svcConns.Monitor != nil {
			deps.Monitor = monitorv1.NewMonitorServiceClient(svcConns.Monitor)
		}
		prReplica, err := replicaOf(cfg, true)
		if err != nil {
			return err
		}
		pr, err := pipelinerunner.New(pipelinerunner.Config{DataDir: filepath.Join(dataDirOf(cfg), "pipelinerunner"), Docker: cfg.Docker, ReplicaID: prReplica, StoreReplicas: cfg.StoreReplicas}, deps)
		if err != nil {
			return err
		}
		start(pipelinerunner.Name, prv1.PipelineRunnerService_ServiceDesc.ServiceName, pr)
		gatewayConns.PipelineRunner, svcConns.PipelineRunner = inprocConn, inprocSvcConn
	} else if cfg.PipelineRunnerAddr != "" {
		if gatewayConns.PipelineRunner, _, err = dial(cfg.PipelineRunnerAddr); err != nil {
			return err
		}
	}
	if cfg.has(TargetGateway) {
		// The gateway's own gRPC services: the report reads every service
		// this process reaches.
		var rc report.Clients
		if c := gatewayConns.HealthChecker; c != nil {
			rc.HealthChecker = hcv1.NewHealthCheckerServiceClient(c)
		}
		if c := gatewayConns.Monitor; c != nil {
			rc.Monitor = monitorv1.NewMonitorServiceClient(c)
		}
		if c := gatewayConns.LogAggregator; c != nil {
			rc.LogAggregator = lav1.NewLogAggregatorServiceClient(c)
		}
		if c := gatewayConns.Deployer; c != nil {
			rc.Deployer = deployerv1.NewDeployerServiceClient(c)
		}
		if c := gatewayConns.PipelineRunner; c != nil {
			rc.PipelineRunner = prv1.NewPipelineRunnerServiceClient(c)
		}
		gatewayv1.RegisterReportServiceServer(gs, report.New(rc))
		gs.SetServing(gatewayv1.ReportService_ServiceDesc.ServiceName, true)
		gatewayv1.RegisterAccessServiceServer(gs, accessSvc)
		gs.SetServing(gatewayv1.AccessService_ServiceDesc.ServiceName, true)
		gatewayConns.Gateway = inprocConn
	}
	if gs != nil {
		// Serve once every service is registered.
		g.Go(func() error { return serveGRPC(gs.Server, grpcLis) })
		g.Go(func() error { return serveGRPC(gs.Server, inprocLis) })
		g.Go(func() error {
			for _, ch := range readyChans {
				select {
				case <-ch:
				case <-gctx.Done():
					return nil
				}
			}
			gs.SetServing("", true)
			if cfg.Demo {
				runDemo(gctx, cfg, inprocSvcConn, log, out)
			}
			return nil
		})
	}

	// Every process serves /metrics, /healthz and /readyz; the gateway adds
	// the REST API and the OpenAPI document.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ready.Register(mux)
	if cfg.has(TargetGateway) {
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
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), TLSConfig: serverTLS}
	g.Go(func() error {
		if cfg.has(TargetGateway) {
			ready.Set(gateway.Name, true)
		}
		serve := httpSrv.Serve
		if serverTLS != nil {
			serve = func(l net.Listener) error { return httpSrv.ServeTLS(l, "", "") }
		}
		if err := serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})

	fmt.Fprintf(out, "opsuite %s running: components %s\n", cfg.Version, strings.Join(cfg.Targets, ","))
	if grpcLis != nil {
		fmt.Fprintf(out, "  gRPC:    %s\n", grpcLis.Addr())
	}
	if cfg.has(TargetGateway) {
		fmt.Fprintf(out, "  REST:    %s://%s/v1/  (OpenAPI: /openapi.json, dashboard: /ui/)\n", scheme(cfg), httpLis.Addr())
	}
	fmt.Fprintf(out, "  HTTP:    %s://%s/metrics, /healthz, /readyz\n", scheme(cfg), httpLis.Addr())
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

// runDemo runs the bundled example; a failure is reported and the suite
// keeps running, so the dashboard stays up to look at what happened.
func runDemo(ctx context.Context, cfg Config, conn *grpc.ClientConn, log *slog.Logger, out io.Writer) {
	opts := demo.Options{
		Out:       filepath.Join(dataDirOf(cfg), "demo"),
		Docker:    cfg.Docker == "on" || (cfg.Docker == "auto" && demo.DockerAnswers(ctx)),
		Dashboard: scheme(cfg) + "://" + cfg.HTTPAddr + "/ui/",
	}
	err := demo.Run(ctx, demo.Clients{
		Deployer:       deployerv1.NewDeployerServiceClient(conn),
		PipelineRunner: prv1.NewPipelineRunnerServiceClient(conn),
		Report:         gatewayv1.NewReportServiceClient(conn),
	}, opts, out)
	if err != nil && ctx.Err() == nil {
		log.Error("demo failed; the suite keeps running", "err", err)
		fmt.Fprintf(out, "== demo failed: %v\n", err)
	}
}

func scheme(cfg Config) string {
	if cfg.TLSCert != "" {
		return "https"
	}
	return "http"
}

// inprocTarget names the in-memory connection between the components of
// one process.
const inprocTarget = "passthrough:///inprocess"

// tlsConfigs builds the server's TLS (nil without a certificate), the
// in-process clients' (trusting exactly the server's certificate) and the
// clients' of services in other processes (the CA file, or the system's
// roots when this process serves TLS; nil otherwise).
func tlsConfigs(cfg Config) (server, inproc, remote *tls.Config, err error) {
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("TLS certificate: %w", err)
		}
		server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("TLS certificate: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		name := leaf.Subject.CommonName
		if len(leaf.DNSNames) > 0 {
			name = leaf.DNSNames[0]
		}
		inproc = &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}
	}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, nil, fmt.Errorf("TLS CA %s holds no PEM certificate", cfg.TLSCA)
		}
		remote = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	} else if server != nil {
		remote = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return server, inproc, remote, nil
}

// bearer is a per-call credential for the suite's own calls.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = bearer("")

// replicaOf is the replica id of this process's services: --replica-id,
// else, when kept is set, the one kept in the data dir (replicaID), else
// empty (the service picks a random one per start).
func replicaOf(cfg Config, kept bool) (string, error) {
	switch {
	case cfg.ReplicaID != "":
		if err := lease.CheckHolder(cfg.ReplicaID); err != nil {
			return "", err
		}
		return cfg.ReplicaID, nil
	case kept:
		return lease.KeptHolder(dataDirOf(cfg))
	}
	return "", nil
}

// dataDirOf is where services keep local files: the data dir, or the
// working directory when running against an external NATS without one.
func dataDirOf(cfg Config) string {
	if cfg.DataDir == "" {
		return "."
	}
	return cfg.DataDir
}

// service is what every Opsuite service provides to the suite.
type service interface {
	Register(grpc.ServiceRegistrar)
	Run(ctx context.Context) error
	Ready() <-chan struct{}
}

func jetstreamOf(nc *nats.Conn) (jetstream.JetStream, error) {
	if nc == nil {
		return nil, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}
