package pipelinerunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// started returns the store once Run opened it.
func (s *Service) started() (*store.Store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store == nil {
		return nil, status.Error(codes.Unavailable, "pipeline-runner is starting")
	}
	return s.store, nil
}

// definition parses the source a run executes.
func (s *Service) definition(ctx context.Context, digest string) (*pipelinefile.Pipeline, error) {
	src, err := s.store.Source(ctx, digest)
	if err != nil {
		return nil, err
	}
	p, err := pipelinefile.Parse([]byte(src))
	if err != nil {
		return nil, fmt.Errorf("pipeline source %s no longer parses: %w", digest, err)
	}
	return p, nil
}

// startExecution hands a stored run to the engine; l is the run's lease,
// held until the run ends here (released) or is lost (the run is then
// abandoned for another runner to resume).
func (s *Service) startExecution(ctx context.Context, run *pb.Run, rev uint64, l *lease.Lease) error {
	p, err := s.definition(ctx, run.GetSourceDigest())
	if err != nil {
		return err
	}
	rec, err := s.newRecorder(ctx, run.GetId(), rev)
	if err != nil {
		return err
	}
	rec.ship = newShipper(s, run)
	rec.lease = l
	ectx, cancel := context.WithCancel(s.runCtx)
	stopOnLoss := context.AfterFunc(l.Context(), cancel)
	s.mu.Lock()
	if _, dup := s.active[run.GetId()]; dup {
		s.mu.Unlock()
		stopOnLoss()
		cancel()
		return nil
	}
	x := s.engine.Start(ectx, run, p, rec)
	s.active[run.GetId()] = &execution{x: x, rec: rec}
	s.mu.Unlock()
	rec.setCancel(func() { x.Cancel("") })
	if run.GetCancelRequested() {
		x.Cancel("")
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-x.Done()
		s.mu.Lock()
		delete(s.active, run.GetId())
		s.mu.Unlock()
		stopOnLoss()
		cancel()
		if errors.Is(l.Err(), lease.ErrLost) {
			s.log.Warn("run abandoned: its lease was lost; another runner resumes it", "run", run.GetId())
		}
		s.releaseLease(l)
		if x.Err() == nil {
			s.afterRun(context.WithoutCancel(ctx), run)
		}
	}()
	return nil
}

// afterRun updates the pipeline's status and starts queued runs.
func (s *Service) afterRun(ctx context.Context, run *pb.Run) {
	if s.runCtx.Err() != nil {
		return
	}
	s.schedule(s.runCtx, run.GetPipeline())
}

// failRun ends a run that cannot execute.
func (s *Service) failRun(ctx context.Context, id, msg string) {
	v, err := s.store.Run(ctx, id)
	if err != nil {
		return
	}
	run := v.Value
	for _, st := range run.GetSteps() {
		if st.GetState() == pb.StepState_STEP_STATE_RUNNING || st.GetState() == pb.StepState_STEP_STATE_PENDING {
			st.State = pb.StepState_STEP_STATE_CANCELLED
			st.Message = msg
			st.EndTime = timestamppb.Now()
			for _, a := range st.GetAttempts() {
				if a.GetResult() == pb.AttemptResult_ATTEMPT_RESULT_UNSPECIFIED {
					a.Result = pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR
					a.Message = msg
					a.EndTime = timestamppb.Now()
				}
			}
		}
	}
	run.State = pb.RunState_RUN_STATE_FAILED
	run.Message = msg
	run.EndTime = timestamppb.Now()
	if _, err := s.store.UpdateRun(ctx, run, v.Revision); err != nil {
		s.log.Error("fail run", "run", id, "err", err)
		return
	}
	s.endLog(ctx, run)
	s.publish(ctx, EventRunFinished, id+".finished", id, &eventsv1.PipelineRunFinished{Run: run})
}

