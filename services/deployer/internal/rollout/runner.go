package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/analysis"
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
	Exec Converger
	// Log receives what the runner notes but does not stop for.
	Log *slog.Logger
	// Save persists the rollout; it is called after every change and must
	// not keep r, which the runner goes on changing.
	Save func(ctx context.Context, r *deployerv1.Rollout) error
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Guard, when set, rolls back a new revision whose requests fail too
	// often while the rollout runs.
	Guard *ErrorGuard
	// Analysis measures analysis steps and background analyses; without it
	// an analysis step fails.
	Analysis *analysis.Measurer
	// Alerts, when set, rolls back a rollout whose application has an alert
	// firing since the rollout started.
	Alerts AlertChecker
	// AlertInterval is how often Alerts is asked; default 1s.
	AlertInterval time.Duration
}

func (rn *Runner) now() time.Time {
	if rn.Now != nil {
		return rn.Now()
	}
	return time.Now()
}

// Prepare fills a new rollout's steps from its strategy; routed and
// platformRolls are as in Input.
func Prepare(r *deployerv1.Rollout, current int32, routed, platformRolls bool) []string {
	est := DefaultEstimates(r.GetEffectiveSpec().GetHealthCheck())
	est.UntilPromoted = UntilPromoted
	steps, warnings := Plan(Input{
		Strategy: r.GetStrategy(), Desired: r.GetEffectiveSpec().GetReplicas(), Current: current,
		Routed: routed, PlatformRolls: platformRolls, Estimates: est,
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
//
// Background checks (the error guard, firing alerts, a canary's background
// analysis) run beside the steps; when one trips, the step in progress is
// cancelled and the rollback policy decides: roll back straight to oldRev,
// hold the rollout paused for a person, or note it and carry on. After the
// last step the rollout verifies for the policy's window, during which the
// same checks still roll it back.
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
	verifying := r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_VERIFYING
	if !heldByUser && !verifying {
		r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PROGRESSING
		if err := rn.save(ctx, r); err != nil {
			return err
		}
	}
	parent := ctx
	tr := &trips{}
	watchCtx, stopWatches := context.WithCancel(parent)
	defer stopWatches()
	if rn.Guard != nil && oldRev.Number != 0 {
		go rn.Guard.watch(watchCtx, newRev.Number, func(err error) {
			tr.trip(&Tripped{Trigger: deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS, Reason: err.Error()})
		})
	}
	if rn.Alerts != nil {
		go rn.watchAlerts(watchCtx, r.GetApplication(), r.GetEnvironment(), r.GetStartTime().AsTime(), tr)
	}
	bg := r.GetStrategy().GetCanary().GetBackgroundAnalysis()
	bgStarted := false
	startBackground := func() {
		if bg == nil || bgStarted || rn.Analysis == nil {
			return
		}
		bgStarted = true
		target := analysis.Target{App: r.GetApplication(), Env: r.GetEnvironment(), Revision: newRev.Number, Stable: oldRev.Number}
		go func() {
			st := &deployerv1.AnalysisStatus{}
			err := rn.Analysis.Background(watchCtx, bg, target, st)
			var failed *analysis.Failed
			if errors.As(err, &failed) {
				tr.trip(&Tripped{Trigger: deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS, Reason: "background analysis: " + failed.Message, Analysis: st})
			}
		}()
	}
	if r.GetCanaryWeight() > 0 || verifying {
		startBackground()
	}

	for i := int(r.GetCurrentStepIndex()); i < len(r.GetSteps()); i++ {
		stepCtx := tr.begin(parent)
		early, err := rn.between(stepCtx, r, signals, heldByUser)
		if err == nil {
			heldByUser = false
			step := r.GetSteps()[i]
			r.CurrentStepIndex = int32(i)
			if step.GetState() == deployerv1.StepState_STEP_STATE_PENDING || step.GetStartTime() == nil {
				step.StartTime = timestamppb.New(rn.now())
			}
			step.State = deployerv1.StepState_STEP_STATE_RUNNING
			r.PhaseDeadline = timestamppb.New(rn.now().Add(deadline))
			if err := rn.save(stepCtx, r); err != nil && parent.Err() == nil && tr.pending() == nil {
				return err
			}
			var full bool
			full, err = rn.step(stepCtx, r, step, newRev, oldRev, deadline, signals, early)
			if err == nil && tr.pending() == nil {
				step.State = deployerv1.StepState_STEP_STATE_SUCCEEDED
				step.EndTime = timestamppb.New(rn.now())
				r.CanaryWeight = step.GetWeight()
				r.UpdatedReplicas, r.OldReplicas = step.GetNewReplicas(), step.GetOldReplicas()
				// A step ends once its new replicas pass and take traffic.
				r.ReadyReplicas = step.GetNewReplicas()
				if r.GetCanaryWeight() > 0 {
					startBackground()
				}
				if full {
					for _, rest := range r.GetSteps()[i+1:] {
						rest.State = deployerv1.StepState_STEP_STATE_SKIPPED
						rest.Message = "skipped: promoted to full"
					}
					if err := rn.converge(parent, r, newRev, oldRev, r.GetDesiredReplicas(), 0, 100, deadline); err != nil {
						if parent.Err() != nil {
							return parent.Err()
						}
						return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_HEALTH, err.Error())
					}
					break
				}
				if err := rn.save(parent, r); err != nil {
					return err
				}
				continue
			}
		}
		if parent.Err() != nil {
			return parent.Err() // shutting down: resume later
		}
		// The step (or the wait before it) ended early: an abort, a failure
		// of its own, or a background check that tripped.
		step := r.GetSteps()[i]
		trip := tr.pending()
		switch {
		case errors.Is(err, errAborted):
			step.State = deployerv1.StepState_STEP_STATE_FAILED
			step.Message = "aborted"
			return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT, "aborted by request")
		case trip == nil:
			trip = stepTrip(err)
		}
		step.Message = trip.Reason
		step.EndTime = timestamppb.New(rn.now())
		step.State = deployerv1.StepState_STEP_STATE_FAILED
		switch rn.action(r, trip) {
		case deployerv1.FailureAction_FAILURE_ACTION_IGNORE:
			// Noted in the step's history; the step counts as done.
			step.Message = "ignored by the rollback policy: " + trip.Reason
			tr.clear()
			if err := rn.save(parent, r); err != nil {
				return err
			}
			continue
		case deployerv1.FailureAction_FAILURE_ACTION_PAUSE:
			cause := deployerv1.PauseCause_PAUSE_CAUSE_FAILURE
			if trip.Inconclusive {
				cause = deployerv1.PauseCause_PAUSE_CAUSE_INCONCLUSIVE_ANALYSIS
			}
			tr.clear()
			if err := rn.hold(parent, r, cause, trip.Reason, signals); err != nil {
				if errors.Is(err, errAborted) {
					return rn.rollback(parent, r, newRev, oldRev, deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT, "aborted by request after: "+trip.Reason)
				}
				return err
			}
			// A person chose to go on: the failed step counts as done
			// for analysis, and is tried again otherwise.
			if step.GetKind() == deployerv1.StepKind_STEP_KIND_ANALYSIS {
				step.Message = "promoted past a failed analysis: " + trip.Reason
				continue
			}
			step.State = deployerv1.StepState_STEP_STATE_PENDING
			i--
			continue
		}
		return rn.rollback(parent, r, newRev, oldRev, trip.Trigger, trip.Reason)
	}
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_VERIFYING {
		r.CurrentStepIndex = int32(len(r.GetSteps()))
		r.CanaryWeight, r.UpdatedReplicas, r.OldReplicas, r.ReadyReplicas = 100, r.GetDesiredReplicas(), 0, r.GetDesiredReplicas()
	}
	if err := rn.verify(parent, r, tr); err != nil {
		if parent.Err() != nil {
			return parent.Err()
		}
		var trip *Tripped
		if errors.As(err, &trip) {
			return rn.rollback(parent, r, newRev, oldRev, trip.Trigger, "during verification: "+trip.Reason)
		}
		return err
	}
	return rn.finish(parent, r, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, "rolled out")
}

