// Package engine executes pipeline runs: a DAG scheduler over the run's
// steps with parallel branches and a concurrency limit, `when` conditions,
// retries with backoff, timeouts, cancellation, masked line-by-line output
// and artifacts. Every change of the run goes to a Recorder as it happens,
// so a run interrupted by a runner restart can be resumed from its record:
// finished steps are never run again, an interrupted step is retried by
// its policy or failed with the reason.
//
// The same engine runs on the server and locally (`--local`): only the
// Recorder differs.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Recorder keeps what the engine reports. SaveRun gets a copy of the run
// after changes, in order, one call at a time per run; its error stops the
// run. The On* hooks publish events and may be no-ops.
type Recorder interface {
	SaveRun(ctx context.Context, run *pb.Run, changedStep string) error
	AppendLog(ctx context.Context, runID string, line *pb.LogLine) error
	OnRunStarted(ctx context.Context, run *pb.Run)
	OnStepStarted(ctx context.Context, run *pb.Run, step *pb.RunStep)
	OnStepFinished(ctx context.Context, run *pb.Run, step *pb.RunStep)
	OnRunFinished(ctx context.Context, run *pb.Run)
}

// SecretSource resolves secret values by name for a pipeline.
type SecretSource func(ctx context.Context, pipeline string, names []string) (map[string]string, error)

// Outcome is how a non-command step attempt ended.
type Outcome struct {
	Result   pb.AttemptResult
	ExitCode *int32
	Message  string
}

// StepInput is what a step handler gets for one attempt.
type StepInput struct {
	Run      *pb.Run // a copy; do not keep
	Instance *pipelinefile.Instance
	Secrets  map[string]string
	// Log writes masked output lines (stdout of the step).
	Log io.Writer
	// Update changes the step's type-specific detail and saves the run.
	Update func(func(*pb.RunStep))
}

// StepHandler runs deploy, gate and remote steps.
type StepHandler interface {
	RunStep(ctx context.Context, in StepInput) Outcome
}

// Engine runs runs.
type Engine struct {
	Executors map[string]executor.Executor
	// Handlers by step type (deploy, gate, gitlab, github).
	Handlers map[string]StepHandler
	Secrets  SecretSource
	// WorkspaceRoot holds one workspace directory per run.
	WorkspaceRoot string
	// Workspace, when set, chooses a run's workspace instead (local runs
	// use the current directory).
	Workspace func(runID string) string
	// ArtifactRoot holds kept artifacts, <run>/<step>/<path>.
	ArtifactRoot string
	// Runner names this instance in attempts.
	Runner string
	// KillOrphan stops what an interrupted attempt left running (a process
	// group or container) before the step is retried or failed.
	KillOrphan func(runID string, step *pb.RunStep)
	Log        *slog.Logger
	// sem bounds steps running at once across runs.
	sem chan struct{}
}

// New returns an engine that runs at most maxParallel steps at once.
func New(e Engine, maxParallel int) *Engine {
	if maxParallel <= 0 {
		maxParallel = 16
	}
	e.sem = make(chan struct{}, maxParallel)
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
	return &e
}

// Execution is one run being executed.
type Execution struct {
	mu        sync.Mutex
	run       *pb.Run
	cancelled bool
	cancelMsg string
	cancel    context.CancelFunc
	done      chan struct{}
	err       error
}

// Cancel asks the run to stop: running steps are stopped, pending ones
// become cancelled, the run ends cancelled.
func (x *Execution) Cancel(reason string) {
	x.mu.Lock()
	if !x.cancelled {
		x.cancelled = true
		x.cancelMsg = reason
	}
	x.mu.Unlock()
	x.cancel()
}

// Done is closed when the run reached a final state or was abandoned.
func (x *Execution) Done() <-chan struct{} { return x.done }

// Err is the reason the run was abandoned (nil when it finished).
func (x *Execution) Err() error { <-x.done; return x.err }

