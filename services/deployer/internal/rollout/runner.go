package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Signal is a person's (or a policy's) word to a running rollout.
type Signal int

const (
	// Promote ends the current pause.
	Promote Signal = iota + 1
	// PromoteFull skips every remaining step: full size, all traffic.
	PromoteFull
	// Abort rolls back to the old revision.
	Abort
	// Pause holds the rollout after its current step until Resume.
	Pause
	// Resume continues a rollout held by Pause.
	Resume
)

// UntilPromoted is the planning estimate for a pause without a duration;
// the runner waits for a Promote signal there.
const UntilPromoted = 100 * 365 * 24 * time.Hour

// Runner drives a rollout's steps, saving progress after each change so a
// restarted deployer resumes at the step it was in.
type Runner struct {
	Exec *Executor
	// Save persists the rollout; it is called after every change and must
	// not keep r, which the runner goes on changing.
	Save func(ctx context.Context, r *deployerv1.Rollout) error
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Guard, when set, rolls back a new revision whose requests fail too
	// often while the rollout runs.
	Guard *ErrorGuard
}

func (rn *Runner) now() time.Time {
	if rn.Now != nil {
		return rn.Now()
	}
	return time.Now()
}

// Prepare fills a new rollout's steps from its strategy.
func Prepare(r *deployerv1.Rollout, current int32, routed bool) []string {
	est := DefaultEstimates(r.GetEffectiveSpec().GetHealthCheck())
	est.UntilPromoted = UntilPromoted
	steps, warnings := Plan(Input{
		Strategy: r.GetStrategy(), Desired: r.GetEffectiveSpec().GetReplicas(), Current: current,
		Routed: routed, Estimates: est,
	})
	r.Steps = r.Steps[:0]
	for _, s := range steps {
		r.Steps = append(r.Steps, &deployerv1.RolloutStep{
			Index: s.GetIndex(), Kind: s.GetKind(), Description: s.GetDescription(),
			State: deployerv1.StepState_STEP_STATE_PENDING, Weight: s.GetWeight(),
			NewReplicas: s.GetNewReplicas(), OldReplicas: s.GetOldReplicas(),
		})
		if d := s.GetExpectedDuration().AsDuration(); s.GetKind() == deployerv1.StepKind_STEP_KIND_PAUSE && d != UntilPromoted {
			r.Steps[len(r.Steps)-1].PauseDuration = s.GetExpectedDuration()
		}
	}
	r.DesiredReplicas = r.GetEffectiveSpec().GetReplicas()
	return warnings
}

