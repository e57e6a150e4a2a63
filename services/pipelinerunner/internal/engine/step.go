package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/lines"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/mask"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// resultName is how an attempt result reads in messages and retry.when.
func resultName(r pb.AttemptResult) string {
	switch r {
	case pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED:
		return pipelinefile.RetryOnCommandFailed
	case pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR:
		return pipelinefile.RetryOnInfraError
	case pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT:
		return pipelinefile.RetryOnTimedOut
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "ATTEMPT_RESULT_"))
}

// ShouldRetry applies a retry policy to an attempt's outcome: by default
// infrastructure errors and timeouts are retried, command failures only
// when named in when or with an exit code in exit_codes.
func ShouldRetry(p pipelinefile.Retry, o Outcome) bool {
	switch o.Result {
	case pb.AttemptResult_ATTEMPT_RESULT_SUCCESS, pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, pb.AttemptResult_ATTEMPT_RESULT_UNSPECIFIED:
		return false
	}
	if o.Result == pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED && o.ExitCode != nil && slices.Contains(p.ExitCodes, int(*o.ExitCode)) {
		return true
	}
	if len(p.When) == 0 {
		return o.Result == pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR || o.Result == pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT
	}
	return slices.Contains(p.When, resultName(o.Result))
}

// step returns a copy of one step.
func (r *runner) step(id string) *pb.RunStep {
	r.x.mu.Lock()
	defer r.x.mu.Unlock()
	return proto.CloneOf(stepByID(r.x.run, id))
}

func (r *runner) cancelled() bool {
	r.x.mu.Lock()
	defer r.x.mu.Unlock()
	return r.x.cancelled
}