// DefaultVerificationWindow applies when the rollback policy sets none.
const DefaultVerificationWindow = 5 * time.Minute

// verify keeps the rollout in phase verifying until its window (counted
// from the end of its last step, so a restart does not lengthen it) is over;
// a background check that trips then is returned as *Tripped, unless the
// policy ignores it.
func (rn *Runner) verify(ctx context.Context, r *deployerv1.Rollout, tr *trips) error {
	window := DefaultVerificationWindow
	if w := r.GetEffectiveSpec().GetRollbackPolicy().GetVerificationWindow(); w != nil {
		window = w.AsDuration()
	}
	if window <= 0 {
		return nil
	}
	began := rn.now()
	if steps := r.GetSteps(); len(steps) > 0 && steps[len(steps)-1].GetEndTime() != nil {
		began = steps[len(steps)-1].GetEndTime().AsTime()
	}
	end := began.Add(window)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_VERIFYING {
		r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_VERIFYING
		r.PhaseDeadline = timestamppb.New(end)
		r.Message = fmt.Sprintf("verifying until %s", end.UTC().Format(time.RFC3339))
		if err := rn.save(ctx, r); err != nil {
			return err
		}
	}
	for {
		vctx := tr.begin(ctx)
		err := sleepCtx(vctx, end.Sub(rn.now()))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		trip := tr.pending()
		if trip == nil {
			return err
		}
		if rn.action(r, trip) != deployerv1.FailureAction_FAILURE_ACTION_IGNORE {
			// Pause makes no sense once every step is done: roll back.
			return trip
		}
		tr.clear()
	}
}

