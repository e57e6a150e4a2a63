package deployer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/deployer/internal/analysis"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Event types this service publishes.
const (
	EventRolloutStarted    = "opsuite.deploy.rollout.started"
	EventRolloutCompleted  = "opsuite.deploy.rollout.completed"
	EventRolloutRolledBack = "opsuite.deploy.rollout.rolled_back"
)

// environments returns the application's environments, adding the
// implicit default one to an application that declares none.
func environments(app *deployerv1.Application) []*deployerv1.Environment {
	if len(app.GetEnvironments()) == 0 {
		app.Environments = []*deployerv1.Environment{{Name: DefaultEnvironment}}
	}
	return app.GetEnvironments()
}

func environment(app *deployerv1.Application, name string) (*deployerv1.Environment, error) {
	envs := environments(app)
	if name == "" {
		if len(envs) == 1 {
			return envs[0], nil
		}
		return nil, &fieldError{"environment", fmt.Sprintf("is required: %s has %d environments", app.GetName(), len(envs))}
	}
	for _, e := range envs {
		if e.GetName() == name {
			return e, nil
		}
	}
	return nil, &fieldError{"environment", fmt.Sprintf("%s has no environment %q", app.GetName(), name)}
}

// effectiveSpec applies an environment's overrides to a revision's spec.
func effectiveSpec(spec *deployerv1.ApplicationSpec, env *deployerv1.Environment, strategy *deployerv1.Strategy) *deployerv1.ApplicationSpec {
	out := proto.CloneOf(spec)
	o := env.GetOverrides()
	if o != nil && o.Replicas != nil {
		out.Replicas = o.GetReplicas()
	}
	for _, ev := range o.GetEnv() {
		replaced := false
		for _, cur := range out.Env {
			if cur.GetName() == ev.GetName() {
				cur.Value, replaced = ev.GetValue(), true
			}
		}
		if !replaced {
			out.Env = append(out.Env, proto.CloneOf(ev))
		}
	}
	if o.GetStrategy() != nil {
		out.Strategy = o.GetStrategy()
	}
	if o.GetProgressDeadline() != nil {
		out.ProgressDeadline = o.GetProgressDeadline()
	}
	if o.GetRouter() != nil {
		out.Router = o.GetRouter()
	}
	if o.GetDriver() != nil {
		out.Driver = o.GetDriver()
	}
	if strategy != nil {
		out.Strategy = strategy
	}
	if out.Replicas == 0 {
		out.Replicas = 1
	}
	return out
}

// driverKindOf names the driver a spec runs on: the one it names, else
// docker for images and process for commands.
func driverKindOf(spec *deployerv1.ApplicationSpec) string {
	kind := "process"
	if spec.GetImage() != "" {
		kind = "docker"
	}
	switch spec.GetDriver().GetDriver().(type) {
	case *deployerv1.DriverConfig_Docker:
		kind = "docker"
	case *deployerv1.DriverConfig_Process:
		kind = "process"
	case *deployerv1.DriverConfig_Kubernetes:
		kind = kubernetes.Name
	}
	return kind
}

// checkDriver fails when the driver a spec names is not available here.
func (s *Service) checkDriver(spec *deployerv1.ApplicationSpec) error {
	kind := driverKindOf(spec)
	if kind == kubernetes.Name {
		if s.kube == nil {
			return fmt.Errorf("%w: the kubernetes driver is not configured here: start the deployer with --kubeconfig", errUnavailableDriver)
		}
		return nil
	}
	_, err := s.driverFor(spec)
	return err
}

// driverFor is the replica driver (docker or process) a spec runs on.
func (s *Service) driverFor(spec *deployerv1.ApplicationSpec) (driver.Driver, error) {
	kind := driverKindOf(spec)
	d, ok := s.drivers[kind]
	if !ok {
		return nil, fmt.Errorf("%w: the %s driver is not available here", errUnavailableDriver, kind)
	}
	return d, nil
}

