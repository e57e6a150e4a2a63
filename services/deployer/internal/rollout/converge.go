package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"golang.org/x/sync/errgroup"
)

// Traffic is the part of the traffic router the executor uses.
type Traffic interface {
	SetBackends(rev int64, addrs []string) error
	SetWeights(weights map[int64]int) error
	Drain(addr string, timeout time.Duration) (int, error)
}

// Health gates replicas on their health checks.
type Health interface {
	Register(ctx context.Context, r driver.Replica, group string, hc *deployerv1.HealthCheck) (string, error)
	WaitPassing(ctx context.Context, group string, names []string) error
	Unregister(ctx context.Context, names ...string) error
}

// Converger is what a rollout drives: it brings an application
// environment to a step's target state. Both methods must be idempotent (a
// restarted deployer calls them again for the step it was in) and return an
// error wrapping ErrProgressDeadline when the platform gave up waiting.
type Converger interface {
	// Converge reaches s from whatever runs now.
	Converge(ctx context.Context, s State) error
	// Rollback returns to s.New (the stable revision) at once: all traffic
	// first, then its replicas at full size, then s.Old (the revision that
	// failed) removed. With s.New.Number 0 it removes everything.
	Rollback(ctx context.Context, s State) error
}

// ErrProgressDeadline: the platform reports the step made no progress within
// the application's progress deadline.
var ErrProgressDeadline = errors.New("progress deadline exceeded")

// Executor moves an application's replicas and traffic towards a target.
// Every call re-reads the replicas from the driver, so it is idempotent: a
// deployer that restarts mid-step calls it again and it finishes the step
// without duplicating or orphaning replicas.
type Executor struct {
	Driver  driver.Driver
	Traffic Traffic // nil when no router fronts the application
	Health  Health
	Log     *slog.Logger
	// NewID names a new replica; it must be unique and a DNS-1123 label.
	NewID func(app, env string, rev int64) string
	// DrainTimeout bounds waiting for in-flight requests of a leaving replica.
	DrainTimeout time.Duration
	// OnStarted and OnStopped, when set, are told of each replica the
	// executor started or stopped.
	OnStarted, OnStopped func(driver.Replica)
}

// Revision is one side of a rollout: a revision number and its spec.
type Revision struct {
	Number int64
	Spec   *deployerv1.ApplicationSpec
}

// State is what a step should leave behind.
type State struct {
	App, Env string
	New, Old Revision
	// NewReplicas and OldReplicas ready and routed once the step is done.
	NewReplicas, OldReplicas int32
	// Weight is the percent of traffic on the new revision.
	Weight int32
	// Restart, when set, replaces replicas of the same revision: only
	// replicas labelled LabelRestart with this token count as new, so the
	// ones running before the restart are old (New and Old are then the
	// same revision).
	Restart string
}

// LabelRestart marks the replicas a restart started with its token.
const LabelRestart = "opsuite.restart"

// isNew says whether r is one of the new revision's replicas for s.
func (s State) isNew(r driver.Replica) bool {
	return r.Revision == s.New.Number && (s.Restart == "" || r.Labels[LabelRestart] == s.Restart)
}

// Group is the health-checker group of an application's environment.
func Group(app, env string) string { return app + "-" + env }