func (r *runner) runStep(ctx context.Context, id string, resumed bool) {
	in := r.insts[id]
	policy := in.Step.Retry
	select {
	case r.e.sem <- struct{}{}:
		defer func() { <-r.e.sem }()
	case <-ctx.Done():
		if r.parent.Err() != nil {
			return
		}
		r.finishStep(ctx, id, pb.StepState_STEP_STATE_CANCELLED, r.stopReason(ctx))
		return
	}
	for {
		step := r.step(id)
		done := len(step.GetAttempts())
		if resumed {
			resumed = false
			last := Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR}
			if done > 0 {
				a := step.Attempts[done-1]
				last = Outcome{Result: a.GetResult(), ExitCode: a.ExitCode, Message: a.GetMessage()}
			}
			if done >= policy.MaxAttempts || !ShouldRetry(policy, last) {
				r.finishStep(ctx, id, pb.StepState_STEP_STATE_FAILED, failMessage(policy, last, done)+" (not retried by the step's retry policy)")
				return
			}
			r.system(ctx, id, uint32(done), fmt.Sprintf("retrying after the restart (attempt %d of %d)", done+1, policy.MaxAttempts))
		}
		n := uint32(done + 1)
		if ctx.Err() != nil {
			if r.parent.Err() != nil {
				return
			}
			r.finishStep(ctx, id, pb.StepState_STEP_STATE_CANCELLED, r.stopReason(ctx))
			return
		}
		var started *pb.RunStep
		r.updateAsync(ctx, id, func(run *pb.Run) {
			s := stepByID(run, id)
			s.State = pb.StepState_STEP_STATE_RUNNING
			s.Message = ""
			if s.StartTime == nil {
				s.StartTime = now()
			}
			s.NextAttemptTime = nil
			s.Attempts = append(s.Attempts, &pb.Attempt{Number: n, Runner: r.e.Runner, StartTime: now()})
			if in.Step.Type == pipelinefile.TypeCommand {
				s.Detail = &pb.RunStep_Command{Command: &pb.CommandStepStatus{Executor: executorEnum(in.Step.Executor), Image: in.Step.Image}}
			}
			started = proto.CloneOf(s)
		})
		if n == 1 {
			r.rec.OnStepStarted(ctx, r.header(), started)
		}
		out := r.attempt(ctx, in, n)
		if r.parent.Err() != nil {
			return // abandoned: the record stays running for the next runner
		}
		endAttempt := func(s *pb.RunStep) {
			a := s.Attempts[len(s.Attempts)-1]
			a.Result, a.ExitCode, a.Message, a.EndTime = out.Result, out.ExitCode, out.Message, now()
		}
		retry := int(n) < policy.MaxAttempts && ShouldRetry(policy, out) && ctx.Err() == nil
		switch {
		case out.Result == pb.AttemptResult_ATTEMPT_RESULT_SUCCESS:
			r.finishStep(ctx, id, pb.StepState_STEP_STATE_SUCCESS, "", endAttempt)
			return
		case out.Result == pb.AttemptResult_ATTEMPT_RESULT_CANCELLED:
			r.finishStep(ctx, id, pb.StepState_STEP_STATE_CANCELLED, r.stopReason(ctx), endAttempt)
			return
		case !retry:
			r.finishStep(ctx, id, pb.StepState_STEP_STATE_FAILED, failMessage(policy, out, int(n)), endAttempt)
			return
		}
		wait := policy.Backoff(int(n))
		next := time.Now().Add(wait)
		_ = r.update(ctx, id, func(run *pb.Run) {
			s := stepByID(run, id)
			endAttempt(s)
			s.NextAttemptTime = timestamppb.New(next)
		})
		r.system(ctx, id, n, fmt.Sprintf("retrying in %s (%s; attempt %d of %d)", wait, out.Message, n+1, policy.MaxAttempts))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

func failMessage(p pipelinefile.Retry, o Outcome, attempts int) string {
	msg := o.Message
	if msg == "" {
		msg = resultName(o.Result)
	}
	if attempts > 1 {
		msg += fmt.Sprintf(" after %d attempts", attempts)
	}
	return msg
}

func executorEnum(e string) pb.Executor {
	if e == pipelinefile.ExecutorDocker {
		return pb.Executor_EXECUTOR_DOCKER
	}
	return pb.Executor_EXECUTOR_SHELL
}

func (r *runner) finishStep(ctx context.Context, id string, state pb.StepState, msg string, also ...func(*pb.RunStep)) {
	var snap *pb.RunStep
	_ = r.update(ctx, id, func(run *pb.Run) {
		s := stepByID(run, id)
		for _, f := range also {
			f(s)
		}
		s.State = state
		s.Message = msg
		s.EndTime = now()
		s.NextAttemptTime = nil
		snap = proto.CloneOf(s)
	})
	r.rec.OnStepFinished(ctx, r.header(), snap)
}

// logWriter turns one output stream of an attempt into masked log lines.
type logWriter struct {
	masked *mask.Stream
	split  *lines.Splitter
}

func (r *runner) newLogWriter(ctx context.Context, m *mask.Masker, id string, n uint32, stream pb.LogStream) *logWriter {
	split := lines.New(func(text string, partial bool) {
		err := r.rec.AppendLog(context.WithoutCancel(ctx), r.x.run.GetId(), &pb.LogLine{
			Step: id, Attempt: n, Stream: stream, Time: now(), Text: text, Partial: partial,
		})
		if err != nil {
			r.e.Log.Warn("append log line", "run", r.x.run.GetId(), "step", id, "err", err)
		}
	})
	return &logWriter{split: split, masked: m.Stream(func(b []byte) { _, _ = split.Write(b) })}
}

func (w *logWriter) Write(p []byte) (int, error) { return w.masked.Write(p) }

func (w *logWriter) Close() error {
	_ = w.masked.Close()
	return w.split.Close()
}

// attempt runs one attempt of a step and says how it ended.
func (r *runner) attempt(ctx context.Context, in *pipelinefile.Instance, n uint32) Outcome {
	run := r.header()
	st := in.Step
	names := r.p.SecretNames()
	var secrets map[string]string
	if len(names) > 0 {
		if r.e.Secrets == nil {
			return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: "no secret store"}
		}
		var err error
		secrets, err = r.e.Secrets(ctx, run.GetPipeline(), names)
		if err != nil {
			return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED, Message: err.Error()}
		}
	}
	vals := make([]string, 0, len(secrets))
	for _, v := range secrets {
		vals = append(vals, v)
	}
	m := mask.New(vals...)
	actx := ctx
	if st.Timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, st.Timeout)
		defer cancel()
	}
	stdout := r.newLogWriter(ctx, m, in.ID, n, pb.LogStream_LOG_STREAM_STDOUT)
	stderr := r.newLogWriter(ctx, m, in.ID, n, pb.LogStream_LOG_STREAM_STDERR)
	var out Outcome
	switch st.Type {
	case pipelinefile.TypeCommand:
		out = r.command(actx, run, in, secrets, stdout, stderr)
	default:
		h := r.e.Handlers[st.Type]
		if h == nil {
			out = Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: fmt.Sprintf("this runner has no %s step support configured", st.Type)}
			break
		}
		out = h.RunStep(actx, StepInput{
			Run: r.snapshot(), Instance: in, Secrets: secrets, Log: stdout,
			Update: func(f func(*pb.RunStep)) {
				_ = r.update(ctx, in.ID, func(run *pb.Run) { f(stepByID(run, in.ID)) })
			},
		})
	}
	if actx.Err() != nil && out.Result != pb.AttemptResult_ATTEMPT_RESULT_SUCCESS {
		out = r.stopped(ctx, actx, st, out)
	}
	_ = stdout.Close()
	_ = stderr.Close()
	out.Message = m.String(out.Message)
	if r.parent.Err() == nil && len(st.Artifacts) > 0 && out.Result != pb.AttemptResult_ATTEMPT_RESULT_CANCELLED {
		arts, err := r.keepArtifacts(run.GetId(), in)
		if err != nil {
			r.system(ctx, in.ID, n, "artifacts: "+m.String(err.Error()))
		}
		_ = r.update(ctx, in.ID, func(run *pb.Run) { stepByID(run, in.ID).Artifacts = arts })
	}
	return out
}

