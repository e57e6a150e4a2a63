package rollout_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/analysis"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"google.golang.org/protobuf/types/known/durationpb"
)

func analysedCanary() *deployerv1.Strategy {
	errRatio := &deployerv1.AnalysisMetric{
		Name: "error-ratio",
		Source: &deployerv1.AnalysisMetric_Router{Router: &deployerv1.RouterMetric{
			Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO, MinRequests: 5,
		}},
		Comparison: deployerv1.Comparison_COMPARISON_LESS_OR_EQUAL, Threshold: 0.01,
	}
	return &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 34}}},
		{Step: &deployerv1.CanaryStep_Analysis{Analysis: &deployerv1.AnalysisStep{Analysis: &deployerv1.Analysis{
			Metrics: []*deployerv1.AnalysisMetric{errRatio}, Interval: durationpb.New(400 * time.Millisecond), Count: 2,
		}}}},
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 67}}},
	}}}}
}

// TestAnalysisStepGatesTheCanary: a healthy v2 passes its analysis step
// under load; a v3 that answers 500 fails it and is rolled back straight to
// v2, with the measurement that failed in the step's history.
func TestAnalysisStepGatesTheCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	w.runner.Analysis = &analysis.Measurer{Router: w.router.Stats}
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)
	l := startLoad(t, w.url, 4)

	v2 := rollout.Revision{Number: 2, Spec: spec("v2", analysedCanary())}
	r := w.deploy(t, "r2", v1, v2, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("v2: %s: %s", r.GetPhase(), r.GetMessage())
	}
	an := analysisStep(t, r).GetAnalysis()
	if an.GetState() != deployerv1.StepState_STEP_STATE_SUCCEEDED || len(an.GetMeasurements()) != 2 {
		t.Fatalf("v2 analysis: %v", an)
	}

	l.finish(t) // v2's rollout lost nothing
	// v3 answers 500 on purpose: its failures are expected, so count only.
	l = startLoad(t, w.url, 4)
	v3 := rollout.Revision{Number: 3, Spec: spec("v3", analysedCanary(), &deployerv1.EnvVar{Name: "FAIL", Value: "1"})}
	r = w.deploy(t, "r3", v2, v3, nil)
	close(l.stop)
	l.wg.Wait()
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS {
		t.Fatalf("v3: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
	step := analysisStep(t, r)
	if step.GetState() != deployerv1.StepState_STEP_STATE_FAILED || !strings.Contains(r.GetMessage(), "error-ratio failed") {
		t.Fatalf("v3 analysis step %v; rollout message %q should say which metric failed", step, r.GetMessage())
	}
	t.Logf("v3 rolled back after %d failed requests: %s", l.fail.Load(), r.GetMessage())
	if got := w.versions(t); got["v2"] != 30 {
		t.Fatalf("after rollback: served %v", got)
	}
}

// alerts is an AlertChecker whose answer a test sets.
type alerts struct{ firing atomic.Bool }

func (a *alerts) Firing(context.Context, string, string, time.Time) (bool, string, error) {
	if a.firing.Load() {
		return true, "alert HighErrorRate fired", nil
	}
	return false, "", nil
}

// TestFiringAlertRollsBackDuringVerification: after its last step a rollout
// verifies for the policy's window; an alert then rolls it back, and without
// one it succeeds once the window is over.
func TestFiringAlertRollsBackDuringVerification(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	al := &alerts{}
	w.runner.Alerts, w.runner.AlertInterval = al, 50*time.Millisecond
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)

	verified := func(version string) *deployerv1.ApplicationSpec {
		s := spec(version, rolling())
		s.RollbackPolicy = &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(time.Second)}
		return s
	}
	v2 := rollout.Revision{Number: 2, Spec: verified("v2")}
	begin := time.Now()
	r := w.deploy(t, "r2", v1, v2, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || time.Since(begin) < time.Second {
		t.Fatalf("v2: %s after %s: %s; want success after the 1s window", r.GetPhase(), time.Since(begin), r.GetMessage())
	}

	v3 := rollout.Revision{Number: 3, Spec: verified("v3")}
	go func() {
		for {
			if s := w.saved.Load(); s != nil && s.GetId() == "r3" && s.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_VERIFYING {
				al.firing.Store(true)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	r = w.deploy(t, "r3", v2, v3, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FIRING_ALERT ||
		!strings.Contains(r.GetMessage(), "during verification: alert HighErrorRate fired") {
		t.Fatalf("v3: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
	if got := w.versions(t); got["v2"] != 30 {
		t.Fatalf("after rollback: served %v", got)
	}
}

// TestPausePolicyHoldsForAPerson: with on_firing_alert: pause a firing
// alert holds the rollout paused (cause failure) instead of rolling back;
// Abort then rolls it back.
func TestPausePolicyHoldsForAPerson(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	al := &alerts{}
	w.runner.Alerts, w.runner.AlertInterval = al, 50*time.Millisecond
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)

	s := spec("v2", canary())
	s.RollbackPolicy.OnFiringAlert = deployerv1.FailureAction_FAILURE_ACTION_PAUSE
	al.firing.Store(true)
	signals := make(chan rollout.Signal, 1)
	held := make(chan *deployerv1.Rollout, 1)
	go func() {
		for {
			if r := w.saved.Load(); r != nil && r.GetId() == "r2" && r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED {
				held <- r
				signals <- rollout.Abort
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	r := w.deploy(t, "r2", v1, rollout.Revision{Number: 2, Spec: s}, signals)
	h := <-held
	if h.GetPauseCause() != deployerv1.PauseCause_PAUSE_CAUSE_FAILURE || !strings.Contains(h.GetMessage(), "alert HighErrorRate fired") {
		t.Fatalf("held: %s %s", h.GetPauseCause(), h.GetMessage())
	}
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT {
		t.Fatalf("after abort: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
}

func analysisStep(t *testing.T, r *deployerv1.Rollout) *deployerv1.RolloutStep {
	t.Helper()
	for _, s := range r.GetSteps() {
		if s.GetKind() == deployerv1.StepKind_STEP_KIND_ANALYSIS {
			return s
		}
	}
	t.Fatalf("rollout %s has no analysis step: %v", r.GetId(), r.GetSteps())
	return nil
}
