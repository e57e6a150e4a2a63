// Package steps runs the step types that are not commands: deploy (the
// deployer, following the rollout), gate (the health-checker or the
// monitor), and remote pipelines on GitLab and GitHub Actions.
package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func infra(format string, args ...any) engine.Outcome {
	return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: fmt.Sprintf(format, args...)}
}

func failed(format string, args ...any) engine.Outcome {
	return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED, Message: fmt.Sprintf(format, args...)}
}

func success() engine.Outcome { return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_SUCCESS} }

// rpcOutcome classifies an error of a call to another service: an
// unreachable service is an infrastructure error, a refusal a failure.
func rpcOutcome(what string, err error) engine.Outcome {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, Message: what + ": " + err.Error()}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.ResourceExhausted, codes.Aborted:
		return infra("%s: %v", what, err)
	}
	return failed("%s: %v", what, err)
}

// Deploy runs deploy steps with the deployer.
type Deploy struct {
	Client deployerv1.DeployerServiceClient
}

func phaseName(p deployerv1.RolloutPhase) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "ROLLOUT_PHASE_"))
}

// RunStep deploys and follows the rollout until it ends.
func (d *Deploy) RunStep(ctx context.Context, in engine.StepInput) engine.Outcome {
	if d.Client == nil {
		return infra("no deployer is configured for this runner")
	}
	dp := in.Instance.Step.Deploy
	run := in.Run
	attempt := len(stepOf(in).GetAttempts())
	req := &deployerv1.DeployRequest{
		Name: dp.Application, Environment: dp.Environment,
		Reason:    fmt.Sprintf("pipeline %s run %d step %s", run.GetPipeline(), run.GetNumber(), in.Instance.ID),
		RequestId: fmt.Sprintf("%s/%s/%d", run.GetId(), in.Instance.ID, attempt),
	}
	if dp.Image != "" || len(dp.Env) > 0 {
		app, err := d.Client.GetApplication(ctx, &deployerv1.GetApplicationRequest{Name: dp.Application})
		if err != nil {
			return rpcOutcome("read application "+dp.Application, err)
		}
		spec := proto.CloneOf(app.GetApplication().GetSpec())
		if spec == nil {
			return failed("application %s has no spec", dp.Application)
		}
		// ${NAME} in the image and env values is the run's variable NAME.
		expand := func(s string) string {
			return os.Expand(s, func(name string) string {
				if v, ok := run.GetVariables()[name]; ok {
					return v
				}
				return "${" + name + "}"
			})
		}
		if dp.Image != "" {
			spec.Workload = &deployerv1.ApplicationSpec_Image{Image: expand(dp.Image)}
		}
		for _, k := range sortedKeys(dp.Env) {
			v := expand(dp.Env[k])
			i := slices.IndexFunc(spec.Env, func(e *deployerv1.EnvVar) bool { return e.GetName() == k })
			if i >= 0 {
				spec.Env[i].Value = v
			} else {
				spec.Env = append(spec.Env, &deployerv1.EnvVar{Name: k, Value: v})
			}
		}
		req.Source = &deployerv1.DeployRequest_Spec{Spec: spec}
	}
	res, err := d.Client.Deploy(ctx, req)
	if err != nil {
		return rpcOutcome("deploy "+dp.Application, err)
	}
	ro := res.GetRollout()
	report := func(ro *deployerv1.Rollout) {
		in.Update(func(s *pb.RunStep) {
			s.Detail = &pb.RunStep_Deploy{Deploy: &pb.DeployStepStatus{
				Application: dp.Application, Revision: fmt.Sprint(ro.GetToRevision()), Rollout: ro.GetId(),
				RolloutState: phaseName(ro.GetPhase()), Progress: ro.GetMessage(),
			}}
		})
	}
	report(ro)
	fmt.Fprintf(in.Log, "deploying %s revision %d: rollout %s %s\n", dp.Application, ro.GetToRevision(), ro.GetId(), phaseName(ro.GetPhase()))
	if out, done := rolloutOutcome(ro); done {
		return out
	}
	stream, err := d.Client.WatchRollout(ctx, &deployerv1.WatchRolloutRequest{Application: dp.Application, Id: ro.GetId()})
	if err != nil {
		return rpcOutcome("watch rollout "+ro.GetId(), err)
	}
	last := ""
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The stream ends with the rollout; read its final state.
			got, gerr := d.Client.GetRollout(ctx, &deployerv1.GetRolloutRequest{Application: dp.Application, Id: ro.GetId()})
			if gerr != nil {
				return rpcOutcome("read rollout "+ro.GetId(), gerr)
			}
			ro = got.GetRollout()
			report(ro)
			if out, done := rolloutOutcome(ro); done {
				return out
			}
			return infra("rollout %s watch ended while %s", ro.GetId(), phaseName(ro.GetPhase()))
		}
		if err != nil {
			return rpcOutcome("watch rollout "+ro.GetId(), err)
		}
		ro = msg.GetRollout()
		report(ro)
		line := phaseName(ro.GetPhase())
		if ro.GetMessage() != "" {
			line += ": " + ro.GetMessage()
		}
		if line != last {
			fmt.Fprintf(in.Log, "rollout %s %s\n", ro.GetId(), line)
			last = line
		}
		if out, done := rolloutOutcome(ro); done {
			return out
		}
	}
}

func rolloutOutcome(ro *deployerv1.Rollout) (engine.Outcome, bool) {
	switch ro.GetPhase() {
	case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED:
		return success(), true
	case deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
		msg := ro.GetMessage()
		if msg == "" {
			msg = ro.GetCause()
		}
		return failed("rollout %s %s: %s", ro.GetId(), strings.ReplaceAll(phaseName(ro.GetPhase()), "_", " "), msg), true
	}
	return engine.Outcome{}, false
}

func stepOf(in engine.StepInput) *pb.RunStep {
	for _, s := range in.Run.GetSteps() {
		if s.GetId() == in.Instance.ID {
			return s
		}
	}
	return nil
}