// converger is what carries out app/env's rollout steps for spec's driver,
// and the driver's name.
func (s *Service) converger(app, env string, spec *deployerv1.ApplicationSpec, e *envRuntime) (rollout.Converger, string, error) {
	if err := s.checkDriver(spec); err != nil {
		return nil, "", err
	}
	if driverKindOf(spec) == kubernetes.Name {
		return s.kubeExecutor(app, env, spec), kubernetes.Name, nil
	}
	d, err := s.driverFor(spec)
	if err != nil {
		return nil, "", err
	}
	return s.executor(d, e), d.Name(), nil
}

func specDigest(spec *deployerv1.ApplicationSpec) string {
	data, _ := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// replicaID is unique and a DNS-1123 label: app-env-r<rev>-<random>.
func replicaID(app, env string, rev int64) string {
	prefix := app + "-" + env
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	return fmt.Sprintf("%s-r%d-%s", prefix, rev, randomSuffix(5))
}

// newRolloutID sorts by creation time.
func (s *Service) newRolloutID() string {
	return fmt.Sprintf("%016x%04x", time.Now().UnixNano(), s.seq.Add(1)&0xffff)
}

func (s *Service) executor(d driver.Driver, e *envRuntime) *rollout.Executor {
	publish := func(typ string, data func(*deployerv1.Replica) proto.Message) func(driver.Replica) {
		return func(r driver.Replica) {
			p := replicaProto(d.Name(), r)
			ev := eventbus.Event{Type: typ, Subject: r.App, ID: r.ID + "-" + typ[strings.LastIndex(typ, ".")+1:], Data: data(p)}
			if _, err := s.events.Publish(context.WithoutCancel(s.runCtx), ev); err != nil {
				s.log.Warn("publish replica event", "type", typ, "replica", r.ID, "err", err)
			}
		}
	}
	return &rollout.Executor{
		Driver: d, Traffic: e.router, Health: s.gate, Log: s.log,
		NewID: replicaID, DrainTimeout: 10 * time.Second,
		OnStarted: func(r driver.Replica) {
			publish(EventReplicaStarted, func(p *deployerv1.Replica) proto.Message { return &eventsv1.ReplicaStarted{Replica: p} })(r)
			// From its first line on.
			s.followReplica(s.runCtx, d, r, time.Time{})
		},
		OnStopped: func(r driver.Replica) {
			publish(EventReplicaStopped, func(p *deployerv1.Replica) proto.Message { return &eventsv1.ReplicaStopped{Replica: p} })(r)
			s.unfollowReplica(r.ID)
		},
	}
}

// Replica event types.
const (
	EventReplicaStarted = "opsuite.deploy.replica.started"
	EventReplicaStopped = "opsuite.deploy.replica.stopped"
)

// revisionSide loads a revision and its effective spec for env.
func (s *Service) revisionSide(ctx context.Context, app *deployerv1.Application, env *deployerv1.Environment, n uint32, strategy *deployerv1.Strategy) (rollout.Revision, error) {
	if n == 0 {
		return rollout.Revision{}, nil
	}
	rev, err := s.store.Revision(ctx, app.GetName(), n)
	if err != nil {
		return rollout.Revision{}, err
	}
	return rollout.Revision{Number: int64(n), Spec: effectiveSpec(rev.Value.GetSpec(), env, strategy)}, nil
}

// startRollout saves r and runs it in the background until it ends.
// The rollout runs while this replica holds l, the environment's lease,
// and releases it when it ends; without the lease it stops where it
// stands (saved) for the replica that took the lease over.
func (s *Service) startRollout(r *deployerv1.Rollout, newRev, oldRev rollout.Revision, e *envRuntime, conv rollout.Converger, l *lease.Lease) error {
	e.mu.Lock()
	if e.active != "" {
		e.mu.Unlock()
		return fmt.Errorf("%w: rollout %s is in progress in %s/%s", errBusy, e.active, r.GetApplication(), r.GetEnvironment())
	}
	e.active = r.GetId()
	e.signals = make(chan rollout.Signal, 4)
	e.done = make(chan struct{})
	rctx, cancel := context.WithCancelCause(s.runCtx)
	stopLease := context.AfterFunc(l.Context(), func() { cancel(errLeaseLost) })
	e.cancel = cancel
	signals, done := e.signals, e.done
	e.mu.Unlock()

	var lastRev uint64
	if v, err := s.store.Rollout(s.runCtx, r.GetId()); err == nil {
		lastRev = v.Revision
	}
	prev := proto.CloneOf(r)
	runner := &rollout.Runner{
		Exec: conv, Log: s.log,
		Analysis: &analysis.Measurer{},
	}
	save := func(ctx context.Context, cur *deployerv1.Rollout) error {
		rev, err := s.store.UpdateRollout(ctx, cur, lastRev)
		if err != nil {
			return err
		}
		lastRev = rev
		s.publishChanges(ctx, prev, cur)
		prev = proto.CloneOf(cur)
		return nil
	}
	runner.Save = save
	if e.router != nil {
		// Requests through the router during the rollout, on top of what an
		// earlier run of it (before a restart) counted.
		base := e.router.Totals()
		baseTotal, baseFailed := r.GetTotalRequests(), r.GetFailedRequests()
		// A revision that passes its health check but fails requests through
		// the router is rolled back too.
		runner.Guard = &rollout.ErrorGuard{Counts: func(rev int64) (uint64, uint64) {
			st, _ := e.router.Stats(rev)
			return st.Requests, st.Errors
		}}
		runner.Analysis.Router = e.router.Stats
		runner.Save = func(ctx context.Context, cur *deployerv1.Rollout) error {
			t := e.router.Totals().Sub(base)
			cur.TotalRequests = baseTotal + int64(t.Requests)
			cur.FailedRequests = baseFailed + int64(t.Failed)
			return save(ctx, cur)
		}
	}
	if s.monitor != nil {
		runner.Analysis.Monitor = monitorQuerier{s.monitor}
		var match []string
		for k, v := range r.GetEffectiveSpec().GetRollbackPolicy().GetAlertMatchLabels() {
			match = append(match, fmt.Sprintf("%s=%q", k, v))
		}
		runner.Alerts = monitorAlerts{c: s.monitor, match: func(string, string) []string { return match }}
	}
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		defer close(done)
		defer cancel(nil)
		defer release(l)
		defer stopLease()
		err := runner.Run(rctx, r, newRev, oldRev, signals)
		e.mu.Lock()
		e.active = ""
		e.mu.Unlock()
		if err != nil && errors.Is(context.Cause(rctx), errLeaseLost) {
			s.log.Warn("rollout stopped: its lease was lost; another replica takes it over", "rollout", r.GetId(), "err", err)
			return
		}
		if err != nil && s.runCtx.Err() == nil && errors.Is(context.Cause(rctx), errSuperseded) {
			s.superseded(r, runner, e)
			return
		}
		if err != nil {
			if s.runCtx.Err() == nil {
				s.log.Error("rollout stopped", "rollout", r.GetId(), "err", err)
			}
			return
		}
		s.finished(context.WithoutCancel(s.runCtx), r, e)
	}()
	return nil
}