// Tripped is why a background check or a failing step stopped the rollout.
type Tripped struct {
	Trigger deployerv1.RollbackTrigger
	Reason  string
	// Inconclusive: an analysis lacked data rather than failed.
	Inconclusive bool
	// Analysis holds a background analysis's measurements.
	Analysis *deployerv1.AnalysisStatus
}

func (t *Tripped) Error() string { return t.Reason }

// stepTrip classifies a step's own failure.
func stepTrip(err error) *Tripped {
	var failed *analysis.Failed
	switch {
	case errors.As(err, &failed):
		return &Tripped{Trigger: deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS, Reason: failed.Message, Inconclusive: failed.Inconclusive}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrProgressDeadline):
		return &Tripped{Trigger: deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_DEADLINE, Reason: err.Error()}
	}
	return &Tripped{Trigger: deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_HEALTH, Reason: err.Error()}
}

// action is what the rollback policy says to do about a trip.
func (rn *Runner) action(r *deployerv1.Rollout, t *Tripped) deployerv1.FailureAction {
	p := r.GetEffectiveSpec().GetRollbackPolicy()
	var a deployerv1.FailureAction
	switch t.Trigger {
	case deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_HEALTH:
		a = p.GetOnFailedHealth()
	case deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS:
		a = p.GetOnFailedAnalysis()
		if t.Inconclusive && a == deployerv1.FailureAction_FAILURE_ACTION_UNSPECIFIED {
			// Not enough data is not evidence of failure: ask a person.
			a = deployerv1.FailureAction_FAILURE_ACTION_PAUSE
		}
	case deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FIRING_ALERT:
		a = p.GetOnFiringAlert()
	case deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_DEADLINE:
		a = p.GetOnDeadline()
	}
	if a == deployerv1.FailureAction_FAILURE_ACTION_UNSPECIFIED {
		return deployerv1.FailureAction_FAILURE_ACTION_ROLLBACK
	}
	return a
}

// hold keeps the rollout paused after a failure until a person promotes or
// resumes (nil) or aborts (errAborted).
func (rn *Runner) hold(ctx context.Context, r *deployerv1.Rollout, cause deployerv1.PauseCause, why string, signals <-chan Signal) error {
	return rn.paused(ctx, r, cause, "paused by the rollback policy: "+why+"; promote to go on or abort to roll back", signals)
}

// paused saves r paused for cause with msg, then waits for a person:
// Resume or a promotion goes on (nil), Abort returns errAborted.
func (rn *Runner) paused(ctx context.Context, r *deployerv1.Rollout, cause deployerv1.PauseCause, msg string, signals <-chan Signal) error {
	r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED
	r.PauseCause = cause
	prevMsg := r.GetMessage()
	if msg != "" {
		r.Message = msg
	}
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
				if msg != "" {
					r.Message = ""
				} else {
					r.Message = prevMsg
				}
				return rn.save(ctx, r)
			}
		}
	}
}

// trips holds the first background trip and cancels the step in progress
// when one comes.
type trips struct {
	mu     sync.Mutex
	cur    *Tripped
	cancel context.CancelFunc
}

// begin returns the context of the next step, cancelled by a trip (at once
// if one is pending).
func (t *trips) begin(parent context.Context) context.Context {
	ctx, cancel := context.WithCancel(parent)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cancel != nil {
		t.cancel()
	}
	t.cancel = cancel
	if t.cur != nil {
		cancel()
	}
	return ctx
}

func (t *trips) trip(tr *Tripped) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil {
		t.cur = tr
	}
	if t.cancel != nil {
		t.cancel()
	}
}

func (t *trips) pending() *Tripped {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

func (t *trips) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur = nil
}

// AlertChecker tells whether an alert for an application's environment has
// fired since a time (the monitor's IsAlertFiring).
type AlertChecker interface {
	Firing(ctx context.Context, app, env string, since time.Time) (firing bool, why string, err error)
}