// Converge brings replicas and traffic to s: it starts what is missing and
// waits until healthy, routes traffic, then drains and stops what is extra
// (replicas of other revisions, and of these beyond the counts). On a
// failed health check it returns an error wrapping the health gate's and
// leaves the failing replicas out of rotation.
func (e *Executor) Converge(ctx context.Context, s State) error {
	replicas, err := e.Driver.List(ctx, map[string]string{driver.LabelApp: s.App, driver.LabelEnvironment: s.Env})
	if err != nil {
		return fmt.Errorf("list replicas of %s/%s: %w", s.App, s.Env, err)
	}
	var keepNew, keepOld, extra []driver.Replica
	for _, r := range replicas {
		live := r.State == driver.StateRunning || r.State == driver.StateStarting
		switch {
		case !live:
			extra = append(extra, r)
		case s.isNew(r) && len(keepNew) < int(s.NewReplicas):
			keepNew = append(keepNew, r)
		case !s.isNew(r) && r.Revision == s.Old.Number && s.Old.Number != 0 && len(keepOld) < int(s.OldReplicas):
			keepOld = append(keepOld, r)
		default:
			extra = append(extra, r)
		}
	}
	group := Group(s.App, s.Env)
	started, err := e.start(ctx, s, s.New, int(s.NewReplicas)-len(keepNew), s.Restart)
	keepNew = append(keepNew, started...)
	if err != nil {
		return err
	}
	startedOld, err := e.start(ctx, s, s.Old, int(s.OldReplicas)-len(keepOld), "")
	keepOld = append(keepOld, startedOld...)
	if err != nil {
		return err
	}
	if err := e.waitHealthy(ctx, group, s, append(slices.Clone(keepNew), keepOld...)); err != nil {
		return err
	}
	if err := e.route(s, keepNew, keepOld); err != nil {
		return err
	}
	return e.stop(ctx, s, extra)
}

// Rollback puts all traffic on s.New at once, if it still has backends,
// then converges to s.
func (e *Executor) Rollback(ctx context.Context, s State) error {
	if e.Traffic != nil && s.New.Number != 0 {
		_ = e.Traffic.SetWeights(map[int64]int{s.New.Number: 100})
	}
	return e.Converge(ctx, s)
}