// endLog writes the last line of a run that ended without the engine, so
// followers of its output stop.
func (s *Service) endLog(ctx context.Context, run *pb.Run) {
	seq, err := s.store.LastLogSeq(ctx, run.GetId())
	if err != nil {
		return
	}
	line := &pb.LogLine{
		Seq: seq + 1, Stream: pb.LogStream_LOG_STREAM_SYSTEM, Time: timestamppb.Now(),
		Text: runEndPrefix + stateLabel(run.GetState().String()) + ": " + run.GetMessage(),
	}
	if err := s.store.AppendLog(ctx, run.GetId(), line, true); err != nil {
		s.log.Warn("end run output", "run", run.GetId(), "err", err)
	}
}

// schedule starts queued runs of pipeline while its concurrency limit
// allows. One runner at a time decides for a pipeline (a lease), and a
// queued run starts where its run lease is taken.
func (s *Service) schedule(ctx context.Context, pipeline string) {
	s.sched.Lock()
	defer s.sched.Unlock()
	if ctx.Err() != nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, s.leaseTimeout())
	sl, err := s.leases.Acquire(lctx, scheduleLeaseKey(pipeline), s.cfg.LeaseTTL)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("schedule runs: another runner holds the pipeline", "pipeline", pipeline, "err", err)
		}
		return
	}
	defer s.releaseLease(sl)
	limit := 0
	if pv, err := s.store.Pipeline(ctx, pipeline); err == nil {
		limit = int(pv.Value.GetSpec().GetConcurrency().GetLimit())
	}
	runs, err := s.store.Runs(ctx, pipeline)
	if err != nil {
		s.log.Error("schedule runs", "pipeline", pipeline, "err", err)
		return
	}
	active := 0
	var queued []store.Versioned[*pb.Run]
	for _, v := range runs {
		switch v.Value.GetState() {
		case pb.RunState_RUN_STATE_RUNNING:
			active++
		case pb.RunState_RUN_STATE_QUEUED:
			if s.starting(ctx, v.Value.GetId()) {
				active++ // started, its record not yet running
				continue
			}
			queued = append(queued, v)
		}
	}
	for i, v := range queued {
		if limit > 0 && active >= limit {
			// Tell the waiting ones their place.
			for j, w := range queued[i:] {
				if w.Value.GetQueuePosition() != int32(j+1) {
					w.Value.QueuePosition = int32(j + 1)
					_, _ = s.store.UpdateRun(ctx, w.Value, w.Revision)
				}
			}
			return
		}
		l, err := s.leases.TryAcquire(ctx, runLeaseKey(v.Value.GetId()), s.cfg.LeaseTTL)
		if errors.Is(err, lease.ErrHeld) {
			active++
			continue
		}
		if err != nil {
			s.log.Error("start run", "run", v.Value.GetId(), "err", err)
			continue
		}
		// Read again under the lease: it may have been cancelled.
		cur, err := s.store.Run(ctx, v.Value.GetId())
		if err != nil || cur.Value.GetState() != pb.RunState_RUN_STATE_QUEUED {
			s.releaseLease(l)
			continue
		}
		if err := s.startExecution(ctx, cur.Value, cur.Revision, l); err != nil {
			s.log.Error("start run", "run", v.Value.GetId(), "err", err)
			s.releaseLease(l)
			s.failRun(ctx, v.Value.GetId(), "could not start: "+err.Error())
			continue
		}
		active++
	}
}

// starting reports whether a queued run is being started, here or by
// another runner (its lease is held).
func (s *Service) starting(ctx context.Context, id string) bool {
	s.mu.Lock()
	_, here := s.active[id]
	s.mu.Unlock()
	if here {
		return true
	}
	holder, err := s.leases.HolderOf(ctx, runLeaseKey(id))
	return err != nil || holder != ""
}

func triggerFromRef(kind pb.TriggerKind, event, ref, commit string) *pb.Trigger {
	t := &pb.Trigger{Kind: kind, Event: event, Ref: ref, Commit: commit}
	switch {
	case strings.HasPrefix(ref, "refs/heads/"):
		t.Branch = strings.TrimPrefix(ref, "refs/heads/")
	case strings.HasPrefix(ref, "refs/tags/"):
		t.Tag = strings.TrimPrefix(ref, "refs/tags/")
	case ref != "":
		t.Branch = ref
		t.Ref = "refs/heads/" + ref
	}
	return t
}

