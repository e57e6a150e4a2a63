// Package deployer is the deployer service: applications and their
// revisions, and rollouts (rolling, blue-green, canary, recreate) driven
// on Docker or local processes behind a built-in traffic router, gated by
// the health-checker and rolled back straight to the last good revision.
package deployer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/deployer/internal/containers"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/docker"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
	"github.com/opsuite/opsuite/services/deployer/internal/healthgate"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Name is the service's name in health reports and event sources.
const Name = "deployer"

// DefaultEnvironment is used by applications that declare no environments.
const DefaultEnvironment = "default"

// Config tunes the service.
type Config struct {
	// StoreReplicas is the JetStream replica count of the deployer's buckets.
	StoreReplicas int
	// ProcessStateDir holds the process driver's records of running
	// replicas; required unless Deps.Drivers is given.
	ProcessStateDir string
	// Docker selects the Docker driver: "auto" (when the daemon answers,
	// the default), "on" (required) or "off".
	Docker string
	// Kubeconfig turns the kubernetes driver on: a kubeconfig file, or
	// InCluster for the pod's service account. Empty: no kubernetes driver.
	Kubeconfig string
	// KubeContext is the kubeconfig context; empty means its current one.
	KubeContext string
	// ReplicaID names this replica among the deployers sharing the store;
	// a restarted replica with the same id resumes its rollouts at once.
	// Default: a new random id each start (see lease.DefaultHolder).
	ReplicaID string
	// LeaseTTL is how long a dead replica's rollouts wait before another
	// takes them over; default DefaultLeaseTTL.
	LeaseTTL time.Duration
}

// Publisher publishes domain events.
type Publisher interface {
	Publish(ctx context.Context, ev eventbus.Event) (string, error)
}

// Deps are the service's collaborators.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	JetStream  jetstream.JetStream
	Events     Publisher
	// HealthChecker gates new replicas.
	HealthChecker hcv1.HealthCheckerServiceClient
	// Monitor, when set, evaluates analysis queries and answers the
	// rollback policy's firing-alert trigger; without it analysis uses the
	// router's counters and alerts do not roll back.
	Monitor monitorv1.MonitorServiceClient
	// Drivers by kind ("docker", "process"); when nil, New opens them from
	// Config and Run closes them.
	Drivers map[string]driver.Driver
	// Kubernetes is the kubernetes driver; when nil, New opens it when
	// Config.Kubeconfig is set (and Run closes it).
	Kubernetes *kubernetes.Platform
}

// Service implements opsuite.deployer.v1.DeployerService.
type Service struct {
	deployerv1.UnimplementedDeployerServiceServer

	cfg     Config
	log     *slog.Logger
	reg     prometheus.Registerer
	js      jetstream.JetStream
	events  Publisher
	gate    *healthgate.Gate
	monitor monitorv1.MonitorServiceClient
	hc      hcv1.HealthCheckerServiceClient
	drivers map[string]driver.Driver
	// ownDrivers says Run closes the drivers (New opened them).
	ownDrivers bool
	// kube is the kubernetes driver, nil when not configured; ownKube says
	// Run closes it.
	kube    *kubernetes.Platform
	ownKube bool
	// logs ships replicas' output to the log-aggregator.
	logs logFollowers
	// containers serves the direct container API; nil when Docker is off.
	containers *containers.Manager
	store      *store.Store
	// leases say which replica drives which environment's rollout; nc
	// carries signals between replicas.
	leases *lease.Store
	nc     *nats.Conn

	ready   atomic.Bool
	readyCh chan struct{}

	mu      sync.Mutex
	runCtx  context.Context        //nolint:containedctx // the Run context, handed to rollouts started by RPCs
	envs    map[string]*envRuntime // by app/env
	running sync.WaitGroup
	seq     atomic.Uint64
}

// envRuntime is what runs for one environment of one application: the
// router and its watchers on docker and process, nothing but the rollout's
// signals on Kubernetes (router is nil there: its Service routes).
type envRuntime struct {
	router   *router.Router
	endpoint string
	stop     context.CancelFunc
	served   chan struct{}

	mu      sync.Mutex
	active  string // rollout id
	cancel  context.CancelCauseFunc
	signals chan rollout.Signal
	done    chan struct{}
}

// New builds the service; Run loads state and resumes rollouts.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.JetStream == nil || deps.Events == nil || deps.HealthChecker == nil {
		return nil, errors.New("deployer: JetStream, events and a health-checker client are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	drivers, owned := deps.Drivers, false
	if drivers == nil {
		var err error
		if drivers, err = openDrivers(cfg, log); err != nil {
			return nil, err
		}
		owned = true
	}
	kube, ownKube := deps.Kubernetes, false
	if kube == nil {
		var err error
		if kube, err = openKubernetes(cfg, log); err != nil {
			if owned {
				closeDrivers(drivers)
			}
			return nil, err
		}
		ownKube = kube != nil
	}
	var cm *containers.Manager
	if cfg.Docker != "off" {
		var err error
		if cm, err = containers.New("", log.With("component", "containers")); err != nil {
			if owned {
				closeDrivers(drivers)
			}
			if ownKube {
				_ = kube.Close()
			}
			return nil, fmt.Errorf("deployer: %w", err)
		}
	}
	return &Service{
		cfg: cfg, log: log, reg: deps.Registerer, js: deps.JetStream, events: deps.Events,
		gate: healthgate.New(deps.HealthChecker), monitor: deps.Monitor, hc: deps.HealthChecker, drivers: drivers, ownDrivers: owned, containers: cm,
		kube: kube, ownKube: ownKube,
		readyCh: make(chan struct{}), envs: map[string]*envRuntime{},
	}, nil
}