// Start executes run (fresh or resumed from its record) in the background.
// When ctx ends the run is abandoned as is: its processes are stopped, its
// record stays for the next runner to resume.
func (e *Engine) Start(ctx context.Context, run *pb.Run, p *pipelinefile.Pipeline, rec Recorder) *Execution {
	rctx, cancel := context.WithCancel(ctx)
	x := &Execution{run: proto.CloneOf(run), cancel: cancel, done: make(chan struct{})}
	r := &runner{e: e, x: x, p: p, rec: rec, parent: ctx}
	go func() {
		defer close(x.done)
		defer cancel()
		x.err = r.execute(rctx)
		r.saves.Wait()
	}()
	return x
}

func (e *Engine) workspace(runID string) string {
	if e.Workspace != nil {
		return e.Workspace(runID)
	}
	return filepath.Join(e.WorkspaceRoot, runID)
}

// ErrAbandoned: the runner stopped before the run finished.
var ErrAbandoned = errors.New("run abandoned: runner stopping")

type runner struct {
	e      *Engine
	x      *Execution
	p      *pipelinefile.Pipeline
	rec    Recorder
	parent context.Context //nolint:containedctx // tells shutdown (abandon) from cancel
	insts  map[string]*pipelinefile.Instance
	// depSkipped marks steps skipped because a step they need failed.
	depSkipped map[string]bool
	conds      map[string]*pipelinefile.Condition
	// version counts changes of the run (under x.mu); saved is the last
	// version saved (under saveMu).
	version uint64
	saveMu  sync.Mutex
	saved   uint64
	saves   sync.WaitGroup
}

func now() *timestamppb.Timestamp { return timestamppb.Now() }

// update changes the run under the lock and saves it.
//
// Saves are group-committed: while one save is in flight, later changes
// wait for the next one, which carries them all; an update returns once a
// save that includes its change succeeded.
func (r *runner) update(ctx context.Context, changed string, f func(run *pb.Run)) error {
	r.x.mu.Lock()
	f(r.x.run)
	r.version++
	mine := r.version
	r.x.mu.Unlock()

	return r.save(ctx, mine, changed)
}

// updateAsync changes the run and saves it in the background: for changes
// whose loss in a crash costs nothing (the step start, its process group);
// the next synchronous update waits for it anyway.
func (r *runner) updateAsync(ctx context.Context, changed string, f func(run *pb.Run)) {
	r.x.mu.Lock()
	f(r.x.run)
	r.version++
	mine := r.version
	r.x.mu.Unlock()
	r.saves.Add(1)
	go func() {
		defer r.saves.Done()
		if err := r.save(ctx, mine, changed); err != nil {
			r.e.Log.Error("save run", "run", r.x.run.GetId(), "err", err)
		}
	}()
}

// save writes the run unless a save since version mine already did.
func (r *runner) save(ctx context.Context, mine uint64, changed string) error {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	if r.saved >= mine {
		return nil
	}
	r.x.mu.Lock()
	snap := proto.CloneOf(r.x.run)
	ver := r.version
	r.x.mu.Unlock()
	if err := r.rec.SaveRun(context.WithoutCancel(ctx), snap, changed); err != nil {
		return err
	}
	r.saved = ver
	return nil
}

// header is the run without its steps, for step events.
func (r *runner) header() *pb.Run {
	r.x.mu.Lock()
	defer r.x.mu.Unlock()
	steps := r.x.run.Steps
	r.x.run.Steps = nil
	h := proto.CloneOf(r.x.run)
	r.x.run.Steps = steps
	return h
}

func (r *runner) snapshot() *pb.Run {
	r.x.mu.Lock()
	defer r.x.mu.Unlock()
	return proto.CloneOf(r.x.run)
}

func stepByID(run *pb.Run, id string) *pb.RunStep {
	for _, s := range run.GetSteps() {
		if s.GetId() == id {
			return s
		}
	}
	return nil
}

func final(s pb.StepState) bool {
	return s == pb.StepState_STEP_STATE_SUCCESS || s == pb.StepState_STEP_STATE_FAILED ||
		s == pb.StepState_STEP_STATE_CANCELLED || s == pb.StepState_STEP_STATE_SKIPPED
}