// start launches n replicas of rev (labelled with the restart token, when
// not empty) and registers them with the health gate; it returns those
// that started even when some failed.
func (e *Executor) start(ctx context.Context, s State, rev Revision, n int, restart string) ([]driver.Replica, error) {
	if n <= 0 || rev.Number == 0 {
		return nil, nil
	}
	var mu sync.Mutex
	var out []driver.Replica
	g, gctx := errgroup.WithContext(ctx)
	for range n {
		g.Go(func() error {
			spec := replicaSpec(e.NewID(s.App, s.Env, rev.Number), s.App, s.Env, rev)
			if restart != "" {
				spec.Labels = map[string]string{LabelRestart: restart}
			}
			r, err := e.Driver.Start(gctx, spec)
			if err != nil {
				return fmt.Errorf("start replica of %s revision %d: %w", s.App, rev.Number, err)
			}
			e.log().Info("replica started", "app", s.App, "env", s.Env, "revision", rev.Number, "replica", r.ID)
			if e.OnStarted != nil {
				e.OnStarted(r)
			}
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

func (e *Executor) waitHealthy(ctx context.Context, group string, s State, rs []driver.Replica) error {
	if e.Health == nil {
		return nil
	}
	var names []string
	for _, r := range rs {
		hc := s.New.Spec.GetHealthCheck()
		if r.Revision == s.Old.Number && r.Revision != s.New.Number {
			hc = s.Old.Spec.GetHealthCheck()
		}
		name, err := e.Health.Register(ctx, r, group, hc)
		if err != nil {
			return err
		}
		names = append(names, name)
	}
	if err := e.Health.WaitPassing(ctx, group, names); err != nil {
		return fmt.Errorf("%s/%s: %w", s.App, s.Env, err)
	}
	return nil
}

// route points the router at the kept replicas and sets the weights.
func (e *Executor) route(s State, newRs, oldRs []driver.Replica) error {
	if e.Traffic == nil {
		return nil
	}
	newAddrs, oldAddrs := addrs(newRs), addrs(oldRs)
	if s.Old.Number == s.New.Number {
		// A restart: both sets are the one revision's backends.
		newAddrs, oldAddrs = append(newAddrs, oldAddrs...), nil
	}
	if s.Old.Number != 0 && s.Old.Number != s.New.Number {
		// Old first: while the new revision is added it can only gain backends.
		if err := e.Traffic.SetBackends(s.Old.Number, oldAddrs); err != nil {
			return fmt.Errorf("route old revision: %w", err)
		}
	}
	if err := e.Traffic.SetBackends(s.New.Number, newAddrs); err != nil {
		return fmt.Errorf("route new revision: %w", err)
	}
	weights := map[int64]int{}
	w := int(s.Weight)
	switch {
	case len(newAddrs) == 0:
		w = 0
	case len(oldAddrs) == 0 || s.Old.Number == 0 || s.Old.Number == s.New.Number:
		w = 100
	}
	if w > 0 {
		weights[s.New.Number] = w
	}
	if w < 100 {
		weights[s.Old.Number] = 100 - w
	}
	if len(newAddrs) == 0 && len(oldAddrs) == 0 {
		weights = nil
	}
	if err := e.Traffic.SetWeights(weights); err != nil {
		return fmt.Errorf("set traffic weights %v: %w", weights, err)
	}
	return nil
}

// stop drains extra replicas out of the router, then stops them.
func (e *Executor) stop(ctx context.Context, s State, rs []driver.Replica) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range rs {
		g.Go(func() error {
			if e.Traffic != nil {
				for _, a := range addrs([]driver.Replica{r}) {
					if cut, err := e.Traffic.Drain(a, e.DrainTimeout); err == nil && cut > 0 {
						e.log().Warn("drain cut requests", "replica", r.ID, "cut", cut)
					}
				}
			}
			grace := specOf(s, r.Revision).GetStopGracePeriod().AsDuration()
			if err := e.Driver.Stop(gctx, r.ID, grace); err != nil {
				return fmt.Errorf("stop replica %s: %w", r.ID, err)
			}
			if e.Health != nil {
				_ = e.Health.Unregister(gctx, r.ID)
			}
			e.log().Info("replica stopped", "app", s.App, "env", s.Env, "revision", r.Revision, "replica", r.ID)
			if e.OnStopped != nil {
				e.OnStopped(r)
			}
			return nil
		})
	}
	return g.Wait()
}

func specOf(s State, rev int64) *deployerv1.ApplicationSpec {
	if rev == s.Old.Number {
		return s.Old.Spec
	}
	return s.New.Spec
}

func (e *Executor) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

// addrs are the loopback addresses of the replicas' first published ports,
// where the router forwards.
func addrs(rs []driver.Replica) []string {
	var out []string
	for _, r := range rs {
		if len(r.Bindings) == 0 {
			continue
		}
		b := r.Bindings[0]
		host := b.HostIP
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		out = append(out, net.JoinHostPort(host, strconv.Itoa(b.HostPort)))
	}
	return out
}

// replicaSpec turns an application spec into a driver spec for one replica.
func replicaSpec(id, app, env string, rev Revision) driver.Spec {
	s := rev.Spec
	ds := driver.Spec{
		ID: id, App: app, Environment: env, Revision: rev.Number,
		Image:           s.GetImage(),
		Args:            s.GetArgs(),
		WorkingDir:      s.GetWorkingDir(),
		Env:             map[string]string{},
		RestartOnCrash:  s.GetRestartPolicy() != deployerv1.RestartPolicy_RESTART_POLICY_NEVER,
		StopGracePeriod: s.GetStopGracePeriod().AsDuration(),
	}
	if p := s.GetProcess(); p != nil {
		ds.Command = append(slices.Clone(p.GetArgv()), s.GetCommand()...)
	} else {
		ds.Command = s.GetCommand()
	}
	for _, e := range s.GetEnv() {
		ds.Env[e.GetName()] = e.GetValue()
	}
	for _, p := range s.GetPorts() {
		name := p.GetName()
		if name == "" {
			name = "p" + strconv.Itoa(int(p.GetContainerPort()))
		}
		proto := "tcp"
		if p.GetProtocol() == deployerv1.PortProtocol_PORT_PROTOCOL_UDP {
			proto = "udp"
		}
		ds.Ports = append(ds.Ports, driver.Port{Name: name, ContainerPort: int(p.GetContainerPort()), Protocol: proto})
	}
	for _, v := range s.GetVolumes() {
		src := v.GetHostPath()
		if src == "" {
			src = v.GetNamedVolume()
		}
		if src != "" {
			ds.Volumes = append(ds.Volumes, driver.Volume{Source: src, Target: v.GetTarget(), ReadOnly: v.GetReadOnly()})
		}
	}
	return ds
}
