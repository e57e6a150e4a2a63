// Package pipelinerunner is the pipeline-runner service: pipelines defined
// as YAML files, run as a DAG of steps (shell and docker executors, deploy,
// gate and remote pipeline steps) from the API, cron schedules and signed
// webhooks, with run state and output persisted in JetStream as they happen
// so a restarted runner resumes its runs. Runners sharing one NATS execute
// each run once, under a lease, and resume the runs of a runner that dies
// (see replicas.go).
package pipelinerunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/shell"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Name is the service's name in health reports and event sources.
const Name = "pipelinerunner"

// Event types this service publishes.
const (
	EventRunQueued    = "opsuite.pipeline.run.queued"
	EventRunStarted   = "opsuite.pipeline.run.started"
	EventStepStarted  = "opsuite.pipeline.step.started"
	EventStepFinished = "opsuite.pipeline.step.finished"
	EventRunFinished  = "opsuite.pipeline.run.finished"
)

// Config tunes the service.
type Config struct {
	// DataDir holds run workspaces and kept artifacts; default
	// <os temp dir>/opsuite-pipelinerunner.
	DataDir string
	// MaxParallelSteps bounds steps running at once over all runs; default 16.
	MaxParallelSteps int
	// StoreReplicas is the JetStream replica count of buckets and streams.
	StoreReplicas int
	// LogMaxAge is how long run output is kept; default 30 days.
	LogMaxAge time.Duration
	// RunnerName names this runner in attempts; default the host name.
	RunnerName string
	// Docker selects the docker executor: "auto" (when the daemon answers),
	// "on" (required) or "off".
	Docker string
	// DockerHost overrides DOCKER_HOST for the docker executor.
	DockerHost string
	// ReplicaID names this process among the runners sharing one NATS; it
	// must be unique among live processes. Default lease.DefaultHolder().
	ReplicaID string
	// LeaseTTL is how long a runner's claim on a run lasts without
	// renewal: a killed runner's runs are resumed by another about this
	// long after it died. Default 10s.
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
	// Deployer runs deploy steps; without it they fail with an
	// infrastructure error.
	Deployer deployerv1.DeployerServiceClient
	// HealthChecker answers health gate steps.
	HealthChecker hcv1.HealthCheckerServiceClient
	// Monitor answers no-firing-alerts gate steps; optional.
	Monitor monitorv1.MonitorServiceClient
	// HTTPClient calls GitLab and GitHub for remote pipeline steps; default
	// a client with a 30 s timeout.
	HTTPClient *http.Client
	// Executors replaces the executors opened from Config (tests).
	Executors map[string]executor.Executor
}

// Service implements opsuite.pipelinerunner.v1.PipelineRunnerService.
type Service struct {
	pb.UnimplementedPipelineRunnerServiceServer

	cfg     Config
	deps    Deps
	log     *slog.Logger
	events  Publisher
	metrics *metrics
	readyCh chan struct{}

	nc     *nats.Conn
	leases *lease.Store
	index  runIndex

	mu        sync.Mutex
	store     *store.Store
	engine    *engine.Engine
	runCtx    context.Context //nolint:containedctx // the Run context, parent of executions started by RPCs
	active    map[string]*execution
	executors map[string]executor.Executor
	sched     sync.Mutex
	wg        sync.WaitGroup
	cron      *cronScheduler
	evq       chan eventbus.Event
	evMu      sync.RWMutex
	evClosed  bool
	drainOnce sync.Once
	draining  chan struct{}

	shipMu      sync.Mutex
	shipOK      bool
	shipChecked time.Time
}

type execution struct {
	x   *engine.Execution
	rec *recorder
}