// FinalRun reports whether a run state is final.
func FinalRun(s pb.RunState) bool {
	return s == pb.RunState_RUN_STATE_SUCCESS || s == pb.RunState_RUN_STATE_FAILED ||
		s == pb.RunState_RUN_STATE_CANCELLED || s == pb.RunState_RUN_STATE_SKIPPED
}

type stepDone struct {
	id string
}

func (r *runner) execute(ctx context.Context) error {
	r.insts = map[string]*pipelinefile.Instance{}
	for _, in := range pipelinefile.Expand(r.p) {
		r.insts[in.ID] = in
	}
	r.depSkipped = map[string]bool{}
	r.conds = map[string]*pipelinefile.Condition{}
	resumed := false
	// Bring the record to a consistent start: steps an earlier runner left
	// running are interrupted attempts.
	var interrupted []string
	err := r.update(ctx, "", func(run *pb.Run) {
		if run.GetState() == pb.RunState_RUN_STATE_RUNNING {
			resumed = true
		}
		for _, s := range run.GetSteps() {
			if r.insts[s.GetId()] == nil {
				continue
			}
			if s.GetState() == pb.StepState_STEP_STATE_SKIPPED && strings.HasPrefix(s.GetMessage(), "skipped: needs") {
				r.depSkipped[s.GetId()] = true
			}
			if s.GetState() != pb.StepState_STEP_STATE_RUNNING {
				continue
			}
			interrupted = append(interrupted, s.GetId())
			if n := len(s.Attempts); n > 0 && s.Attempts[n-1].GetResult() == pb.AttemptResult_ATTEMPT_RESULT_UNSPECIFIED {
				a := s.Attempts[n-1]
				a.Result = pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR
				a.Message = "runner restarted while the step was running"
				a.EndTime = now()
			}
		}
		if run.StartTime == nil && run.GetState() == pb.RunState_RUN_STATE_QUEUED {
			run.State = pb.RunState_RUN_STATE_RUNNING
			run.StartTime = now()
			run.QueuePosition = 0
		}
	})
	if err != nil {
		return fmt.Errorf("start run: %w", err)
	}
	if !resumed {
		r.rec.OnRunStarted(ctx, r.snapshot())
	}
	for _, id := range interrupted {
		if r.e.KillOrphan != nil {
			r.e.KillOrphan(r.x.run.GetId(), r.step(id))
		}
		r.system(ctx, id, 0, "runner restarted while the step was running")
	}
	if r.p.Timeout > 0 {
		start := r.snapshot().GetStartTime().AsTime()
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, start.Add(r.p.Timeout))
		defer cancel()
	}

	done := make(chan stepDone)
	running := map[string]bool{}
	// Interrupted steps continue with their retry policy.
	for _, id := range interrupted {
		running[id] = true
		go func() {
			r.runStep(ctx, id, true)
			done <- stepDone{id: id}
		}()
	}
	for {
		if r.parent.Err() != nil {
			for len(running) > 0 {
				d := <-done
				delete(running, d.id)
			}
			return ErrAbandoned
		}
		stopping := ctx.Err() != nil
		// Decide every pending step whose needs are final.
		type verdict struct {
			id     string
			state  pb.StepState
			reason string
		}
		var start []string
		var verdicts []verdict
		r.x.mu.Lock()
		for _, s := range r.x.run.GetSteps() {
			if s.GetState() != pb.StepState_STEP_STATE_PENDING || running[s.GetId()] {
				continue
			}
			if stopping {
				verdicts = append(verdicts, verdict{s.GetId(), pb.StepState_STEP_STATE_CANCELLED, ""})
				continue
			}
			ready, skip, reason := r.decide(r.x.run, s)
			switch {
			case skip:
				verdicts = append(verdicts, verdict{s.GetId(), pb.StepState_STEP_STATE_SKIPPED, reason})
			case ready:
				start = append(start, s.GetId())
			}
		}
		r.x.mu.Unlock()
		decided := len(verdicts)
		for _, v := range verdicts {
			if v.state == pb.StepState_STEP_STATE_CANCELLED {
				v.reason = r.stopReason(ctx)
			}
			r.finishPending(ctx, v.id, v.state, v.reason)
		}
		for _, id := range start {
			running[id] = true
			go func() {
				r.runStep(ctx, id, false)
				done <- stepDone{id: id}
			}()
		}
		if len(start) > 0 {
			continue
		}
		if len(running) == 0 {
			if r.anyPending() && !stopping {
				if decided > 0 {
					// Skips above may have unblocked others; look again.
					continue
				}
				for _, s := range r.snapshot().GetSteps() {
					if s.GetState() == pb.StepState_STEP_STATE_PENDING {
						r.finishPending(ctx, s.GetId(), pb.StepState_STEP_STATE_SKIPPED, "skipped: needs a step that is not part of this run")
					}
				}
			}
			break
		}
		select {
		case d := <-done:
			delete(running, d.id)
		case <-ctx.Done():
			// Fall through to cancel pending steps; running ones stop on ctx.
			d := <-done
			delete(running, d.id)
		}
	}
	if r.parent.Err() != nil {
		return ErrAbandoned
	}
	r.finishRun(ctx)
	return nil
}

