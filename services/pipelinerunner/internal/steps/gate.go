package steps

import (
	"context"
	"fmt"
	"strings"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Gate waits until a health-checker group is healthy or no alert fires for
// an application. It polls at the step's interval until the step's timeout.
type Gate struct {
	Health  hcv1.HealthCheckerServiceClient
	Monitor monitorv1.MonitorServiceClient
}

// RunStep checks until the gate opens or the context ends.
func (g *Gate) RunStep(ctx context.Context, in engine.StepInput) engine.Outcome {
	gt := in.Instance.Step.Gate
	kind, target := pb.GateKind_GATE_KIND_HEALTH, gt.Health
	if gt.Alerts != "" {
		kind, target = pb.GateKind_GATE_KIND_NO_FIRING_ALERTS, gt.Alerts
	}
	if kind == pb.GateKind_GATE_KIND_HEALTH && g.Health == nil {
		return infra("no health-checker is configured for this runner")
	}
	if kind == pb.GateKind_GATE_KIND_NO_FIRING_ALERTS && g.Monitor == nil {
		return infra("no monitor is configured for this runner")
	}
	interval := gt.Interval
	if interval <= 0 {
		interval = time.Second
	}
	last := ""
	for {
		observed, open, err := g.check(ctx, kind, target)
		if err != nil {
			out := rpcOutcome("gate "+target, err)
			if out.Result == pb.AttemptResult_ATTEMPT_RESULT_CANCELLED {
				return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED, Message: fmt.Sprintf("gate %s still closed: %s", target, last)}
			}
			return out
		}
		in.Update(func(s *pb.RunStep) {
			s.Detail = &pb.RunStep_Gate{Gate: &pb.GateStepStatus{Kind: kind, Target: target, Observed: observed, LastCheckTime: timestamppb.Now()}}
		})
		if observed != last {
			fmt.Fprintf(in.Log, "gate %s: %s\n", target, observed)
			last = observed
		}
		if open {
			return success()
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED, Message: fmt.Sprintf("gate %s still closed: %s", target, last)}
		case <-t.C:
		}
	}
}

func (g *Gate) check(ctx context.Context, kind pb.GateKind, target string) (string, bool, error) {
	if kind == pb.GateKind_GATE_KIND_HEALTH {
		res, err := g.Health.GetHealth(ctx, &hcv1.GetHealthRequest{Group: target})
		if err != nil {
			return "", false, err
		}
		h := strings.ToLower(strings.TrimPrefix(res.GetHealth().String(), "OVERALL_HEALTH_"))
		obs := fmt.Sprintf("%s (%d/%d passing)", h, res.GetPassing(), res.GetTotal())
		return obs, res.GetHealth() == hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY && res.GetTotal() > 0, nil
	}
	res, err := g.Monitor.ListAlerts(ctx, &monitorv1.ListAlertsRequest{
		Application: target, States: []monitorv1.AlertState{monitorv1.AlertState_ALERT_STATE_FIRING},
	})
	if err != nil {
		return "", false, err
	}
	n := len(res.GetAlerts())
	return fmt.Sprintf("%d alerts firing", n), n == 0, nil
}
