package deployer

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/appspec"
	"github.com/opsuite/opsuite/services/deployer/internal/compose"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ImportCompose deploys the services of a docker-compose file, one
// application each (named <project>-<service>), creating or updating them.
func (s *Service) ImportCompose(ctx context.Context, req *deployerv1.ImportComposeRequest) (*deployerv1.ImportComposeResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	if why := appspecName(req.GetProject()); why != "" {
		return nil, toStatus(&fieldError{"project", why})
	}
	for k := range req.GetVariables() {
		if !envNameRe.MatchString(k) {
			return nil, toStatus(&fieldError{"variables", fmt.Sprintf("%q is not a variable name (letters, digits and '_', not starting with a digit)", k)})
		}
	}
	apps, err := compose.Convert(ctx, req.GetProject(), []byte(req.GetContent()), req.GetVariables())
	switch {
	case errors.Is(err, compose.ErrInvalid), errors.Is(err, compose.ErrUnsupported):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil:
		return nil, toStatus(err)
	}
	resp := &deployerv1.ImportComposeResponse{Project: &deployerv1.ComposeProject{Name: req.GetProject(), CreateTime: now()}}
	for _, app := range apps {
		if req.GetDriver() != nil {
			app.Spec.Driver = req.GetDriver()
		}
		if err := appspec.Validate(app); err != nil {
			return nil, toStatus(err)
		}
		if err := s.checkDriver(app.GetSpec()); err != nil {
			return nil, toStatus(err)
		}
		resp.Project.Services = append(resp.Project.Services, &deployerv1.ComposeService{
			Service: app.GetLabels()[compose.LabelService], Application: app.GetName(),
		})
	}
	if req.GetValidateOnly() {
		resp.Applications = apps
		return resp, nil
	}
	for _, app := range apps {
		if _, err := s.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: app}); err != nil && status.Code(err) != codes.AlreadyExists {
			return nil, err
		}
		existing, err := s.store.Application(ctx, app.GetName())
		if err != nil {
			return nil, toStatus(err)
		}
		if existing.Value.GetComposeProject() != req.GetProject() {
			return nil, status.Errorf(codes.FailedPrecondition, "application %s exists and does not belong to compose project %s", app.GetName(), req.GetProject())
		}
		dr, err := s.deploy(ctx, &deployerv1.DeployRequest{
			Name: app.GetName(), Environment: req.GetEnvironment(),
			Source:   &deployerv1.DeployRequest_Spec{Spec: app.GetSpec()},
			Strategy: req.GetStrategy(), Reason: "compose import " + req.GetProject(),
		})
		if err != nil {
			return nil, toStatus(err)
		}
		if dr.GetRollout() != nil {
			resp.Rollouts = append(resp.Rollouts, dr.GetRollout())
		}
		resp.Applications = append(resp.Applications, proto.CloneOf(app))
	}
	return resp, nil
}

// StopCompose stops every application of a compose project (scales it to
// zero), or removes them with remove.
func (s *Service) StopCompose(ctx context.Context, req *deployerv1.StopComposeRequest) (*deployerv1.StopComposeResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	all, err := s.store.Applications(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &deployerv1.StopComposeResponse{}
	for _, v := range all {
		app := v.Value
		if app.GetComposeProject() != req.GetProject() || req.GetProject() == "" {
			continue
		}
		if req.GetRemove() {
			if _, err := s.DeleteApplication(ctx, &deployerv1.DeleteApplicationRequest{Name: app.GetName(), Force: true}); err != nil {
				return nil, err
			}
		} else if err := s.stopAll(ctx, app); err != nil {
			return nil, toStatus(err)
		}
		resp.Applications = append(resp.Applications, app.GetName())
	}
	if len(resp.Applications) == 0 {
		return nil, toStatus(fmt.Errorf("compose project %q: %w", req.GetProject(), store.ErrNotFound))
	}
	return resp, nil
}

// stopAll stops every replica of an application, keeping it and its history.
func (s *Service) stopAll(ctx context.Context, app *deployerv1.Application) error {
	for _, env := range app.GetEnvironments() {
		spec := effectiveSpec(app.GetSpec(), env, nil)
		e, err := s.envFor(app.GetName(), env.GetName(), spec, "")
		if err != nil {
			return err
		}
		if env.GetStatus().GetActiveRolloutId() != "" {
			return fmt.Errorf("%w: a rollout is in progress in %s/%s", errBusy, app.GetName(), env.GetName())
		}
		conv, _, err := s.converger(app.GetName(), env.GetName(), spec, e)
		if err != nil {
			return err
		}
		l, err := s.leaseEnv(app.GetName(), env.GetName())
		if err != nil {
			return err
		}
		err = conv.Converge(ctx, rollout.State{App: app.GetName(), Env: env.GetName()})
		release(l)
		if err != nil {
			return fmt.Errorf("stop %s/%s: %w", app.GetName(), env.GetName(), err)
		}
	}
	// Record that nothing serves, so a restarted deployer does not bring the
	// replicas back; the next deploy starts them as a first deploy.
	for attempt := 0; ; attempt++ {
		v, err := s.store.Application(ctx, app.GetName())
		if err != nil {
			return err
		}
		for _, env := range v.Value.GetEnvironments() {
			if env.Status != nil {
				env.Status.CurrentRevision, env.Status.DesiredReplicas, env.Status.ReadyReplicas = 0, 0, 0
			}
		}
		if _, err = s.store.UpdateApplication(ctx, v.Value, v.Revision); !errors.Is(err, store.ErrConflict) || attempt == 4 {
			return err
		}
	}
}

// appspecName reports why a name is not a DNS-1123 label, or "".
func appspecName(name string) string {
	probe := &deployerv1.Application{Name: name, Spec: &deployerv1.ApplicationSpec{Workload: &deployerv1.ApplicationSpec_Image{Image: "x"}}}
	var ve *appspec.ValidationError
	if err := appspec.Validate(probe); errors.As(err, &ve) {
		for _, f := range ve.Fields {
			if f.Field == "name" {
				return f.Reason
			}
		}
	}
	return ""
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