func (r *runner) anyPending() bool {
	for _, s := range r.snapshot().GetSteps() {
		if s.GetState() == pb.StepState_STEP_STATE_PENDING {
			return true
		}
	}
	return false
}

func (r *runner) stopReason(ctx context.Context) string {
	r.x.mu.Lock()
	cancelled, msg := r.x.cancelled, r.x.cancelMsg
	r.x.mu.Unlock()
	if cancelled {
		if msg == "" {
			return "run cancelled"
		}
		return "run cancelled: " + msg
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("pipeline timeout %s exceeded", r.p.Timeout)
	}
	return "run stopped"
}

// decide tells whether a pending step can start, must be skipped, or waits.
func (r *runner) decide(run *pb.Run, s *pb.RunStep) (ready, skip bool, reason string) {
	in := r.insts[s.GetId()]
	var failedNeed string
	for _, n := range s.GetNeeds() {
		ns := stepByID(run, n)
		if ns == nil {
			continue
		}
		if !final(ns.GetState()) {
			return false, false, ""
		}
		ok := ns.GetState() == pb.StepState_STEP_STATE_SUCCESS ||
			(ns.GetState() == pb.StepState_STEP_STATE_SKIPPED && !r.depSkipped[n])
		if !ok && failedNeed == "" {
			failedNeed = n
		}
	}
	if failedNeed != "" && !in.Step.WhenReadsStatus {
		r.depSkipped[s.GetId()] = true
		return false, true, fmt.Sprintf("skipped: needs %s, which did not succeed", failedNeed)
	}
	if in.Step.When != "" {
		cond, err := r.condition(in.Step.When)
		if err != nil {
			return false, true, fmt.Sprintf("skipped: condition `%s`: %v", in.Step.When, err)
		}
		ok, err := cond.Eval(r.facts(run, in))
		if err != nil {
			return false, true, fmt.Sprintf("skipped: condition `%s`: %v", in.Step.When, err)
		}
		if !ok {
			return false, true, fmt.Sprintf("skipped: when `%s` was false", in.Step.When)
		}
	}
	return true, false, ""
}

// condition compiles a `when` expression once per run.
func (r *runner) condition(expr string) (*pipelinefile.Condition, error) {
	if c, ok := r.conds[expr]; ok {
		return c, nil
	}
	c, _, err := pipelinefile.CompileCondition(expr)
	if err != nil {
		return nil, err
	}
	r.conds[expr] = c
	return c, nil
}

func (r *runner) facts(run *pb.Run, in *pipelinefile.Instance) pipelinefile.Facts {
	t := run.GetTrigger()
	status := map[string]string{}
	for _, s := range run.GetSteps() {
		if !final(s.GetState()) {
			continue
		}
		st := strings.ToLower(strings.TrimPrefix(s.GetState().String(), "STEP_STATE_"))
		prev, seen := status[s.GetName()]
		switch {
		case !seen, prev == "success", prev == "skipped" && st != "success":
			status[s.GetName()] = st
		}
	}
	return pipelinefile.Facts{
		Branch: t.GetBranch(), Tag: t.GetTag(), Ref: t.GetRef(), Event: t.GetEvent(), Commit: t.GetCommit(),
		Repository: t.GetRepository(), Pipeline: run.GetPipeline(),
		Variables: run.GetVariables(), Status: status, Matrix: in.Matrix,
	}
}

