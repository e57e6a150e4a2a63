package deployer

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ListReplicas reports the replicas the drivers run for an application.
func (s *Service) ListReplicas(ctx context.Context, req *deployerv1.ListReplicasRequest) (*deployerv1.ListReplicasResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	appV, err := s.store.Application(ctx, req.GetApplication())
	if err != nil {
		return nil, toStatus(err)
	}
	match := map[string]string{driver.LabelApp: req.GetApplication()}
	if req.GetEnvironment() != "" {
		match[driver.LabelEnvironment] = req.GetEnvironment()
	}
	if req.GetRevision() != 0 {
		match[driver.LabelRevision] = strconv.FormatUint(uint64(req.GetRevision()), 10)
	}
	resp := &deployerv1.ListReplicasResponse{}
	kinds := make([]string, 0, len(s.drivers))
	for k := range s.drivers {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, kind := range kinds {
		reps, err := s.drivers[kind].List(ctx, match)
		if err != nil {
			return nil, toStatus(fmt.Errorf("list %s replicas: %w", kind, err))
		}
		for _, r := range reps {
			if r.Revision != int64(req.GetRevision()) && req.GetRevision() != 0 {
				continue
			}
			p := replicaProto(kind, r)
			if !req.GetIncludeStopped() && (p.GetState() == deployerv1.ReplicaState_REPLICA_STATE_STOPPED || p.GetState() == deployerv1.ReplicaState_REPLICA_STATE_FAILED) {
				continue
			}
			resp.Replicas = append(resp.Replicas, p)
		}
	}
	s.annotate(ctx, req.GetApplication(), resp.GetReplicas())
	kubePods, err := s.kubePods(ctx, appV.Value, req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Replicas = append(resp.Replicas, kubePods...)
	slices.SortFunc(resp.Replicas, func(a, b *deployerv1.Replica) int { return strings.Compare(a.GetId(), b.GetId()) })
	return resp, nil
}

// kubePods lists the pods of the application's environments that run on
// Kubernetes, as replicas.
func (s *Service) kubePods(ctx context.Context, app *deployerv1.Application, req *deployerv1.ListReplicasRequest) ([]*deployerv1.Replica, error) {
	if s.kube == nil {
		return nil, nil
	}
	var out []*deployerv1.Replica
	for _, env := range app.GetEnvironments() {
		if req.GetEnvironment() != "" && env.GetName() != req.GetEnvironment() {
			continue
		}
		spec := effectiveSpec(app.GetSpec(), env, nil)
		if driverKindOf(spec) != kubernetes.Name {
			continue
		}
		pods, err := s.kubeReplicas(ctx, app.GetName(), env.GetName(), spec)
		if err != nil {
			return nil, fmt.Errorf("list kubernetes pods of %s/%s: %w", app.GetName(), env.GetName(), err)
		}
		for _, p := range pods {
			if req.GetRevision() != 0 && p.GetRevision() != req.GetRevision() {
				continue
			}
			if !req.GetIncludeStopped() && (p.GetState() == deployerv1.ReplicaState_REPLICA_STATE_STOPPED || p.GetState() == deployerv1.ReplicaState_REPLICA_STATE_FAILED) {
				continue
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// annotate fills in what the runtime does not know: each replica's health
// (its health-checker target) and whether the router sends it requests.
func (s *Service) annotate(ctx context.Context, app string, reps []*deployerv1.Replica) {
	if len(reps) == 0 {
		return
	}
	backends := map[string]router.BackendState{}
	s.mu.Lock()
	for key, e := range s.envs {
		if strings.HasPrefix(key, app+"/") && e.router != nil {
			for _, b := range e.router.Backends() {
				backends[b.Addr] = b
			}
		}
	}
	s.mu.Unlock()
	targets := map[string]hcv1.CheckState{}
	listed := map[string]bool{}
	for _, p := range reps {
		if listed[p.GetEnvironment()] {
			continue
		}
		listed[p.GetEnvironment()] = true
		list, err := s.hc.ListTargets(ctx, &hcv1.ListTargetsRequest{Group: rollout.Group(app, p.GetEnvironment()), PageSize: 1000})
		if err != nil {
			continue // health unknown: left unspecified
		}
		for _, t := range list.GetTargets() {
			targets[t.GetName()] = t.GetStatus().GetState()
		}
	}
	for _, p := range reps {
		if b, ok := backends[net.JoinHostPort(p.GetHostAddress(), strconv.Itoa(int(p.GetHostPort())))]; ok {
			p.InRotation, p.Draining = b.Ready && !b.Draining, b.Draining
		}
		switch targets[p.GetHealthTarget()] {
		case hcv1.CheckState_CHECK_STATE_PASSING, hcv1.CheckState_CHECK_STATE_WARNING:
			p.Health = deployerv1.HealthState_HEALTH_STATE_HEALTHY
		case hcv1.CheckState_CHECK_STATE_CRITICAL:
			p.Health = deployerv1.HealthState_HEALTH_STATE_UNHEALTHY
		case hcv1.CheckState_CHECK_STATE_PENDING:
			p.Health = deployerv1.HealthState_HEALTH_STATE_PENDING
		}
	}
}

func replicaProto(kind string, r driver.Replica) *deployerv1.Replica {
	p := &deployerv1.Replica{
		Id: r.ID, Name: r.ID, Application: r.App, Environment: r.Environment, Revision: uint32(r.Revision),
		Restarts: int32(r.Restarts), ExitCode: int32(r.ExitCode), Reason: r.Reason, HealthTarget: r.ID,
		Driver: driverKind(kind),
	}
	switch kind {
	case "docker":
		p.DriverStatus = &deployerv1.Replica_Docker{Docker: &deployerv1.DockerReplicaStatus{ContainerId: r.RuntimeID, ContainerName: r.ID}}
	case "process":
		pid, _ := strconv.Atoi(r.RuntimeID)
		p.DriverStatus = &deployerv1.Replica_Process{Process: &deployerv1.ProcessReplicaStatus{Pid: int32(pid)}}
	}
	switch r.State {
	case driver.StateRunning:
		p.State = deployerv1.ReplicaState_REPLICA_STATE_RUNNING
	case driver.StateStarting:
		p.State = deployerv1.ReplicaState_REPLICA_STATE_STARTING
		if r.Restarts > 0 {
			p.State = deployerv1.ReplicaState_REPLICA_STATE_RESTARTING
		}
	case driver.StateExited:
		p.State = deployerv1.ReplicaState_REPLICA_STATE_FAILED
	case driver.StateStopped:
		p.State = deployerv1.ReplicaState_REPLICA_STATE_STOPPED
	}
	for i, b := range r.Bindings {
		host := b.HostIP
		if host == "" || host == "0.0.0.0" {
			host = "127.0.0.1"
		}
		p.Ports = append(p.Ports, &deployerv1.PortBinding{Name: b.Name, ContainerPort: uint32(b.ContainerPort), HostAddress: host, HostPort: uint32(b.HostPort)})
		if i == 0 {
			p.HostAddress, p.HostPort = host, uint32(b.HostPort)
		}
	}
	if !r.StartedAt.IsZero() {
		p.StartTime = timestamppb.New(r.StartedAt)
	}
	return p
}

// Scale changes how many replicas of the serving revision run in an
// environment, starting new ones health-gated and draining the ones it stops.
func (s *Service) Scale(ctx context.Context, req *deployerv1.ScaleRequest) (*deployerv1.ScaleResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	if n := req.GetReplicas(); n < 0 || n > 1000 {
		return nil, toStatus(&fieldError{"replicas", fmt.Sprintf("must be 0-1000, got %d", n)})
	}
	app, err := s.scale(ctx, req.GetName(), req.GetEnvironment(), req.GetReplicas(), nil)
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.ScaleResponse{Application: app}, nil
}

// scale converges app/env to n replicas of its current revision and keeps
// n as the environment's replica count; as, when set, is the autoscaler's
// decision to record with it.
func (s *Service) scale(ctx context.Context, name, envName string, n int32, as *deployerv1.AutoscalingStatus) (*deployerv1.Application, error) {
	v, err := s.store.Application(ctx, name)
	if err != nil {
		return nil, err
	}
	app := v.Value
	env, err := environment(app, envName)
	if err != nil {
		return nil, err
	}
	if id := env.GetStatus().GetActiveRolloutId(); id != "" {
		return nil, fmt.Errorf("%w: rollout %s is in progress; scale after it ends", errBusy, id)
	}
	cur := env.GetStatus().GetCurrentRevision()
	if cur == 0 {
		return nil, fmt.Errorf("%w: %s/%s has not been deployed yet", errBusy, app.GetName(), env.GetName())
	}
	if env.Overrides == nil {
		env.Overrides = &deployerv1.EnvironmentOverrides{}
	}
	env.Overrides.Replicas = &n
	side, err := s.revisionSide(ctx, app, env, cur, nil)
	if err != nil {
		return nil, err
	}
	e, err := s.envFor(app.GetName(), env.GetName(), side.Spec, "")
	if err != nil {
		return nil, err
	}
	conv, _, err := s.converger(app.GetName(), env.GetName(), side.Spec, e)
	if err != nil {
		return nil, err
	}
	l, err := s.leaseEnv(app.GetName(), env.GetName())
	if err != nil {
		return nil, err
	}
	defer release(l)
	deadline := side.Spec.GetProgressDeadline().AsDuration()
	if deadline <= 0 {
		deadline = 10 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	if err := conv.Converge(cctx, rollout.State{
		App: app.GetName(), Env: env.GetName(), New: side, NewReplicas: n, Weight: 100,
	}); err != nil {
		return nil, fmt.Errorf("scale %s/%s to %d: %w", app.GetName(), env.GetName(), n, err)
	}
	if env.Status == nil {
		env.Status = &deployerv1.EnvironmentStatus{}
	}
	env.Status.DesiredReplicas, env.Status.ReadyReplicas = n, n
	if as != nil {
		env.Status.Autoscaling = as
	}
	app.UpdateTime = timestamppb.Now()
	if _, err := s.store.UpdateApplication(ctx, app, v.Revision); err != nil {
		return nil, err
	}
	return app, nil
}
