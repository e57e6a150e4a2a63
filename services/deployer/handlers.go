package deployer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/appspec"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var (
	errBusy              = errors.New("busy")
	errUnavailableDriver = errors.New("driver unavailable")
	errNotReady          = errors.New("deployer is starting")
)

// fieldError is a request field that is wrong.
type fieldError struct{ field, reason string }

func (e *fieldError) Error() string { return e.field + ": " + e.reason }

// toStatus maps errors to gRPC codes, once, at the edge.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		v := validation.New("request")
		v.Add(fe.field, "%s", fe.reason)
		return v.GRPCStatus().Err()
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error()+"; read it again and retry")
	case errors.Is(err, errBusy):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errUnavailableDriver), errors.Is(err, driver.ErrUnavailable), errors.Is(err, errNotReady):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, driver.ErrInvalidSpec):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if st := kubeStatus(err); st != nil {
		return st
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *Service) check() error {
	if !s.ready.Load() {
		return errNotReady
	}
	return nil
}

// CreateApplication validates and stores an application; nothing runs
// until Deploy.
func (s *Service) CreateApplication(ctx context.Context, req *deployerv1.CreateApplicationRequest) (*deployerv1.CreateApplicationResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	app := proto.CloneOf(req.GetApplication())
	if err := appspec.Validate(app); err != nil {
		return nil, toStatus(err)
	}
	if err := s.checkDriver(app.GetSpec()); err != nil {
		return nil, toStatus(err)
	}
	for _, env := range environments(proto.CloneOf(app)) {
		if err := s.checkKube(ctx, app.GetName(), env.GetName(), 1, effectiveSpec(app.GetSpec(), env, nil)); err != nil {
			return nil, toStatus(err)
		}
	}
	app.LatestRevision, app.Etag = 0, ""
	for _, e := range app.GetEnvironments() {
		e.Status = nil
	}
	environments(app)
	app.CreateTime, app.UpdateTime = now(), now()
	if req.GetValidateOnly() {
		return &deployerv1.CreateApplicationResponse{Application: app}, nil
	}
	if _, err := s.store.CreateApplication(ctx, app); err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.CreateApplicationResponse{Application: app}, nil
}

// GetApplication returns an application with its environments' status.
func (s *Service) GetApplication(ctx context.Context, req *deployerv1.GetApplicationRequest) (*deployerv1.GetApplicationResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	v, err := s.store.Application(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.GetApplicationResponse{Application: v.Value}, nil
}

// ListApplications pages through applications by name.
func (s *Service) ListApplications(ctx context.Context, req *deployerv1.ListApplicationsRequest) (*deployerv1.ListApplicationsResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	size := int(req.GetPageSize())
	if size < 0 {
		return nil, toStatus(&fieldError{"page_size", "must not be negative"})
	}
	if size == 0 || size > 1000 {
		size = 100
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 {
			return nil, toStatus(&fieldError{"page_token", "not a token from a previous response"})
		}
		after = string(b)
	}
	all, err := s.store.Applications(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &deployerv1.ListApplicationsResponse{}
	for _, v := range all {
		if v.Value.GetName() <= after {
			continue
		}
		if len(resp.Applications) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(resp.Applications[size-1].GetName()))
			break
		}
		resp.Applications = append(resp.Applications, v.Value)
	}
	return resp, nil
}