// errSuperseded cancels a rollout that a Deploy with supersede replaces.
var errSuperseded = errors.New("superseded by a new deploy")

// superseded ends a rollout a superseding Deploy stopped: it is recorded as
// aborted where it stood (no rollback: the new rollout moves on from there)
// and announced.
func (s *Service) superseded(r *deployerv1.Rollout, runner *rollout.Runner, e *envRuntime) {
	ctx := context.WithoutCancel(s.runCtx)
	r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED
	r.Message = "superseded by a new deploy"
	r.EndTime = now()
	r.Duration = durationpb.New(r.GetEndTime().AsTime().Sub(r.GetStartTime().AsTime()))
	if err := runner.Save(ctx, r); err != nil {
		s.log.Error("record superseded rollout", "rollout", r.GetId(), "err", err)
	}
	if _, err := s.events.Publish(ctx, eventbus.Event{Type: EventRolloutAborted, Subject: r.GetApplication(), ID: r.GetId() + "-aborted",
		Data: &eventsv1.RolloutAborted{Rollout: r, Reason: r.GetMessage()}}); err != nil {
		s.log.Warn("publish rollout aborted", "rollout", r.GetId(), "err", err)
	}
	s.finished(ctx, r, e)
}

// supersede stops the rollout in progress in app/env, if any, and returns
// once it is recorded as aborted.
func (s *Service) supersede(ctx context.Context, app, env string) error {
	s.mu.Lock()
	e := s.envs[app+"/"+env]
	s.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	active, cancel, done := e.active, e.cancel, e.done
	e.mu.Unlock()
	if active == "" {
		return nil
	}
	cancel(errSuperseded)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%w: rollout %s did not stop within 30s", errBusy, active)
	}
}