// New builds the service; Run opens the store and resumes runs.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.JetStream == nil {
		return nil, errors.New("pipelinerunner: JetStream is required")
	}
	if deps.Events == nil {
		return nil, errors.New("pipelinerunner: event publisher is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(os.TempDir(), "opsuite-pipelinerunner")
	}
	if cfg.MaxParallelSteps <= 0 {
		cfg.MaxParallelSteps = 16
	}
	if cfg.RunnerName == "" {
		cfg.RunnerName, _ = os.Hostname()
	}
	if cfg.Docker == "" {
		cfg.Docker = "auto"
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = lease.DefaultHolder()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	s := &Service{
		cfg: cfg, deps: deps, log: log.With("replica", cfg.ReplicaID), events: deps.Events, nc: deps.JetStream.Conn(),
		index:   runIndex{runs: map[string]indexedRun{}},
		readyCh: make(chan struct{}), active: map[string]*execution{},
		evq: make(chan eventbus.Event, 4096), draining: make(chan struct{}),
	}
	s.metrics = newMetrics()
	if deps.Registerer != nil {
		if err := s.metrics.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("pipelinerunner: register metrics: %w", err)
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	pb.RegisterPipelineRunnerServiceServer(r, s)
}

// Drain ends open WatchRun and StreamRunLogs streams so a graceful stop of
// the server does not wait on them; runs go on until Run's context ends.
func (s *Service) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// streamContext is ctx, also ended by Drain.
func (s *Service) streamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.draining:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Ready is closed once the store is open and interrupted runs resumed.
func (s *Service) Ready() <-chan struct{} { return s.readyCh }

// Run opens the store, resumes interrupted runs nobody else executes,
// starts queued ones and the cron schedules, and serves until ctx ends,
// taking over the runs of runners that die. Then it stops every step
// (their records stay as they are, for the next runner to resume) and
// returns.
func (s *Service) Run(ctx context.Context) error {
	published := make(chan struct{})
	go func() {
		defer close(published)
		s.publishEvents()
	}()
	defer func() {
		s.evMu.Lock()
		s.evClosed = true
		close(s.evq)
		s.evMu.Unlock()
		<-published
	}()
	st, err := store.Open(ctx, s.deps.JetStream, s.cfg.StoreReplicas, s.cfg.LogMaxAge)
	if err != nil {
		return fmt.Errorf("pipelinerunner: %w", err)
	}
	leases, err := lease.Open(ctx, s.deps.JetStream, lease.Config{Holder: s.cfg.ReplicaID, Replicas: s.cfg.StoreReplicas, Logger: s.log})
	if err != nil {
		return fmt.Errorf("pipelinerunner: %w", err)
	}
	s.leases = leases
	cancels, err := s.nc.Subscribe(cancelSubject, s.serveCancel)
	if err != nil {
		return fmt.Errorf("pipelinerunner: answer cancel requests: %w", err)
	}
	defer func() { _ = cancels.Unsubscribe() }()
	execs, closers, err := s.openExecutors(ctx)
	if err != nil {
		return fmt.Errorf("pipelinerunner: %w", err)
	}
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	eng := engine.New(engine.Engine{
		Executors:     execs,
		Handlers:      s.stepHandlers(),
		Secrets:       s.secretValues,
		WorkspaceRoot: filepath.Join(s.cfg.DataDir, "workspaces"),
		ArtifactRoot:  filepath.Join(s.cfg.DataDir, "artifacts"),
		Runner:        s.cfg.RunnerName,
		KillOrphan:    s.killOrphan,
		Log:           s.log,
	}, s.cfg.MaxParallelSteps)
	s.mu.Lock()
	s.store, s.engine, s.runCtx, s.executors = st, eng, ctx, execs
	s.mu.Unlock()

	runs, err := st.MirrorRuns(ctx, s.index.apply, s.log)
	if err != nil {
		return fmt.Errorf("pipelinerunner: resume runs: %w", err)
	}
	s.adoptOrphans(ctx)
	s.cron = newCronScheduler(s)
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.cron.run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		runs.Run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.supervise(ctx)
	}()
	close(s.readyCh)
	s.log.Info("pipeline-runner ready", "executors", len(execs))
	<-ctx.Done()
	s.wg.Wait()
	s.mu.Lock()
	active := make([]*execution, 0, len(s.active))
	for _, e := range s.active {
		active = append(active, e)
	}
	s.mu.Unlock()
	for _, e := range active {
		<-e.x.Done()
	}
	return nil
}

func (s *Service) openExecutors(ctx context.Context) (map[string]executor.Executor, []func() error, error) {
	if s.deps.Executors != nil {
		return s.deps.Executors, nil, nil
	}
	execs := map[string]executor.Executor{"shell": &shell.Executor{}}
	var closers []func() error
	if s.cfg.Docker != "off" {
		d, err := openDocker(ctx, s.cfg.DockerHost)
		switch {
		case err == nil:
			execs["docker"] = d
			closers = append(closers, d.Close)
		case s.cfg.Docker == "on":
			return nil, nil, fmt.Errorf("docker executor: %w", err)
		default:
			s.log.Info("docker executor off: no daemon answers", "err", err)
		}
	}
	return execs, closers, nil
}

// killOrphan stops what an attempt interrupted by a runner crash left.
func (s *Service) killOrphan(runID string, step *pb.RunStep) {
	c := step.GetCommand()
	if c == nil {
		return
	}
	if pg := c.GetProcessGroup(); pg != "" {
		if err := shell.KillGroup(pg, "OPSUITE_RUN_ID="+runID); err != nil {
			s.log.Warn("kill orphaned process group", "step", step.GetId(), "err", err)
		}
	}
	if id := c.GetContainerId(); id != "" {
		if d, ok := s.executors["docker"].(interface{ Remove(string) error }); ok {
			_ = d.Remove(id)
		}
	}
}