// Run executes r from its current step until it succeeds, rolls back or ctx
// ends (a shutdown: progress stays saved and Run can be called again).
// newRev is the revision being rolled out, oldRev the one serving before
// (Number 0 on a first deploy).
func (rn *Runner) Run(ctx context.Context, r *deployerv1.Rollout, newRev, oldRev Revision, signals <-chan Signal) error {
	if r.GetStartTime() == nil {
		r.StartTime = timestamppb.New(rn.now())
	}
	deadline := r.GetEffectiveSpec().GetProgressDeadline().AsDuration()
	if deadline <= 0 {
		deadline = 10 * time.Minute
	}
	if isTerminal(r.GetPhase()) {
		return nil
	}
	if r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLING_BACK {
		return rn.rollback(ctx, r, newRev, oldRev, r.GetRollbackTrigger(), r.GetMessage())
	}
	// A rollout a person paused stays paused across a deployer restart.
	heldByUser := r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED && r.GetPauseCause() == deployerv1.PauseCause_PAUSE_CAUSE_USER
	if !heldByUser {
		r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PROGRESSING
		if err := rn.save(ctx, r); err != nil {
			return err
		}
	}
	// Steps run under a context the error guard can cancel, with a cause.
	parent := ctx
	ctx, cancelSteps := context.WithCancelCause(parent)
	defer cancelSteps(nil)
	if rn.Guard != nil && oldRev.Number != 0 {
		go rn.Guard.watch(ctx, newRev.Number, cancelSteps)
	}
	for i := int(r.GetCurrentStepIndex()); i < len(r.GetSteps()); i++ {
		if err := rn.between(ctx, r, signals, heldByUser); err != nil {
			if errors.Is(err, errAborted) {
				return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT, "aborted by request")
			}
			if parent.Err() != nil {
				return parent.Err()
			}
			var tripped *GuardTripped
			if errors.As(context.Cause(ctx), &tripped) {
				return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS, tripped.Error())
			}
			return err
		}
		heldByUser = false
		step := r.GetSteps()[i]
		r.CurrentStepIndex = int32(i)
		if step.GetState() == deployerv1.StepState_STEP_STATE_PENDING || step.GetStartTime() == nil {
			step.StartTime = timestamppb.New(rn.now())
		}
		step.State = deployerv1.StepState_STEP_STATE_RUNNING
		r.PhaseDeadline = timestamppb.New(rn.now().Add(deadline))
		if err := rn.save(ctx, r); err != nil {
			return err
		}
		full, err := rn.step(ctx, r, step, newRev, oldRev, deadline, signals)
		if errors.Is(err, errAborted) {
			step.State = deployerv1.StepState_STEP_STATE_FAILED
			step.Message = "aborted"
			return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT, "aborted by request")
		}
		var tripped *GuardTripped
		if errors.As(context.Cause(ctx), &tripped) {
			step.State = deployerv1.StepState_STEP_STATE_FAILED
			step.Message = tripped.Error()
			step.EndTime = timestamppb.New(rn.now())
			return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS, tripped.Error())
		}
		if err != nil {
			if parent.Err() != nil {
				return parent.Err() // shutting down: resume later
			}
			step.State = deployerv1.StepState_STEP_STATE_FAILED
			step.Message = err.Error()
			step.EndTime = timestamppb.New(rn.now())
			trigger := deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_HEALTH
			if errors.Is(err, context.DeadlineExceeded) {
				trigger = deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_DEADLINE
			}
			return rn.rollback(parent, r, newRev, oldRev, trigger, err.Error())
		}
		step.State = deployerv1.StepState_STEP_STATE_SUCCEEDED
		step.EndTime = timestamppb.New(rn.now())
		r.CanaryWeight = step.GetWeight()
		r.UpdatedReplicas, r.OldReplicas = step.GetNewReplicas(), step.GetOldReplicas()
		if full {
			for _, rest := range r.GetSteps()[i+1:] {
				rest.State = deployerv1.StepState_STEP_STATE_SKIPPED
				rest.Message = "skipped: promoted to full"
			}
			if err := rn.converge(ctx, r, newRev, oldRev, r.GetDesiredReplicas(), 0, 100, deadline); err != nil {
				return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_HEALTH, err.Error())
			}
			break
		}
	}
	r.CurrentStepIndex = int32(len(r.GetSteps()))
	return rn.finish(parent, r, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, "rolled out")
}

var errAborted = errors.New("aborted")

// between handles signals that arrive while no pause step waits: Pause
// holds the rollout here until Resume (or a promotion); Abort ends it.
func (rn *Runner) between(ctx context.Context, r *deployerv1.Rollout, signals <-chan Signal, held bool) error {
	if !held {
		select {
		case sig := <-signals:
			switch sig {
			case Abort:
				return errAborted
			case Pause:
			default:
				return nil // nothing is paused: promote and resume have no effect here
			}
		default:
			return nil
		}
	}
	r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED
	r.PauseCause = deployerv1.PauseCause_PAUSE_CAUSE_USER
	if err := rn.save(ctx, r); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case sig := <-signals:
			switch sig {
			case Abort:
				return errAborted
			case Resume, Promote, PromoteFull:
				r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PROGRESSING
				r.PauseCause = deployerv1.PauseCause_PAUSE_CAUSE_UNSPECIFIED
				return rn.save(ctx, r)
			}
		}
	}
}

// step runs one step; full reports a PromoteFull received during it.
func (rn *Runner) step(ctx context.Context, r *deployerv1.Rollout, step *deployerv1.RolloutStep, newRev, oldRev Revision, deadline time.Duration, signals <-chan Signal) (full bool, err error) {
	switch step.GetKind() {
	case deployerv1.StepKind_STEP_KIND_PAUSE:
		return rn.pause(ctx, r, step, signals)
	case deployerv1.StepKind_STEP_KIND_ANALYSIS:
		return false, errors.New("analysis steps are not supported yet")
	default:
		return false, rn.converge(ctx, r, newRev, oldRev, step.GetNewReplicas(), step.GetOldReplicas(), step.GetWeight(), deadline)
	}
}