// DeleteApplication stops every replica of the application, then forgets it.
func (s *Service) DeleteApplication(ctx context.Context, req *deployerv1.DeleteApplicationRequest) (*deployerv1.DeleteApplicationResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	v, err := s.store.Application(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	app := v.Value
	for _, env := range app.GetEnvironments() {
		if id := env.GetStatus().GetActiveRolloutId(); id != "" && !req.GetForce() {
			return nil, toStatus(fmt.Errorf("%w: rollout %s is in progress in %s; abort it or delete with force", errBusy, id, env.GetName()))
		}
	}
	for _, env := range app.GetEnvironments() {
		spec := effectiveSpec(app.GetSpec(), env, nil)
		e, err := s.envFor(app.GetName(), env.GetName(), spec, "")
		if err != nil {
			return nil, toStatus(err)
		}
		conv, _, err := s.converger(app.GetName(), env.GetName(), spec, e)
		if err != nil {
			return nil, toStatus(err)
		}
		l, err := s.leaseEnv(app.GetName(), env.GetName())
		if err != nil && !req.GetForce() {
			return nil, toStatus(err)
		}
		err = conv.Converge(ctx, rollout.State{App: app.GetName(), Env: env.GetName()})
		release(l)
		if err != nil {
			return nil, toStatus(fmt.Errorf("stop replicas of %s/%s: %w", app.GetName(), env.GetName(), err))
		}
		s.dropRouter(app.GetName(), env.GetName())
	}
	if err := s.store.DeleteApplication(ctx, app.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.DeleteApplicationResponse{}, nil
}

func (s *Service) dropRouter(app, env string) {
	s.mu.Lock()
	e := s.envs[app+"/"+env]
	delete(s.envs, app+"/"+env)
	s.mu.Unlock()
	if e != nil {
		e.close()
	}
}

// Deploy rolls an environment to a new spec, a kept revision, or the
// application's current spec.
func (s *Service) Deploy(ctx context.Context, req *deployerv1.DeployRequest) (*deployerv1.DeployResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	resp, err := s.deploy(ctx, req)
	return resp, toStatus(err)
}

func (s *Service) deploy(ctx context.Context, req *deployerv1.DeployRequest) (*deployerv1.DeployResponse, error) {
	kind := deployerv1.RolloutKind_ROLLOUT_KIND_DEPLOY
	if req.GetRestart() {
		kind = deployerv1.RolloutKind_ROLLOUT_KIND_RESTART
	}
	return s.deployAs(ctx, req, kind)
}

func (s *Service) deployAs(ctx context.Context, req *deployerv1.DeployRequest, kind deployerv1.RolloutKind) (*deployerv1.DeployResponse, error) {
	if req.GetFromEnvironment() != "" && kind == deployerv1.RolloutKind_ROLLOUT_KIND_DEPLOY {
		kind = deployerv1.RolloutKind_ROLLOUT_KIND_ENVIRONMENT_PROMOTION
	}
	if req.GetSupersede() {
		v, err := s.store.Application(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		env, err := environment(v.Value, req.GetEnvironment())
		if err != nil {
			return nil, err
		}
		if err := s.supersede(ctx, req.GetName(), env.GetName()); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		resp, err := s.tryDeploy(ctx, req, kind)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		return resp, err
	}
}

func (s *Service) tryDeploy(ctx context.Context, req *deployerv1.DeployRequest, kind deployerv1.RolloutKind) (*deployerv1.DeployResponse, error) {
	v, err := s.store.Application(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	app := v.Value
	env, err := environment(app, req.GetEnvironment())
	if err != nil {
		return nil, err
	}
	if env.Status == nil {
		env.Status = &deployerv1.EnvironmentStatus{}
	}
	if id := env.GetStatus().GetActiveRolloutId(); id != "" {
		return nil, fmt.Errorf("%w: rollout %s is in progress in %s/%s; promote or abort it first", errBusy, id, app.GetName(), env.GetName())
	}
	// Which revision: a kept one, or a new one for a spec no kept one has;
	// a restart that names none restarts the one serving.
	revNum := req.GetRevision()
	if req.GetRestart() && revNum == 0 && req.GetSpec() == nil && req.GetFromEnvironment() == "" {
		revNum = env.GetStatus().GetCurrentRevision()
	}
	target, spec, err := s.resolveRevision(ctx, app, env, revNum, req.GetSpec(), req.GetFromEnvironment())
	if err != nil {
		return nil, err
	}
	if err := requiredEnvironment(app, env, target); err != nil {
		return nil, err
	}
	if req.GetSpec() != nil {
		app.Spec = spec
	}
	if target == nil {
		target = &deployerv1.Revision{
			Application: app.GetName(), Number: app.GetLatestRevision() + 1, Spec: spec,
			SpecDigest: specDigest(spec), Cause: req.GetReason(), CreateTime: now(),
		}
		if err := s.store.CreateRevision(ctx, target); err != nil {
			if errors.Is(err, store.ErrExists) {
				return nil, store.ErrConflict
			}
			return nil, err
		}
		app.LatestRevision = target.GetNumber()
	}
	if target.GetNumber() == env.GetStatus().GetCurrentRevision() && !req.GetRestart() {
		if _, err := s.store.UpdateApplication(ctx, app, v.Revision); err != nil {
			return nil, err
		}
		return &deployerv1.DeployResponse{Revision: target, Unchanged: true}, nil
	}
	newSpec := effectiveSpec(target.GetSpec(), env, req.GetStrategy())
	if kind == deployerv1.RolloutKind_ROLLOUT_KIND_RESTART && req.GetStrategy() == nil &&
		(newSpec.GetStrategy().GetCanary() != nil || newSpec.GetStrategy().GetBlueGreen() != nil) {
		// A restart replaces replicas of one revision: there is nothing to
		// compare or to switch to, so it rolls, one replica at a time.
		newSpec.Strategy = &deployerv1.Strategy{Kind: &deployerv1.Strategy_Rolling{Rolling: &deployerv1.RollingStrategy{
			MaxSurge:       &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 1}},
			MaxUnavailable: &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 0}},
		}}}
	}
	if err := s.checkDriver(newSpec); err != nil {
		return nil, err
	}
	if err := s.checkKube(ctx, app.GetName(), env.GetName(), int64(target.GetNumber()), newSpec); err != nil {
		return nil, err
	}
	oldRev, err := s.revisionSide(ctx, app, env, env.GetStatus().GetCurrentRevision(), nil)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	e, err := s.envFor(app.GetName(), env.GetName(), newSpec, newSpec.GetRouter().GetListenAddress())
	if err != nil {
		return nil, err
	}
	conv, driverName, err := s.converger(app.GetName(), env.GetName(), newSpec, e)
	if err != nil {
		return nil, err
	}
	r := &deployerv1.Rollout{
		Id: s.newRolloutID(), Application: app.GetName(), Environment: env.GetName(),
		Kind:         kind,
		FromRevision: uint32(oldRev.Number), ToRevision: target.GetNumber(),
		Strategy: newSpec.GetStrategy(), EffectiveSpec: newSpec,
		Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_PENDING, Cause: req.GetReason(), CreateTime: now(),
		PromotedFromEnvironment: req.GetFromEnvironment(),
	}
	current := int32(0)
	if oldRev.Number != 0 {
		current = oldRev.Spec.GetReplicas()
	}
	// This replica drives the rollout: take the environment's lease before
	// the rollout is recorded, so no other replica takes it over meanwhile.
	l, err := s.leaseEnv(app.GetName(), env.GetName())
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			release(l)
		}
	}()
	// A Kubernetes Service switches traffic as the router does.
	rollout.Prepare(r, current, e.router != nil || driverName == kubernetes.Name, driverName == kubernetes.Name)
	env.Status.ActiveRolloutId = r.GetId()
	env.Status.Endpoint = e.endpoint
	env.Status.Driver = driverKind(driverName)
	env.Status.LastDeployTime = now()
	app.UpdateTime = now()
	if _, err := s.store.UpdateApplication(ctx, app, v.Revision); err != nil {
		return nil, err
	}
	if _, err := s.store.CreateRollout(ctx, r); err != nil {
		return nil, err
	}
	newRev := rollout.Revision{Number: int64(target.GetNumber()), Spec: newSpec}
	if err := s.startRollout(proto.CloneOf(r), newRev, oldRev, e, conv, l); err != nil {
		return nil, err
	}
	started = true
	if _, err := s.events.Publish(ctx, eventbus.Event{Type: EventRolloutStarted, Subject: app.GetName(), ID: r.GetId() + "-start",
		Data: &eventsv1.RolloutStarted{Rollout: r}}); err != nil {
		s.log.Warn("publish rollout started", "rollout", r.GetId(), "err", err)
	}
	return &deployerv1.DeployResponse{Rollout: r, Revision: target}, nil
}