// queueRun creates a run of pipeline and schedules it.
func (s *Service) queueRun(ctx context.Context, name string, trig *pb.Trigger, vars map[string]string, rerunOf *pb.Run, mode pb.RerunMode) (*pb.Run, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	pv, err := st.Pipeline(ctx, name)
	if err != nil {
		return nil, toStatus(err)
	}
	digest := pv.Value.GetSourceDigest()
	if rerunOf != nil {
		digest = rerunOf.GetSourceDigest()
	}
	p, err := s.definition(ctx, digest)
	if err != nil {
		return nil, toStatus(err)
	}
	effective, err := effectiveVariables(p, vars)
	if err != nil {
		return nil, err
	}
	// Allocate the run number on the pipeline record.
	var number int64
	for {
		pv, err = st.Pipeline(ctx, name)
		if err != nil {
			return nil, toStatus(err)
		}
		pl := pv.Value
		if pl.Status == nil {
			pl.Status = &pb.PipelineStatus{}
		}
		number = pl.Status.GetLastRunNumber() + 1
		pl.Status.LastRunNumber = number
		pl.Status.LastRunId = store.RunID(name, number)
		pl.Status.LastRunState = pb.RunState_RUN_STATE_QUEUED
		if _, err = st.UpdatePipeline(ctx, pl, pv.Revision); err == nil {
			break
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, toStatus(err)
		}
	}
	run := &pb.Run{
		Id: store.RunID(name, number), Pipeline: name, Number: number, Trigger: trig,
		State: pb.RunState_RUN_STATE_QUEUED, Variables: effective, Steps: engine.Steps(p),
		SourceDigest: digest, CreateTime: timestamppb.Now(),
	}
	if rerunOf != nil {
		run.RerunOf = rerunOf.GetId()
		if mode == pb.RerunMode_RERUN_MODE_FAILED_STEPS {
			if err := s.reuseSteps(run, rerunOf); err != nil {
				return nil, err
			}
		}
	}
	// Concurrency policy.
	limit := int(p.Concurrency.Limit)
	if limit > 0 && p.Concurrency.Policy != "queue" {
		runs, err := st.Runs(ctx, name)
		if err != nil {
			return nil, toStatus(err)
		}
		var activeRuns []*pb.Run
		for _, v := range runs {
			if v.Value.GetState() == pb.RunState_RUN_STATE_RUNNING || v.Value.GetState() == pb.RunState_RUN_STATE_QUEUED {
				activeRuns = append(activeRuns, v.Value)
			}
		}
		if len(activeRuns) >= limit {
			switch p.Concurrency.Policy {
			case "skip":
				run.State = pb.RunState_RUN_STATE_SKIPPED
				run.Message = fmt.Sprintf("skipped: %d runs active, concurrency limit %d", len(activeRuns), limit)
				run.EndTime = timestamppb.Now()
				for _, step := range run.Steps {
					if step.GetState() == pb.StepState_STEP_STATE_PENDING {
						step.State = pb.StepState_STEP_STATE_SKIPPED
						step.Message = "skipped: run skipped by the concurrency policy"
					}
				}
			case "cancel_oldest":
				_, _ = s.cancel(ctx, activeRuns[0].GetId(), "superseded by run "+strconv.FormatInt(number, 10))
			}
		}
	}
	if _, err := st.CreateRun(ctx, run); err != nil {
		return nil, toStatus(err)
	}
	s.publish(ctx, EventRunQueued, run.GetId()+".queued", run.GetId(), &eventsv1.PipelineRunQueued{Run: run})
	if run.GetState() == pb.RunState_RUN_STATE_SKIPPED {
		s.publish(ctx, EventRunFinished, run.GetId()+".finished", run.GetId(), &eventsv1.PipelineRunFinished{Run: run})
		return run, nil
	}
	s.schedule(s.runCtx, name)
	if v, err := st.Run(ctx, run.GetId()); err == nil {
		return v.Value, nil
	}
	return run, nil
}