// watchAlerts polls the alert checker until ctx ends and trips once an
// alert for the application fired since the rollout started. A monitor that
// does not answer is logged and asked again: it is no reason to roll back.
func (rn *Runner) watchAlerts(ctx context.Context, app, env string, since time.Time, tr *trips) {
	interval := rn.AlertInterval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		firing, why, err := rn.Alerts.Firing(cctx, app, env, since)
		cancel()
		if err != nil {
			if ctx.Err() == nil && rn.Log != nil {
				rn.Log.Warn("cannot ask the monitor about firing alerts", "app", app, "env", env, "err", err)
			}
			continue
		}
		if firing {
			tr.trip(&Tripped{Trigger: deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FIRING_ALERT, Reason: why})
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var errAborted = errors.New("aborted")

// between handles signals that arrive while no pause step waits: Pause
// holds the rollout here until Resume (or a promotion); Abort ends it. A
// promotion is returned so that a pause step about to run takes it (a
// person who promotes a rollout just resumed by another replica, before
// it reached its pause again, means that pause); other steps ignore it.
func (rn *Runner) between(ctx context.Context, r *deployerv1.Rollout, signals <-chan Signal, held bool) (Signal, error) {
	if !held {
		select {
		case sig := <-signals:
			switch sig {
			case Abort:
				return 0, errAborted
			case Pause:
			case Promote, PromoteFull:
				return sig, nil
			default:
				return 0, nil // nothing is paused: resume has no effect here
			}
		default:
			return 0, nil
		}
	}
	return 0, rn.paused(ctx, r, deployerv1.PauseCause_PAUSE_CAUSE_USER, "", signals)
}

// step runs one step; full reports a PromoteFull received during it.
// A promotion received just before (early) ends a pause step at once.
func (rn *Runner) step(ctx context.Context, r *deployerv1.Rollout, step *deployerv1.RolloutStep, newRev, oldRev Revision, deadline time.Duration, signals <-chan Signal, early Signal) (full bool, err error) {
	switch step.GetKind() {
	case deployerv1.StepKind_STEP_KIND_PAUSE:
		switch early {
		case Promote:
			return false, nil
		case PromoteFull:
			return true, nil
		}
		return rn.pause(ctx, r, step, signals)
	case deployerv1.StepKind_STEP_KIND_ANALYSIS:
		return false, rn.analyse(ctx, r, step, newRev, oldRev)
	default:
		return false, rn.converge(ctx, r, newRev, oldRev, step.GetNewReplicas(), step.GetOldReplicas(), step.GetWeight(), deadline)
	}
}

func (rn *Runner) converge(ctx context.Context, r *deployerv1.Rollout, newRev, oldRev Revision, newN, oldN, weight int32, deadline time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	st := State{
		App: r.GetApplication(), Env: r.GetEnvironment(), New: newRev, Old: oldRev,
		NewReplicas: newN, OldReplicas: oldN, Weight: weight,
	}
	if r.GetKind() == deployerv1.RolloutKind_ROLLOUT_KIND_RESTART {
		st.Restart = r.GetId()
	}
	return rn.Exec.Converge(cctx, st)
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
	deadline := r.GetEffectiveSpec().GetProgressDeadline().AsDuration()
	if deadline <= 0 {
		deadline = 10 * time.Minute
	}
	if oldRev.Number == 0 {
		// First deploy: nothing to return to; remove what was started.
		cctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		if err := rn.Exec.Rollback(cctx, State{App: r.GetApplication(), Env: r.GetEnvironment(), Old: newRev}); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return rn.finish(ctx, r, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED, "failed: "+why)
	}
	failedAt := rn.now()
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	err := rn.Exec.Rollback(cctx, State{
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

// analyse runs an analysis step with the analysis its strategy defines
// there, keeping the measurements on the step so a restart continues them.
func (rn *Runner) analyse(ctx context.Context, r *deployerv1.Rollout, step *deployerv1.RolloutStep, newRev, oldRev Revision) error {
	a := analysisFor(r, step)
	if a == nil {
		return &analysis.Failed{Message: fmt.Sprintf("step %d: the strategy defines no analysis for it", step.GetIndex())}
	}
	if rn.Analysis == nil {
		return &analysis.Failed{Message: "no analysis measurer is configured"}
	}
	if step.Analysis == nil {
		step.Analysis = &deployerv1.AnalysisStatus{}
	}
	target := analysis.Target{App: r.GetApplication(), Env: r.GetEnvironment(), Revision: newRev.Number, Stable: oldRev.Number}
	return rn.Analysis.Run(ctx, a, target, step.Analysis, func() error { return rn.save(ctx, r) })
}

// analysisFor finds the analysis an analysis step runs: the k-th analysis
// step of a rollout runs the k-th analysis of its strategy, in plan order.
func analysisFor(r *deployerv1.Rollout, step *deployerv1.RolloutStep) *deployerv1.Analysis {
	var defs []*deployerv1.Analysis
	if a := r.GetStrategy().GetBlueGreen().GetPrePromotionAnalysis(); a != nil {
		defs = append(defs, a)
	}
	for _, cs := range r.GetStrategy().GetCanary().GetSteps() {
		if a := cs.GetAnalysis(); a != nil {
			defs = append(defs, a.GetAnalysis())
		}
	}
	k := 0
	for _, s := range r.GetSteps() {
		if s == step {
			break
		}
		if s.GetKind() == deployerv1.StepKind_STEP_KIND_ANALYSIS {
			k++
		}
	}
	if k < len(defs) {
		return defs[k]
	}
	return nil
}