// GetRollout returns a rollout with its steps.
func (s *Service) GetRollout(ctx context.Context, req *deployerv1.GetRolloutRequest) (*deployerv1.GetRolloutResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	v, err := s.store.Rollout(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetApplication() != "" && v.Value.GetApplication() != req.GetApplication() {
		return nil, status.Errorf(codes.NotFound, "application %s has no rollout %s", req.GetApplication(), req.GetId())
	}
	return &deployerv1.GetRolloutResponse{Rollout: v.Value}, nil
}

// ListRollouts lists an application's rollouts, newest first.
func (s *Service) ListRollouts(ctx context.Context, req *deployerv1.ListRolloutsRequest) (*deployerv1.ListRolloutsResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	all, err := s.store.Rollouts(ctx, req.GetApplication())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &deployerv1.ListRolloutsResponse{}
	for i := len(all) - 1; i >= 0 && len(resp.Rollouts) < 100; i-- {
		r := all[i].Value
		if req.GetEnvironment() != "" && r.GetEnvironment() != req.GetEnvironment() {
			continue
		}
		resp.Rollouts = append(resp.Rollouts, r)
	}
	return resp, nil
}

// signal sends a signal to the environment's active rollout.
func (s *Service) signal(ctx context.Context, app, envName, id string, sig rollout.Signal) (*deployerv1.Rollout, error) {
	v, err := s.store.Application(ctx, app)
	if err != nil {
		return nil, err
	}
	env, err := environment(v.Value, envName)
	if err != nil {
		return nil, err
	}
	active := env.GetStatus().GetActiveRolloutId()
	if active == "" || (id != "" && id != active) {
		return nil, fmt.Errorf("%w: no rollout %s is in progress in %s/%s", errBusy, id, app, env.GetName())
	}
	if s.drivesHere(app, env.GetName()) {
		return s.signalLocal(ctx, app, env.GetName(), active, sig)
	}
	holder, err := s.leases.HolderOf(ctx, envLeaseKey(app, env.GetName()))
	if err != nil {
		return nil, err
	}
	if holder == "" || holder == s.leases.Holder() {
		return nil, fmt.Errorf("%w: rollout %s of %s/%s is starting, ending or being taken over by another replica; retry", errBusy, active, app, env.GetName())
	}
	// Another replica drives it.
	if err := s.forwardSignal(ctx, app, env.GetName(), active, sig); err != nil {
		return nil, err
	}
	r, err := s.store.Rollout(ctx, active)
	if err != nil {
		return nil, err
	}
	return r.Value, nil
}

// signalLocal sends a signal to app/env's rollout driven by this replica.
func (s *Service) signalLocal(ctx context.Context, app, envName, id string, sig rollout.Signal) (*deployerv1.Rollout, error) {
	s.mu.Lock()
	e := s.envs[app+"/"+envName]
	s.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("%w: no rollout is in progress in %s/%s", errBusy, app, envName)
	}
	e.mu.Lock()
	active, signals, done := e.active, e.signals, e.done
	e.mu.Unlock()
	if active == "" || (id != "" && id != active) {
		return nil, fmt.Errorf("%w: no rollout %s is in progress in %s/%s", errBusy, id, app, envName)
	}
	select {
	case signals <- sig:
	default:
		return nil, fmt.Errorf("%w: the rollout is busy with earlier requests", errBusy)
	}
	if sig == rollout.Abort {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		case <-ctx.Done():
		}
	}
	r, err := s.store.Rollout(ctx, active)
	if err != nil {
		return nil, err
	}
	return r.Value, nil
}