// stopped classifies an attempt whose context ended.
func (r *runner) stopped(ctx, actx context.Context, st *pipelinefile.Step, out Outcome) Outcome {
	switch {
	case r.cancelled():
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, ExitCode: out.ExitCode, Message: "cancelled"}
	case ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded):
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT, ExitCode: out.ExitCode, Message: fmt.Sprintf("timed out after %s", st.Timeout)}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT, ExitCode: out.ExitCode, Message: fmt.Sprintf("pipeline timeout %s exceeded", r.p.Timeout)}
	}
	return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, ExitCode: out.ExitCode, Message: "stopped"}
}

func (r *runner) command(ctx context.Context, run *pb.Run, in *pipelinefile.Instance, secrets map[string]string, stdout, stderr io.Writer) Outcome {
	st := in.Step
	ex := r.e.Executors[st.Executor]
	if ex == nil {
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: fmt.Sprintf("executor %s is not available on this runner", st.Executor)}
	}
	ws := r.e.workspace(run.GetId())
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: "workspace: " + err.Error()}
	}
	env, err := r.env(run, in, secrets)
	if err != nil {
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED, Message: err.Error()}
	}
	spec := executor.Spec{
		Command: st.Command, Script: st.Script, Env: env, Workspace: ws, Dir: st.WorkingDir, Image: st.Image,
		Labels: map[string]string{"opsuite.pipelinerunner.run": run.GetId(), "opsuite.pipelinerunner.step": in.ID},
		Stdout: stdout, Stderr: stderr,
		Started: func(id string) {
			r.updateAsync(ctx, in.ID, func(run *pb.Run) {
				if c := stepByID(run, in.ID).GetCommand(); c != nil {
					if st.Executor == pipelinefile.ExecutorDocker {
						c.ContainerId = id
					} else {
						c.ProcessGroup = id
					}
				}
			})
		},
	}
	for _, s := range st.Services {
		svc := executor.Service{Name: s.Name, Image: s.Image, Command: s.Command}
		for _, k := range sortedKeys(s.Env) {
			svc.Env = append(svc.Env, k+"="+s.Env[k])
		}
		spec.Services = append(spec.Services, svc)
	}
	res, err := ex.Run(ctx, spec)
	code := int32(res.ExitCode)
	switch {
	case ctx.Err() != nil:
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED}
	case errors.Is(err, executor.ErrInfra):
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: err.Error()}
	case err != nil:
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR, Message: err.Error()}
	case res.ExitCode != 0:
		return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED, ExitCode: &code, Message: fmt.Sprintf("exit code %d", res.ExitCode)}
	}
	return Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_SUCCESS, ExitCode: &code}
}

// env builds a command step's environment: run variables, the file's env,
// the step's env, matrix values, secrets, then the runner's OPSUITE_* facts.
func (r *runner) env(run *pb.Run, in *pipelinefile.Instance, secrets map[string]string) ([]string, error) {
	m := map[string]string{}
	for k, v := range run.GetVariables() {
		m[k] = v
	}
	for k, v := range r.p.Env {
		m[k] = v
	}
	for k, v := range in.Step.Env {
		m[k] = v
	}
	for k, v := range in.Matrix {
		m[strings.ToUpper(k)] = v
	}
	for _, ref := range in.Step.Secrets {
		v, ok := secrets[ref.Name]
		if !ok {
			return nil, fmt.Errorf("secret %q does not exist or is not allowed for pipeline %s", ref.Name, run.GetPipeline())
		}
		m[ref.Env] = v
	}
	t := run.GetTrigger()
	for k, v := range map[string]string{
		"OPSUITE_RUN_ID": run.GetId(), "OPSUITE_PIPELINE": run.GetPipeline(), "OPSUITE_STEP": in.ID,
		"OPSUITE_RUN_NUMBER": fmt.Sprint(run.GetNumber()), "OPSUITE_REF": t.GetRef(), "OPSUITE_BRANCH": t.GetBranch(),
		"OPSUITE_TAG": t.GetTag(), "OPSUITE_COMMIT": t.GetCommit(), "OPSUITE_EVENT": t.GetEvent(),
	} {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, k+"="+m[k])
	}
	return out, nil
}
