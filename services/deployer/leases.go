package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
)

// Replicas of the deployer share one store. A rollout is driven by exactly
// one of them at a time: the one holding its environment's lease
// (pkg/lease, revision-checked and expiring on the NATS server). The
// replica that accepts a Deploy takes the lease before it records the
// rollout; every replica looks, every half lease period, for environments
// with a rollout in progress whose lease nobody holds (its driver died) and
// takes them over, resuming the rollout at the step it was saved in. Every
// write of a rollout is also revision-checked, so a replica that lost its
// lease while frozen cannot overwrite its successor's progress.
//
// Signals (promote, abort, pause, resume) reach the replica driving the
// rollout over NATS when another replica receives them.

// DefaultLeaseTTL is how long a dead replica's rollouts wait before another
// replica takes them over.
const DefaultLeaseTTL = 10 * time.Second

// errLeaseLost stops a rollout whose lease another replica now holds.
var errLeaseLost = errors.New("the environment's lease was lost: another deployer replica drives the rollout")

func envLeaseKey(app, env string) string { return "deployer.env." + app + "." + env }

func (s *Service) leaseTTL() time.Duration {
	if s.cfg.LeaseTTL > 0 {
		return s.cfg.LeaseTTL
	}
	return DefaultLeaseTTL
}

// leaseEnv takes app/env's lease for a rollout or a change of its replicas;
// errBusy when another replica holds it.
func (s *Service) leaseEnv(app, env string) (*lease.Lease, error) {
	l, err := s.leases.TryAcquire(s.runCtx, envLeaseKey(app, env), s.leaseTTL())
	if errors.Is(err, lease.ErrHeld) {
		return nil, fmt.Errorf("%w: another deployer replica is changing %s/%s: %v", errBusy, app, env, err)
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s/%s: %w", app, env, err)
	}
	return l, nil
}

func release(l *lease.Lease) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.Release(ctx)
}

// adoptLoop takes over rollouts no live replica drives, until ctx ends.
func (s *Service) adoptLoop(ctx context.Context) {
	t := time.NewTicker(s.leaseTTL() / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.adopt(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("look for rollouts to take over", "err", err)
		}
	}
}

// adopt resumes every rollout in progress that is not driven here and
// whose environment's lease is free.
func (s *Service) adopt(ctx context.Context) error {
	apps, err := s.store.Applications(ctx)
	if err != nil {
		return err
	}
	for _, v := range apps {
		app := v.Value
		for _, env := range app.GetEnvironments() {
			id := env.GetStatus().GetActiveRolloutId()
			if id == "" || s.drivesHere(app.GetName(), env.GetName()) {
				continue
			}
			if err := s.adoptEnv(ctx, app, env, id); err != nil {
				s.log.Warn("take over rollout", "rollout", id, "err", err)
			}
		}
	}
	return nil
}

// adoptEnv resumes rollout id of app/env if its lease can be had.
func (s *Service) adoptEnv(ctx context.Context, app *deployerv1.Application, env *deployerv1.Environment, id string) error {
	l, err := s.leaseEnv(app.GetName(), env.GetName())
	if errors.Is(err, errBusy) {
		return nil // driven by a live replica
	}
	if err != nil {
		return err
	}
	// The record may have moved on while the lease was taken.
	if v, err := s.store.Application(ctx, app.GetName()); err == nil {
		app = v.Value
		if env, err = environment(app, env.GetName()); err != nil || env.GetStatus().GetActiveRolloutId() != id {
			release(l)
			return err
		}
	}
	e, err := s.envFor(app.GetName(), env.GetName(), s.servingSpec(ctx, app, env), "")
	if err != nil {
		release(l)
		return err
	}
	s.log.Info("taking over rollout", "rollout", id, "app", app.GetName(), "env", env.GetName())
	if err := s.resume(ctx, app, env, id, e, l); err != nil {
		release(l)
		return err
	}
	return nil
}

// drivesHere reports whether this replica drives a rollout of app/env.
func (s *Service) drivesHere(app, env string) bool {
	s.mu.Lock()
	e := s.envs[app+"/"+env]
	s.mu.Unlock()
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active != ""
}

// signalSubject carries signals to the replica that drives a rollout.
const signalSubject = "opsuite.deployer.internal.signal"

type signalMsg struct {
	App     string         `json:"app"`
	Env     string         `json:"env"`
	Rollout string         `json:"rollout"`
	Signal  rollout.Signal `json:"signal"`
}

type signalReply struct {
	Error string `json:"error,omitempty"`
}

// serveSignals delivers signals other replicas forward to rollouts driven
// here; a replica that does not drive the rollout stays silent.
func (s *Service) serveSignals(ctx context.Context, nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(signalSubject, func(m *nats.Msg) {
		var sm signalMsg
		if err := json.Unmarshal(m.Data, &sm); err != nil || !s.drivesHere(sm.App, sm.Env) {
			return
		}
		var reply signalReply
		if _, err := s.signalLocal(ctx, sm.App, sm.Env, sm.Rollout, sm.Signal); err != nil {
			reply.Error = err.Error()
		}
		data, _ := json.Marshal(reply)
		_ = m.Respond(data)
	})
}

// forwardSignal sends a signal to the replica driving app/env's rollout.
func (s *Service) forwardSignal(ctx context.Context, app, env, id string, sig rollout.Signal) error {
	if s.nc == nil {
		return fmt.Errorf("%w: no rollout is driven here in %s/%s", errBusy, app, env)
	}
	data, err := json.Marshal(signalMsg{App: app, Env: env, Rollout: id, Signal: sig})
	if err != nil {
		return err
	}
	wait := 5 * time.Second
	if sig == rollout.Abort {
		wait = 35 * time.Second // the driver answers once the rollback ended
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := s.nc.RequestWithContext(rctx, signalSubject, data)
	if err != nil {
		return fmt.Errorf("%w: the deployer replica driving %s/%s does not answer (%v); it is taken over within %s if it died",
			errUnavailableDriver, app, env, err, s.leaseTTL())
	}
	var reply signalReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return fmt.Errorf("signal reply: %w", err)
	}
	if reply.Error != "" {
		return fmt.Errorf("%w: %s", errBusy, reply.Error)
	}
	return nil
}