// Promote ends the current pause, or with full skips to 100%.
func (s *Service) Promote(ctx context.Context, req *deployerv1.PromoteRequest) (*deployerv1.PromoteResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	sig := rollout.Promote
	if req.GetFull() {
		sig = rollout.PromoteFull
	}
	r, err := s.signal(ctx, req.GetName(), req.GetEnvironment(), req.GetRolloutId(), sig)
	if err != nil {
		return nil, toStatus(err)
	}
	s.publishPromoted(ctx, r, req.GetFull(), "promote")
	return &deployerv1.PromoteResponse{Rollout: r}, nil
}

// Abort rolls the active rollout straight back to the stable revision.
func (s *Service) Abort(ctx context.Context, req *deployerv1.AbortRequest) (*deployerv1.AbortResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.signal(ctx, req.GetName(), req.GetEnvironment(), req.GetRolloutId(), rollout.Abort)
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.AbortResponse{Rollout: r}, nil
}

// Rollback deploys the last known-good revision (or the one named) at once,
// with the recreate-free rolling strategy and no canary steps.
func (s *Service) Rollback(ctx context.Context, req *deployerv1.RollbackRequest) (*deployerv1.RollbackResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	v, err := s.store.Application(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	env, err := environment(v.Value, req.GetEnvironment())
	if err != nil {
		return nil, toStatus(err)
	}
	target := req.GetRevision()
	if target == 0 {
		cur := env.GetStatus().GetCurrentRevision()
		revs, err := s.store.Revisions(ctx, req.GetName())
		if err != nil {
			return nil, toStatus(err)
		}
		for _, r := range revs {
			if r.GetNumber() < cur {
				target = r.GetNumber()
				break
			}
		}
		if target == 0 {
			return nil, toStatus(&fieldError{"revision", fmt.Sprintf("%s/%s has no revision before %d to roll back to", req.GetName(), env.GetName(), cur)})
		}
	}
	resp, err := s.deployAs(ctx, &deployerv1.DeployRequest{
		Name: req.GetName(), Environment: env.GetName(),
		Source: &deployerv1.DeployRequest_Revision{Revision: target},
		Strategy: &deployerv1.Strategy{Kind: &deployerv1.Strategy_Rolling{Rolling: &deployerv1.RollingStrategy{
			MaxSurge:       &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Percent{Percent: 100}},
			MaxUnavailable: &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 0}},
		}}},
		Reason: "rollback: " + req.GetReason(),
	}, deployerv1.RolloutKind_ROLLOUT_KIND_ROLLBACK)
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.RollbackResponse{Rollout: resp.GetRollout()}, nil
}