func (rn *Runner) converge(ctx context.Context, r *deployerv1.Rollout, newRev, oldRev Revision, newN, oldN, weight int32, deadline time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	return rn.Exec.Converge(cctx, State{
		App: r.GetApplication(), Env: r.GetEnvironment(), New: newRev, Old: oldRev,
		NewReplicas: newN, OldReplicas: oldN, Weight: weight,
	})
}

// pause waits for its duration (counted from the step's start, so a
// restart does not lengthen it) or for a promotion.
func (rn *Runner) pause(ctx context.Context, r *deployerv1.Rollout, step *deployerv1.RolloutStep, signals <-chan Signal) (bool, error) {
	var timer <-chan time.Time
	if pd := step.GetPauseDuration(); pd != nil {
		left := step.GetStartTime().AsTime().Add(pd.AsDuration()).Sub(rn.now())
		if left <= 0 {
			return false, nil
		}
		t := time.NewTimer(left)
		defer t.Stop()
		timer = t.C
	} else {
		r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED
		r.PauseCause = deployerv1.PauseCause_PAUSE_CAUSE_STEP
		if err := rn.save(ctx, r); err != nil {
			return false, err
		}
		defer func() { r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PROGRESSING }()
	}
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-timer:
			return false, nil
		case s := <-signals:
			switch s {
			case Promote:
				return false, nil
			case PromoteFull:
				return true, nil
			case Abort:
				return false, errAborted
			}
		}
	}
}

// rollback returns straight to the old revision: traffic first, then
// replicas; the canary steps are not replayed.
func (rn *Runner) rollback(ctx context.Context, r *deployerv1.Rollout, newRev, oldRev Revision, trigger deployerv1.RollbackTrigger, why string) error {
	r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLING_BACK
	r.RollbackTrigger = trigger
	r.RollbackRevision = uint32(oldRev.Number)
	r.Message = why
	if err := rn.save(ctx, r); err != nil {
		return err
	}
	if oldRev.Number == 0 {
		// First deploy: nothing to return to; remove what was started.
		if err := rn.Exec.Converge(ctx, State{App: r.GetApplication(), Env: r.GetEnvironment(), New: newRev}); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return rn.finish(ctx, r, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED, "failed: "+why)
	}
	failedAt := rn.now()
	if rn.Exec.Traffic != nil {
		// All traffic on the stable revision at once, if it still has backends.
		_ = rn.Exec.Traffic.SetWeights(map[int64]int{oldRev.Number: 100})
	}
	deadline := r.GetEffectiveSpec().GetProgressDeadline().AsDuration()
	if deadline <= 0 {
		deadline = 10 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	err := rn.Exec.Converge(cctx, State{
		App: r.GetApplication(), Env: r.GetEnvironment(), New: oldRev, Old: newRev,
		NewReplicas: r.GetDesiredReplicas(), OldReplicas: 0, Weight: 100,
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return rn.finish(ctx, r, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED, fmt.Sprintf("rollback to revision %d failed: %v (after: %s)", oldRev.Number, err, why))
	}
	r.TimeToStable = durationpb.New(rn.now().Sub(failedAt))
	return rn.finish(ctx, r, deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, fmt.Sprintf("rolled back to revision %d: %s", oldRev.Number, why))
}

func (rn *Runner) finish(ctx context.Context, r *deployerv1.Rollout, phase deployerv1.RolloutPhase, msg string) error {
	r.Phase = phase
	r.Message = msg
	r.EndTime = timestamppb.New(rn.now())
	r.Duration = durationpb.New(r.GetEndTime().AsTime().Sub(r.GetStartTime().AsTime()))
	return rn.save(ctx, r)
}

func (rn *Runner) save(ctx context.Context, r *deployerv1.Rollout) error {
	r.UpdateTime = timestamppb.New(rn.now())
	if rn.Save == nil {
		return nil
	}
	if err := rn.Save(context.WithoutCancel(ctx), r); err != nil {
		return fmt.Errorf("save rollout %s: %w", r.GetId(), err)
	}
	return nil
}

func isTerminal(p deployerv1.RolloutPhase) bool {
	switch p {
	case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED,
		deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
		return true
	}
	return false
}