// reuseSteps marks the steps of a rerun that keep the earlier run's result:
// those that succeeded (or were skipped by their condition) and need no
// step that runs again. The earlier workspace is copied over.
func (s *Service) reuseSteps(run, prev *pb.Run) error {
	prevByID := map[string]*pb.RunStep{}
	for _, st := range prev.GetSteps() {
		prevByID[st.GetId()] = st
	}
	redo := map[string]bool{}
	for _, st := range run.GetSteps() {
		ps := prevByID[st.GetId()]
		ok := ps != nil && (ps.GetState() == pb.StepState_STEP_STATE_SUCCESS ||
			(ps.GetState() == pb.StepState_STEP_STATE_SKIPPED && !strings.HasPrefix(ps.GetMessage(), "skipped: needs")))
		if !ok {
			redo[st.GetId()] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, st := range run.GetSteps() {
			if redo[st.GetId()] {
				continue
			}
			if slices.ContainsFunc(st.GetNeeds(), func(n string) bool { return redo[n] }) {
				redo[st.GetId()] = true
				changed = true
			}
		}
	}
	for _, st := range run.GetSteps() {
		if redo[st.GetId()] {
			continue
		}
		ps := prevByID[st.GetId()]
		st.State = ps.GetState()
		st.Message = ps.GetMessage()
		st.Attempts = ps.GetAttempts()
		st.StartTime, st.EndTime = ps.GetStartTime(), ps.GetEndTime()
		st.ReusedFrom = prev.GetId()
		st.Detail = proto.CloneOf(ps).Detail
		for _, a := range ps.GetArtifacts() {
			na := proto.CloneOf(a)
			na.Run = run.GetId()
			src := engine.ArtifactPath(filepath.Join(s.cfg.DataDir, "artifacts"), prev.GetId(), st.GetId(), a.GetPath())
			dst := engine.ArtifactPath(filepath.Join(s.cfg.DataDir, "artifacts"), run.GetId(), st.GetId(), a.GetPath())
			if err := copyFile(src, dst); err != nil {
				return status.Errorf(codes.FailedPrecondition, "artifact %s of step %s is gone: %v", a.GetPath(), st.GetId(), err)
			}
			st.Artifacts = append(st.Artifacts, na)
		}
	}
	src := filepath.Join(s.cfg.DataDir, "workspaces", prev.GetId())
	if _, err := os.Stat(src); err == nil {
		if err := os.CopyFS(filepath.Join(s.cfg.DataDir, "workspaces", run.GetId()), os.DirFS(src)); err != nil {
			return status.Errorf(codes.Internal, "copy workspace of %s: %v", prev.GetId(), err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

func effectiveVariables(p *pipelinefile.Pipeline, given map[string]string) (map[string]string, error) {
	out := map[string]string{}
	v := validation.New("run")
	if len(p.Variables) > 0 {
		for k := range given {
			if !slices.ContainsFunc(p.Variables, func(d pipelinefile.Variable) bool { return d.Name == k }) {
				v.Add("variables."+k, "the pipeline declares no variable %q", k)
			}
		}
	}
	for _, d := range p.Variables {
		val, ok := given[d.Name]
		if !ok {
			val = d.Default
		}
		if val == "" && d.Required {
			v.Add("variables."+d.Name, "is required")
		}
		out[d.Name] = val
	}
	maps.Copy(out, given)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// RunPipeline queues a run.
func (s *Service) RunPipeline(ctx context.Context, req *pb.RunPipelineRequest) (*pb.RunPipelineResponse, error) {
	if req.GetName() == "" {
		return nil, fieldErr("name", "is required")
	}
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	claimKey := ""
	if req.GetRequestId() != "" {
		h := sha256.Sum256([]byte(req.GetRequestId()))
		claimKey = "request." + req.GetName() + "." + hex.EncodeToString(h[:16])
		prior, fresh, err := st.Claim(ctx, claimKey, nil)
		if err != nil {
			return nil, toStatus(err)
		}
		if !fresh && len(prior) > 0 {
			v, err := st.Run(ctx, string(prior))
			if err != nil {
				return nil, toStatus(err)
			}
			return &pb.RunPipelineResponse{Run: v.Value}, nil
		}
	}
	kind, event := pb.TriggerKind_TRIGGER_KIND_API, "api"
	if req.GetManual() {
		kind, event = pb.TriggerKind_TRIGGER_KIND_MANUAL, "manual"
	}
	trig := triggerFromRef(kind, event, req.GetRef(), req.GetCommit())
	trig.Variables = req.GetVariables()
	run, err := s.queueRun(ctx, req.GetName(), trig, req.GetVariables(), nil, 0)
	if err != nil {
		return nil, err
	}
	if claimKey != "" {
		_ = st.SetClaim(ctx, claimKey, []byte(run.GetId()))
	}
	return &pb.RunPipelineResponse{Run: run}, nil
}

func (s *Service) getRun(ctx context.Context, id, pipeline string, number int64) (store.Versioned[*pb.Run], error) {
	st, err := s.started()
	if err != nil {
		return store.Versioned[*pb.Run]{}, err
	}
	if id == "" {
		if pipeline == "" || number <= 0 {
			return store.Versioned[*pb.Run]{}, fieldErr("id", "is required (or pipeline and number)")
		}
		id = store.RunID(pipeline, number)
	}
	v, err := st.Run(ctx, id)
	if err != nil {
		return v, toStatus(err)
	}
	return v, nil
}

// GetRun returns a run.
func (s *Service) GetRun(ctx context.Context, req *pb.GetRunRequest) (*pb.GetRunResponse, error) {
	v, err := s.getRun(ctx, req.GetId(), req.GetPipeline(), req.GetNumber())
	if err != nil {
		return nil, err
	}
	return &pb.GetRunResponse{Run: v.Value}, nil
}

// ListRuns lists runs newest first.
func (s *Service) ListRuns(ctx context.Context, req *pb.ListRunsRequest) (*pb.ListRunsResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	size, offset, err := page(req.GetPageSize(), req.GetPageToken(), 50)
	if err != nil {
		return nil, err
	}
	all, err := st.Runs(ctx, req.GetPipeline())
	if err != nil {
		return nil, toStatus(err)
	}
	var runs []*pb.Run
	for _, v := range all {
		r := v.Value
		if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), r.GetState()) {
			continue
		}
		if len(req.GetTriggerKinds()) > 0 && !slices.Contains(req.GetTriggerKinds(), r.GetTrigger().GetKind()) {
			continue
		}
		if req.GetBranch() != "" && r.GetTrigger().GetBranch() != req.GetBranch() {
			continue
		}
		runs = append(runs, r)
	}
	slices.SortStableFunc(runs, func(a, b *pb.Run) int {
		return b.GetCreateTime().AsTime().Compare(a.GetCreateTime().AsTime())
	})
	out, next := paginate(runs, size, offset)
	return &pb.ListRunsResponse{Runs: out, NextPageToken: next}, nil
}

// cancel cancels an active run, wherever it executes.
func (s *Service) cancel(ctx context.Context, id, reason string) (*pb.Run, error) {
	s.mu.Lock()
	e := s.active[id]
	s.mu.Unlock()
	if e != nil {
		e.x.Cancel(reason)
		v, err := s.store.Run(ctx, id)
		if err != nil {
			return nil, toStatus(err)
		}
		return v.Value, nil
	}
	// Recorded first, so whichever runner executes or resumes it cancels it.
	v, err := s.requestCancel(ctx, id)
	if err != nil {
		return nil, err
	}
	if holder, err := s.leases.HolderOf(ctx, runLeaseKey(id)); err == nil && holder != "" && holder != s.leases.Holder() {
		if s.askCancel(ctx, id, reason) {
			if v, err := s.store.Run(ctx, id); err == nil {
				return v.Value, nil
			}
		}
	}
	l, err := s.leases.TryAcquire(ctx, runLeaseKey(id), s.cfg.LeaseTTL)
	if errors.Is(err, lease.ErrHeld) {
		// Being started or resumed right now: its runner sees the request.
		return v.Value, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.sched.Lock()
	defer s.sched.Unlock()
	v, err = s.store.Run(ctx, id)
	if err != nil {
		s.releaseLease(l)
		return nil, toStatus(err)
	}
	run := v.Value
	if engine.FinalRun(run.GetState()) {
		s.releaseLease(l)
		return run, nil
	}
	if run.GetState() == pb.RunState_RUN_STATE_RUNNING {
		// Its runner died: resume it here, cancelled.
		if err := s.startExecution(ctx, run, v.Revision, l); err != nil {
			s.releaseLease(l)
			return nil, toStatus(err)
		}
		return run, nil
	}
	defer s.releaseLease(l)
	msg := "run cancelled"
	if reason != "" {
		msg += ": " + reason
	}
	run.CancelRequested = true
	run.State = pb.RunState_RUN_STATE_CANCELLED
	run.Message = msg
	run.EndTime = timestamppb.Now()
	for _, step := range run.GetSteps() {
		if !slices.Contains([]pb.StepState{pb.StepState_STEP_STATE_SUCCESS, pb.StepState_STEP_STATE_FAILED, pb.StepState_STEP_STATE_SKIPPED}, step.GetState()) {
			step.State = pb.StepState_STEP_STATE_CANCELLED
			step.Message = msg
		}
	}
	if _, err := s.store.UpdateRun(ctx, run, v.Revision); err != nil {
		return nil, toStatus(err)
	}
	s.endLog(ctx, run)
	s.publish(ctx, EventRunFinished, id+".finished", id, &eventsv1.PipelineRunFinished{Run: run})
	return run, nil
}

// requestCancel sets cancel_requested on an unfinished run's record.
func (s *Service) requestCancel(ctx context.Context, id string) (store.Versioned[*pb.Run], error) {
	for {
		v, err := s.store.Run(ctx, id)
		if err != nil {
			return v, toStatus(err)
		}
		if engine.FinalRun(v.Value.GetState()) {
			return v, status.Errorf(codes.FailedPrecondition, "run %s already finished (%s)", id, stateLabel(v.Value.GetState().String()))
		}
		if v.Value.GetCancelRequested() {
			return v, nil
		}
		v.Value.CancelRequested = true
		rev, err := s.store.UpdateRun(ctx, v.Value, v.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return v, toStatus(err)
		}
		v.Revision = rev
		return v, nil
	}
}

// CancelRun cancels a queued or running run.
func (s *Service) CancelRun(ctx context.Context, req *pb.CancelRunRequest) (*pb.CancelRunResponse, error) {
	if req.GetId() == "" {
		return nil, fieldErr("id", "is required")
	}
	v, err := s.getRun(ctx, req.GetId(), "", 0)
	if err != nil {
		return nil, err
	}
	if engine.FinalRun(v.Value.GetState()) {
		return nil, status.Errorf(codes.FailedPrecondition, "run %s already finished (%s)", req.GetId(), stateLabel(v.Value.GetState().String()))
	}
	run, err := s.cancel(ctx, req.GetId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	run.CancelRequested = true
	return &pb.CancelRunResponse{Run: run}, nil
}

// RerunRun queues a new run like a finished one.
func (s *Service) RerunRun(ctx context.Context, req *pb.RerunRunRequest) (*pb.RerunRunResponse, error) {
	if req.GetId() == "" {
		return nil, fieldErr("id", "is required")
	}
	v, err := s.getRun(ctx, req.GetId(), "", 0)
	if err != nil {
		return nil, err
	}
	prev := v.Value
	if !engine.FinalRun(prev.GetState()) {
		return nil, status.Errorf(codes.FailedPrecondition, "run %s is still active", prev.GetId())
	}
	run, err := s.queueRun(ctx, prev.GetPipeline(), prev.GetTrigger(), prev.GetTrigger().GetVariables(), prev, req.GetMode())
	if err != nil {
		return nil, err
	}
	return &pb.RerunRunResponse{Run: run}, nil
}