// GetRevision returns one kept revision (secret values masked).
func (s *Service) GetRevision(ctx context.Context, req *deployerv1.GetRevisionRequest) (*deployerv1.GetRevisionResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	v, err := s.store.Revision(ctx, req.GetApplication(), req.GetNumber())
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.GetRevisionResponse{Revision: maskedRevision(v.Value)}, nil
}

// ListRevisions lists an application's kept revisions, newest first.
func (s *Service) ListRevisions(ctx context.Context, req *deployerv1.ListRevisionsRequest) (*deployerv1.ListRevisionsResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.store.Application(ctx, req.GetApplication()); err != nil {
		return nil, toStatus(err)
	}
	revs, err := s.store.Revisions(ctx, req.GetApplication())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &deployerv1.ListRevisionsResponse{}
	for _, r := range revs {
		resp.Revisions = append(resp.Revisions, maskedRevision(r))
	}
	return resp, nil
}

func maskedRevision(r *deployerv1.Revision) *deployerv1.Revision {
	out := proto.CloneOf(r)
	out.Spec = masked(out.GetSpec())
	return out
}

// WatchRollout streams a rollout's state on every change until it ends.
func (s *Service) WatchRollout(req *deployerv1.WatchRolloutRequest, stream deployerv1.DeployerService_WatchRolloutServer) error {
	if err := s.check(); err != nil {
		return toStatus(err)
	}
	ctx := stream.Context()
	v, err := s.store.Rollout(ctx, req.GetId())
	if err != nil {
		return toStatus(err)
	}
	if req.GetApplication() != "" && v.Value.GetApplication() != req.GetApplication() {
		return status.Errorf(codes.NotFound, "application %s has no rollout %s", req.GetApplication(), req.GetId())
	}
	updates, err := s.store.WatchRollout(ctx, req.GetId())
	if err != nil {
		return toStatus(err)
	}
	for r := range updates {
		if err := stream.Send(&deployerv1.WatchRolloutResponse{Rollout: r}); err != nil {
			return err
		}
		if isTerminal(r.GetPhase()) {
			return nil
		}
	}
	return ctx.Err()
}

func isTerminal(p deployerv1.RolloutPhase) bool {
	switch p {
	case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED,
		deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
		return true
	}
	return false
}