func (r *runner) finishPending(ctx context.Context, id string, state pb.StepState, reason string) {
	var snap *pb.RunStep
	_ = r.update(ctx, id, func(run *pb.Run) {
		s := stepByID(run, id)
		s.State = state
		s.Message = reason
		s.EndTime = now()
		snap = proto.CloneOf(s)
	})
	r.rec.OnStepFinished(ctx, r.header(), snap)
}

func (r *runner) finishRun(ctx context.Context) {
	reason := r.stopReason(ctx)
	r.x.mu.Lock()
	cancelled := r.x.cancelled
	r.x.mu.Unlock()
	// The outcome is known before it is saved: the last log line goes out
	// first, so whoever sees the run finished also finds that line.
	r.x.mu.Lock()
	state, msg := runOutcome(r.x.run, cancelled, ctx.Err() != nil, reason)
	r.x.mu.Unlock()
	r.system(ctx, "", 0, "run finished: "+strings.ToLower(strings.TrimPrefix(state.String(), "RUN_STATE_"))+": "+msg)
	var out *pb.Run
	_ = r.update(ctx, "", func(run *pb.Run) {
		run.State = state
		run.Message = msg
		run.EndTime = now()
		run.CancelRequested = run.GetCancelRequested() || cancelled
		out = proto.CloneOf(run)
	})
	r.rec.OnRunFinished(ctx, out)
}

// runOutcome is how a run whose steps are all done ended.
func runOutcome(run *pb.Run, cancelled, stopped bool, reason string) (pb.RunState, string) {
	state := pb.RunState_RUN_STATE_SUCCESS
	msg := "every step succeeded or was skipped"
	for _, s := range run.GetSteps() {
		if s.GetState() == pb.StepState_STEP_STATE_FAILED && state == pb.RunState_RUN_STATE_SUCCESS {
			state = pb.RunState_RUN_STATE_FAILED
			msg = fmt.Sprintf("step %s failed: %s", s.GetId(), s.GetMessage())
		}
	}
	switch {
	case cancelled:
		return pb.RunState_RUN_STATE_CANCELLED, reason
	case stopped && state == pb.RunState_RUN_STATE_SUCCESS:
		return pb.RunState_RUN_STATE_FAILED, reason
	}
	return state, msg
}

// system writes a runner line to the run's log.
func (r *runner) system(ctx context.Context, step string, attempt uint32, text string) {
	_ = r.rec.AppendLog(context.WithoutCancel(ctx), r.x.run.GetId(), &pb.LogLine{
		Step: step, Attempt: attempt, Stream: pb.LogStream_LOG_STREAM_SYSTEM, Time: now(), Text: text,
	})
}

// Steps builds the run's steps (all pending) from a parsed pipeline.
func Steps(p *pipelinefile.Pipeline) []*pb.RunStep {
	var out []*pb.RunStep
	for _, in := range pipelinefile.Expand(p) {
		out = append(out, &pb.RunStep{
			Id: in.ID, Name: in.Step.Name, Type: StepType(in.Step.Type), Stage: in.Step.Stage,
			Needs: slices.Clone(in.Needs), Matrix: maps.Clone(in.Matrix), State: pb.StepState_STEP_STATE_PENDING,
		})
	}
	return out
}

// StepType maps a file step type to the API enum.
func StepType(t string) pb.StepType {
	switch t {
	case pipelinefile.TypeDeploy:
		return pb.StepType_STEP_TYPE_DEPLOY
	case pipelinefile.TypeGate:
		return pb.StepType_STEP_TYPE_GATE
	case pipelinefile.TypeGitLab:
		return pb.StepType_STEP_TYPE_REMOTE_GITLAB
	case pipelinefile.TypeGitHub:
		return pb.StepType_STEP_TYPE_REMOTE_GITHUB
	}
	return pb.StepType_STEP_TYPE_COMMAND
}

func sortedKeys(m map[string]string) []string {
	k := slices.Collect(maps.Keys(m))
	sort.Strings(k)
	return k
}
