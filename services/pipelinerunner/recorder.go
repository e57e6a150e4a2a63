package pipelinerunner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"google.golang.org/protobuf/proto"
)

// recorder makes one run durable: every change of the run is written to
// its KV entry with a revision check, every output line to the log stream,
// and the run's events are published.
type recorder struct {
	s     *Service
	ship  *shipper
	lease *lease.Lease // the run's; nothing is written once it is lost
	mu    sync.Mutex
	rev   uint64
	seq   uint64
	id    string
	// cancel cancels the execution, when another runner requested it.
	cancel func()
}

// errLeaseLost: the run's lease ended; another runner may execute it now.
var errLeaseLost = errors.New("run lease lost")

func (r *recorder) setCancel(f func()) {
	r.mu.Lock()
	r.cancel = f
	r.mu.Unlock()
}

// held reports whether the run may still be written by this runner.
func (r *recorder) held() bool { return r.lease == nil || r.lease.Valid() }

func (s *Service) newRecorder(ctx context.Context, id string, rev uint64) (*recorder, error) {
	seq, err := s.store.LastLogSeq(ctx, id)
	if err != nil {
		return nil, err
	}
	return &recorder{s: s, rev: rev, seq: seq, id: id}, nil
}

func (r *recorder) SaveRun(ctx context.Context, run *pb.Run, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if !r.held() {
			return fmt.Errorf("save run %s: %w", run.GetId(), errLeaseLost)
		}
		var rev uint64
		rev, err = r.s.store.UpdateRun(ctx, run, r.rev)
		if err == nil {
			r.rev = rev
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		// Only cancel_requested is written by others (CancelRun on another
		// runner); take over the current revision keeping that flag, and
		// honour it.
		cur, gerr := r.s.store.Run(ctx, run.GetId())
		if gerr != nil {
			return fmt.Errorf("save run %s: %w", run.GetId(), err)
		}
		if cur.Value.GetCancelRequested() && !run.GetCancelRequested() && r.cancel != nil {
			go r.cancel()
		}
		run.CancelRequested = run.GetCancelRequested() || cur.Value.GetCancelRequested()
		r.rev = cur.Revision
	}
	r.s.log.Error("save run", "run", run.GetId(), "err", err)
	return fmt.Errorf("save run %s: %w", run.GetId(), err)
}

func (r *recorder) AppendLog(ctx context.Context, runID string, line *pb.LogLine) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held() {
		return fmt.Errorf("output of run %s: %w", runID, errLeaseLost)
	}
	r.seq++
	line = proto.CloneOf(line)
	line.Seq = r.seq
	end := line.GetStep() == "" && line.GetStream() == pb.LogStream_LOG_STREAM_SYSTEM && isRunEnd(line.GetText())
	r.s.metrics.logLines.Inc()
	if err := r.s.store.AppendLog(ctx, runID, line, end); err != nil {
		return err
	}
	if r.ship != nil {
		r.ship.add(line)
	}
	return nil
}

func isRunEnd(text string) bool {
	return len(text) >= len(runEndPrefix) && text[:len(runEndPrefix)] == runEndPrefix
}

const runEndPrefix = "run finished: "

func (r *recorder) OnRunStarted(ctx context.Context, run *pb.Run) {
	r.s.publish(ctx, EventRunStarted, run.GetId()+".started", run.GetId(), &eventsv1.PipelineRunStarted{Run: run})
}

func (r *recorder) OnStepStarted(ctx context.Context, run *pb.Run, step *pb.RunStep) {
	r.s.publish(ctx, EventStepStarted, run.GetId()+"."+step.GetId()+".started", run.GetId(), &eventsv1.PipelineStepStarted{
		RunId: run.GetId(), Pipeline: run.GetPipeline(), RunNumber: run.GetNumber(), Step: step,
	})
}

func (r *recorder) OnStepFinished(ctx context.Context, run *pb.Run, step *pb.RunStep) {
	if r.ship != nil {
		r.ship.flush(step.GetId())
	}
	r.s.metrics.stepsFinished.WithLabelValues(stateLabel(step.GetState().String())).Inc()
	r.s.publish(ctx, EventStepFinished, run.GetId()+"."+step.GetId()+".finished", run.GetId(), &eventsv1.PipelineStepFinished{
		RunId: run.GetId(), Pipeline: run.GetPipeline(), RunNumber: run.GetNumber(), Step: step,
	})
}

func (r *recorder) OnRunFinished(ctx context.Context, run *pb.Run) {
	if r.ship != nil {
		r.ship.flushAll()
	}
	r.s.metrics.runsFinished.WithLabelValues(stateLabel(run.GetState().String())).Inc()
	r.s.publish(ctx, EventRunFinished, run.GetId()+".finished", run.GetId(), &eventsv1.PipelineRunFinished{Run: run})
}

// publish queues an event; one goroutine publishes them in order, so steps
// never wait on the event stream. Ids are deterministic (run, step, what),
// so an event published again after a restart is stored once.
func (s *Service) publish(_ context.Context, typ, id, subject string, data proto.Message) {
	s.evMu.RLock()
	defer s.evMu.RUnlock()
	if s.evClosed {
		s.log.Warn("event after stop not published", "type", typ, "subject", subject)
		return
	}
	// A copy: the caller may go on changing data while the event waits.
	s.evq <- eventbus.Event{Type: typ, ID: id, Subject: subject, Data: proto.Clone(data)}
}

// publishEvents publishes queued events until the queue is closed.
func (s *Service) publishEvents() {
	for ev := range s.evq {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := s.events.Publish(ctx, ev); err != nil {
			s.log.Warn("publish event", "type", ev.Type, "subject", ev.Subject, "err", err)
		}
		cancel()
	}
}