// Event types of rollout progress.
const (
	EventRolloutStepChanged = "opsuite.deploy.rollout.step_changed"
	EventRolloutPaused      = "opsuite.deploy.rollout.paused"
	EventRolloutAborted     = "opsuite.deploy.rollout.aborted"
	EventRolloutPromoted    = "opsuite.deploy.rollout.promoted"
)

// publishPromoted announces a promotion; how says by what ("promote", or
// "auto" when the last step moved all traffic by itself).
func (s *Service) publishPromoted(ctx context.Context, r *deployerv1.Rollout, full bool, how string) {
	ev := eventbus.Event{
		Type: EventRolloutPromoted, Subject: r.GetApplication(),
		ID:   fmt.Sprintf("%s-promoted-%s-%d-%t", r.GetId(), how, r.GetCurrentStepIndex(), full),
		Data: &eventsv1.RolloutPromoted{Rollout: r, Full: full},
	}
	if _, err := s.events.Publish(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Warn("publish rollout promoted", "rollout", r.GetId(), "err", err)
	}
}

// publishChanges publishes what changed between two saved states of a
// rollout: a new step, a pause, an abort. Event ids derive from the state,
// so a re-save after a restart is de-duplicated by the broker.
func (s *Service) publishChanges(ctx context.Context, prev, cur *deployerv1.Rollout) {
	var evs []eventbus.Event
	if cur.GetCurrentStepIndex() != prev.GetCurrentStepIndex() && int(cur.GetCurrentStepIndex()) < len(cur.GetSteps()) {
		evs = append(evs, eventbus.Event{
			Type: EventRolloutStepChanged, ID: fmt.Sprintf("%s-step-%d", cur.GetId(), cur.GetCurrentStepIndex()),
			Data: &eventsv1.RolloutStepChanged{
				Rollout: cur, Step: cur.GetSteps()[cur.GetCurrentStepIndex()],
				PreviousStepIndex: prev.GetCurrentStepIndex(), PreviousCanaryWeight: prev.GetCanaryWeight(),
			},
		})
	}
	if cur.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED && prev.GetPhase() != cur.GetPhase() {
		evs = append(evs, eventbus.Event{
			Type: EventRolloutPaused, ID: fmt.Sprintf("%s-paused-%d", cur.GetId(), cur.GetCurrentStepIndex()),
			Data: &eventsv1.RolloutPaused{Rollout: cur},
		})
	}
	if cur.GetRollbackTrigger() == deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT && prev.GetRollbackTrigger() != cur.GetRollbackTrigger() {
		evs = append(evs, eventbus.Event{
			Type: EventRolloutAborted, ID: cur.GetId() + "-aborted",
			Data: &eventsv1.RolloutAborted{Rollout: cur, Reason: cur.GetMessage()},
		})
	}
	// All traffic reached the new revision by the rollout's own steps (a
	// blue-green switch, the last canary weight): promoted automatically.
	if cur.GetFromRevision() != 0 && cur.GetCanaryWeight() == 100 && prev.GetCanaryWeight() < 100 && !isEndPhase(cur.GetPhase()) {
		evs = append(evs, eventbus.Event{
			Type: EventRolloutPromoted, ID: cur.GetId() + "-promoted-auto",
			Data: &eventsv1.RolloutPromoted{Rollout: cur, Full: true},
		})
	}
	for _, ev := range evs {
		ev.Subject = cur.GetApplication()
		if _, err := s.events.Publish(ctx, ev); err != nil {
			s.log.Warn("publish rollout event", "type", ev.Type, "rollout", cur.GetId(), "err", err)
		}
	}
}