// Pause holds the active rollout after its current step.
func (s *Service) Pause(ctx context.Context, req *deployerv1.PauseRequest) (*deployerv1.PauseResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.signal(ctx, req.GetName(), req.GetEnvironment(), req.GetRolloutId(), rollout.Pause)
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.PauseResponse{Rollout: r}, nil
}

// Resume continues a rollout held by Pause.
func (s *Service) Resume(ctx context.Context, req *deployerv1.ResumeRequest) (*deployerv1.ResumeResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.signal(ctx, req.GetName(), req.GetEnvironment(), req.GetRolloutId(), rollout.Resume)
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.ResumeResponse{Rollout: r}, nil
}

// resolveRevision finds what a deploy (or its plan) rolls out: the kept
// revision numbered rev; else the latest revision when its spec digest
// matches newSpec (or, without one, the application's spec); else nil with
// the (validated) spec a new revision would record.
func (s *Service) resolveRevision(ctx context.Context, app *deployerv1.Application, env *deployerv1.Environment, rev uint32, newSpec *deployerv1.ApplicationSpec, fromEnv string) (*deployerv1.Revision, *deployerv1.ApplicationSpec, error) {
	if fromEnv != "" {
		n, err := promotable(app, env, fromEnv)
		if err != nil {
			return nil, nil, err
		}
		rev = n
	}
	if rev != 0 {
		v, err := s.store.Revision(ctx, app.GetName(), rev)
		if err != nil {
			return nil, nil, err
		}
		return v.Value, v.Value.GetSpec(), nil
	}
	spec := app.GetSpec()
	if newSpec != nil {
		candidate := proto.CloneOf(app)
		candidate.Spec = newSpec
		if err := appspec.Validate(candidate); err != nil {
			return nil, nil, err
		}
		spec = newSpec
	}
	if app.GetLatestRevision() > 0 {
		latest, err := s.store.Revision(ctx, app.GetName(), app.GetLatestRevision())
		if err == nil && latest.Value.GetSpecDigest() == specDigest(spec) {
			return latest.Value, spec, nil
		}
	}
	return nil, spec, nil
}

// promotable is the revision an environment can promote to env: the one
// serving in from, known good there, with no rollout in progress.
func promotable(app *deployerv1.Application, env *deployerv1.Environment, from string) (uint32, error) {
	if from == env.GetName() {
		return 0, &fieldError{"from_environment", fmt.Sprintf("%q is the environment being deployed to", from)}
	}
	src, err := environment(app, from)
	if err != nil {
		return 0, &fieldError{"from_environment", fmt.Sprintf("%s has no environment %q", app.GetName(), from)}
	}
	st := src.GetStatus()
	switch {
	case st.GetCurrentRevision() == 0:
		return 0, fmt.Errorf("%w: nothing is deployed in %s/%s to promote", errBusy, app.GetName(), from)
	case st.GetActiveRolloutId() != "":
		return 0, fmt.Errorf("%w: rollout %s is still in progress in %s/%s; promote what is proven, once it ends", errBusy, st.GetActiveRolloutId(), app.GetName(), from)
	case st.GetCurrentRevision() != st.GetLastKnownGoodRevision():
		return 0, fmt.Errorf("%w: revision %d serving in %s/%s is not known good there (last known good: %d)",
			errBusy, st.GetCurrentRevision(), app.GetName(), from, st.GetLastKnownGoodRevision())
	}
	return st.GetCurrentRevision(), nil
}

// requiredEnvironment enforces an environment's requires_environment: the
// revision must have succeeded there first.
func requiredEnvironment(app *deployerv1.Application, env *deployerv1.Environment, target *deployerv1.Revision) error {
	req := env.GetRequiresEnvironment()
	if req == "" {
		return nil
	}
	if target == nil || !knownGoodIn(target, req) {
		what := "a new revision"
		if target != nil {
			what = fmt.Sprintf("revision %d", target.GetNumber())
		}
		return fmt.Errorf("%w: %s/%s requires a revision proven in %s, and %s has not succeeded there; deploy it to %s first, then promote it with from_environment=%s",
			errBusy, app.GetName(), env.GetName(), req, what, req, req)
	}
	return nil
}