// openDrivers opens local processes always and Docker when its daemon
// answers (or fails when Config.Docker is "on" and it does not).
func openDrivers(cfg Config, log *slog.Logger) (map[string]driver.Driver, error) {
	if cfg.ProcessStateDir == "" {
		return nil, errors.New("deployer: process state dir is required")
	}
	proc, err := process.New(process.Config{StateDir: cfg.ProcessStateDir}, log.With("driver", "process"))
	if err != nil {
		return nil, fmt.Errorf("deployer: process driver: %w", err)
	}
	drivers := map[string]driver.Driver{"process": proc}
	switch cfg.Docker {
	case "off":
		return drivers, nil
	case "", "auto", "on":
	default:
		_ = proc.Close()
		return nil, fmt.Errorf("deployer: docker %q: use auto, on or off", cfg.Docker)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := docker.New(ctx, docker.Config{PingTimeout: 3 * time.Second}, log.With("driver", "docker"))
	switch {
	case err == nil:
		drivers["docker"] = d
	case cfg.Docker == "on":
		_ = proc.Close()
		return nil, fmt.Errorf("deployer: docker driver: %w", err)
	default:
		log.Info("docker driver off: no daemon answers, so image workloads cannot deploy here", "reason", err)
	}
	return drivers, nil
}

func closeDrivers(drivers map[string]driver.Driver) {
	for _, d := range drivers {
		_ = d.Close()
	}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { deployerv1.RegisterDeployerServiceServer(r, s) }

// Ready is closed once state is loaded and rollouts resumed.
func (s *Service) Ready() <-chan struct{} { return s.readyCh }

// Run opens the store, brings every deployed environment's router back
// and resumes unfinished rollouts, then serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	st, err := store.Open(ctx, s.js, s.cfg.StoreReplicas)
	if err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	holder := s.cfg.ReplicaID
	if holder == "" {
		holder = lease.DefaultHolder()
	}
	leases, err := lease.Open(ctx, s.js, lease.Config{Holder: holder, Replicas: s.cfg.StoreReplicas, Logger: s.log})
	if err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	s.mu.Lock()
	s.store = st
	s.runCtx = ctx
	s.leases = leases
	s.nc = s.js.Conn()
	s.mu.Unlock()
	sub, err := s.serveSignals(ctx, s.nc)
	if err != nil {
		return fmt.Errorf("deployer: subscribe to rollout signals: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.restore(ctx); err != nil {
		return fmt.Errorf("deployer: restore: %w", err)
	}
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		s.adoptLoop(ctx)
	}()
	s.ready.Store(true)
	close(s.readyCh)
	s.log.Info("deployer ready", "drivers", len(s.drivers), "kubernetes", s.kube != nil, "replica", holder)
	<-ctx.Done()
	s.running.Wait()
	s.mu.Lock()
	for _, e := range s.envs {
		e.close()
	}
	s.mu.Unlock()
	if s.ownDrivers {
		closeDrivers(s.drivers)
	}
	if s.ownKube {
		_ = s.kube.Close()
	}
	if s.containers != nil {
		_ = s.containers.Close()
	}
	return nil
}

// close stops the environment's router, if it has one.
func (e *envRuntime) close() {
	if e.router == nil {
		return
	}
	e.stop()
	<-e.served
	_ = e.router.Close()
}

// envFor returns the runtime of app/env for spec's driver: on Kubernetes
// one without a router, else routerFor's.
func (s *Service) envFor(app, env string, spec *deployerv1.ApplicationSpec, listen string) (*envRuntime, error) {
	if driverKindOf(spec) != kubernetes.Name {
		return s.routerFor(app, env, listen)
	}
	key := app + "/" + env
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.envs[key]; ok {
		return e, nil
	}
	e := &envRuntime{endpoint: kubeEndpoint(app, env, spec), stop: func() {}}
	s.envs[key] = e
	return e, nil
}

// routerFor returns the running router of app/env, starting it on listen
// (or a free loopback port) the first time.
func (s *Service) routerFor(app, env, listen string) (*envRuntime, error) {
	key := app + "/" + env
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.envs[key]; ok {
		return e, nil
	}
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	r, err := router.New(router.Config{App: app + "-" + env}, router.Deps{Logger: s.log.With("router", key), Registerer: s.reg})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("router for %s on %s: %w", key, listen, err)
	}
	ctx, cancel := context.WithCancel(s.runCtx)
	e := &envRuntime{router: r, endpoint: "http://" + lis.Addr().String(), stop: cancel, served: make(chan struct{})}
	go func() {
		defer close(e.served)
		if err := r.Serve(ctx, lis); err != nil {
			s.log.Error("router stopped", "app", app, "env", env, "err", err)
		}
	}()
	s.running.Add(3)
	go func() {
		defer s.running.Done()
		s.watchReplicaHealth(ctx, app, env, e)
	}()
	go func() {
		defer s.running.Done()
		s.followEnvLogs(ctx, app, env)
	}()
	go func() {
		defer s.running.Done()
		s.autoscaleLoop(ctx, app, env, e)
	}()
	s.envs[key] = e
	s.log.Info("router listening", "app", app, "env", env, "endpoint", e.endpoint)
	return e, nil
}