// finished records a rollout's outcome on its environment and publishes it.
func (s *Service) finished(ctx context.Context, r *deployerv1.Rollout, e *envRuntime) {
	s.log.Info("rollout ended", "rollout", r.GetId(), "app", r.GetApplication(), "env", r.GetEnvironment(),
		"phase", r.GetPhase().String(), "message", r.GetMessage(), "duration", r.GetDuration().AsDuration())
	for attempt := 0; attempt < 5; attempt++ {
		v, err := s.store.Application(ctx, r.GetApplication())
		if err != nil {
			s.log.Error("record rollout outcome", "rollout", r.GetId(), "err", err)
			return
		}
		app := v.Value
		env, err := environment(app, r.GetEnvironment())
		if err != nil {
			return
		}
		if env.Status == nil {
			env.Status = &deployerv1.EnvironmentStatus{}
		}
		st := env.Status
		st.ActiveRolloutId = ""
		st.LastRolloutId = r.GetId()
		st.LastRolloutPhase = r.GetPhase()
		st.Endpoint = e.endpoint
		switch r.GetPhase() {
		case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED:
			st.CurrentRevision = r.GetToRevision()
			st.LastKnownGoodRevision = r.GetToRevision()
			st.DesiredReplicas = r.GetDesiredReplicas()
			st.ReadyReplicas = r.GetDesiredReplicas()
			st.Health = deployerv1.HealthState_HEALTH_STATE_HEALTHY
		case deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK:
			st.CurrentRevision = r.GetFromRevision()
		case deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
			st.Health = deployerv1.HealthState_HEALTH_STATE_UNHEALTHY
		}
		if _, err := s.store.UpdateApplication(ctx, app, v.Revision); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			s.log.Error("record rollout outcome", "rollout", r.GetId(), "err", err)
		}
		break
	}
	s.recordOnRevision(ctx, r)
	ev := eventbus.Event{Type: EventRolloutCompleted, Subject: r.GetApplication(), Data: &eventsv1.RolloutCompleted{Rollout: r}}
	if r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK {
		ev = eventbus.Event{Type: EventRolloutRolledBack, Subject: r.GetApplication(), Data: &eventsv1.RolloutRolledBack{
			Rollout: r, Trigger: r.GetRollbackTrigger(), Revision: r.GetFromRevision(), TimeToStable: r.GetTimeToStable(),
		}}
	}
	ev.ID = r.GetId() + "-end"
	if _, err := s.events.Publish(ctx, ev); err != nil {
		s.log.Warn("publish rollout outcome", "rollout", r.GetId(), "err", err)
	}
}

// restore brings routers back for deployed environments and resumes
// rollouts that were in progress when the deployer stopped.
func (s *Service) restore(ctx context.Context) error {
	apps, err := s.store.Applications(ctx)
	if err != nil {
		return err
	}
	for _, v := range apps {
		app := v.Value
		for _, env := range app.GetEnvironments() {
			st := env.GetStatus()
			if st.GetCurrentRevision() == 0 && st.GetActiveRolloutId() == "" {
				continue
			}
			listen := strings.TrimPrefix(st.GetEndpoint(), "http://")
			spec := s.servingSpec(ctx, app, env)
			if driverKindOf(spec) == kubernetes.Name {
				listen = ""
			}
			e, err := s.envFor(app.GetName(), env.GetName(), spec, listen)
			if err != nil {
				s.log.Error("restore router", "app", app.GetName(), "env", env.GetName(), "err", err)
				continue
			}
			if id := st.GetActiveRolloutId(); id != "" {
				// Ours to resume if its lease is free (or was this
				// replica's before a restart); else another replica drives it.
				if err := s.adoptEnv(ctx, app, env, id); err != nil {
					s.log.Error("resume rollout", "rollout", id, "err", err)
				}
				continue
			}
			if e.router == nil {
				continue // Kubernetes keeps what serves running by itself.
			}
			cur, err := s.revisionSide(ctx, app, env, st.GetCurrentRevision(), nil)
			if err != nil {
				s.log.Error("restore revision", "app", app.GetName(), "err", err)
				continue
			}
			d, err := s.driverFor(cur.Spec)
			if err != nil {
				s.log.Error("restore", "app", app.GetName(), "err", err)
				continue
			}
			// Re-route (and heal) what serves: the same call a rollout step makes.
			s.running.Add(1)
			go func() {
				defer s.running.Done()
				cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				defer cancel()
				if err := s.executor(d, e).Converge(cctx, rollout.State{
					App: app.GetName(), Env: env.GetName(), New: cur, NewReplicas: cur.Spec.GetReplicas(), Weight: 100,
				}); err != nil && ctx.Err() == nil {
					s.log.Error("restore replicas", "app", app.GetName(), "env", env.GetName(), "err", err)
				}
			}()
		}
	}
	return nil
}