// UpdateApplication changes an application's description, labels, spec (or
// fields of it) or environments. A spec change is what the next Deploy
// without a source rolls out; nothing is deployed now. Environments that
// serve a revision or have a rollout in progress cannot be removed.
func (s *Service) UpdateApplication(ctx context.Context, req *deployerv1.UpdateApplicationRequest) (*deployerv1.UpdateApplicationResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	in := req.GetApplication()
	if in == nil {
		return nil, toStatus(&fieldError{"application", "is required"})
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"description", "labels", "spec", "environments"}
	}
	specFields := (&deployerv1.ApplicationSpec{}).ProtoReflect().Descriptor().Fields()
	for _, p := range paths {
		switch {
		case p == "description", p == "labels", p == "spec", p == "environments":
		case strings.HasPrefix(p, "spec.") && specFields.ByName(protoreflect.Name(strings.TrimPrefix(p, "spec."))) != nil:
		default:
			return nil, toStatus(&fieldError{"update_mask", fmt.Sprintf("%q cannot be updated: use description, labels, spec, spec.<field> or environments", p)})
		}
	}
	for attempt := 0; ; attempt++ {
		v, err := s.store.Application(ctx, in.GetName())
		if err != nil {
			return nil, toStatus(err)
		}
		app := proto.CloneOf(v.Value)
		for _, p := range paths {
			switch {
			case p == "description":
				app.Description = in.GetDescription()
			case p == "labels":
				app.Labels = in.GetLabels()
			case p == "spec":
				app.Spec = proto.CloneOf(in.GetSpec())
			case p == "environments":
				if err := replaceEnvironments(app, in.GetEnvironments()); err != nil {
					return nil, toStatus(err)
				}
			default: // spec.<field>
				if app.Spec == nil {
					app.Spec = &deployerv1.ApplicationSpec{}
				}
				fd := specFields.ByName(protoreflect.Name(strings.TrimPrefix(p, "spec.")))
				src, dst := in.GetSpec().ProtoReflect(), app.Spec.ProtoReflect()
				if in.GetSpec() != nil && src.Has(fd) {
					dst.Set(fd, src.Get(fd))
				} else {
					dst.Clear(fd)
				}
			}
		}
		if err := appspec.Validate(app); err != nil {
			return nil, toStatus(err)
		}
		if err := s.checkDriver(app.GetSpec()); err != nil {
			return nil, toStatus(err)
		}
		app.UpdateTime = now()
		if req.GetValidateOnly() {
			return &deployerv1.UpdateApplicationResponse{Application: app}, nil
		}
		if _, err := s.store.UpdateApplication(ctx, app, v.Revision); errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, toStatus(err)
		}
		return &deployerv1.UpdateApplicationResponse{Application: app}, nil
	}
}

// replaceEnvironments sets app's environments to want, keeping the status
// of those that stay; one that serves or rolls out cannot go.
func replaceEnvironments(app *deployerv1.Application, want []*deployerv1.Environment) error {
	old := map[string]*deployerv1.Environment{}
	for _, e := range environments(app) {
		old[e.GetName()] = e
	}
	next := make([]*deployerv1.Environment, 0, len(want))
	for _, w := range want {
		e := proto.CloneOf(w)
		e.Status = old[e.GetName()].GetStatus()
		delete(old, e.GetName())
		next = append(next, e)
	}
	for name, e := range old {
		if e.GetStatus().GetCurrentRevision() != 0 || e.GetStatus().GetActiveRolloutId() != "" {
			return fmt.Errorf("%w: environment %s serves revision %d; delete the application with force, or keep the environment",
				errBusy, name, e.GetStatus().GetCurrentRevision())
		}
	}
	app.Environments = next
	environments(app)
	return nil
}

// driverKind names a driver in the API.
func driverKind(name string) deployerv1.DriverKind {
	switch name {
	case "docker":
		return deployerv1.DriverKind_DRIVER_KIND_DOCKER
	case "process":
		return deployerv1.DriverKind_DRIVER_KIND_PROCESS
	case "kubernetes":
		return deployerv1.DriverKind_DRIVER_KIND_KUBERNETES
	}
	return deployerv1.DriverKind_DRIVER_KIND_UNSPECIFIED
}