// servingSpec is the spec env runs: its current revision's, else the
// application's.
func (s *Service) servingSpec(ctx context.Context, app *deployerv1.Application, env *deployerv1.Environment) *deployerv1.ApplicationSpec {
	if n := env.GetStatus().GetCurrentRevision(); n != 0 {
		if cur, err := s.revisionSide(ctx, app, env, n, nil); err == nil {
			return cur.Spec
		}
	}
	return effectiveSpec(app.GetSpec(), env, nil)
}

func (s *Service) resume(ctx context.Context, app *deployerv1.Application, env *deployerv1.Environment, id string, e *envRuntime, l *lease.Lease) error {
	v, err := s.store.Rollout(ctx, id)
	if err != nil {
		return err
	}
	r := v.Value
	newRev, err := s.revisionSide(ctx, app, env, r.GetToRevision(), r.GetStrategy())
	if err != nil {
		return err
	}
	newRev.Spec = r.GetEffectiveSpec()
	oldRev, err := s.revisionSide(ctx, app, env, r.GetFromRevision(), nil)
	if err != nil {
		return err
	}
	conv, _, err := s.converger(app.GetName(), env.GetName(), newRev.Spec, e)
	if err != nil {
		return err
	}
	s.log.Info("resuming rollout", "rollout", id, "step", r.GetCurrentStepIndex(), "phase", r.GetPhase().String())
	return s.startRollout(r, newRev, oldRev, e, conv, l)
}

func now() *timestamppb.Timestamp { return timestamppb.Now() }

// recordOnRevision notes a finished rollout on its target revision's record
// for the environment: known good once it succeeded there, which is what
// environment promotion and requires_environment check.
func (s *Service) recordOnRevision(ctx context.Context, r *deployerv1.Rollout) {
	for attempt := 0; attempt < 5; attempt++ {
		v, err := s.store.Revision(ctx, r.GetApplication(), r.GetToRevision())
		if err != nil {
			s.log.Warn("record rollout on revision", "rollout", r.GetId(), "err", err)
			return
		}
		rev := v.Value
		var rec *deployerv1.RevisionEnvironment
		for _, re := range rev.GetEnvironments() {
			if re.GetEnvironment() == r.GetEnvironment() {
				rec = re
			}
		}
		if rec == nil {
			rec = &deployerv1.RevisionEnvironment{Environment: r.GetEnvironment()}
			rev.Environments = append(rev.Environments, rec)
		}
		rec.LastRolloutId = r.GetId()
		rec.LastRolloutPhase = r.GetPhase()
		rec.LastDeployTime = r.GetCreateTime()
		if r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
			rec.KnownGood = true
		}
		if _, err := s.store.UpdateRevision(ctx, rev, v.Revision); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			s.log.Warn("record rollout on revision", "rollout", r.GetId(), "err", err)
		}
		return
	}
}

// knownGoodIn reports whether a revision succeeded in an environment.
func knownGoodIn(rev *deployerv1.Revision, env string) bool {
	for _, re := range rev.GetEnvironments() {
		if re.GetEnvironment() == env && re.GetKnownGood() {
			return true
		}
	}
	return false
}

func isEndPhase(p deployerv1.RolloutPhase) bool {
	switch p {
	case deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLING_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK,
		deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
		return true
	}
	return false
}
