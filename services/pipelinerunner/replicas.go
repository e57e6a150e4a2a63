package pipelinerunner

// Replicas. Runners sharing one NATS execute each run once: a runner
// executes a run only while it holds the run's lease
// (pipelinerunner.run.<id>, pkg/lease), and loses it — abandoning the
// run as at shutdown, its record kept — when the lease cannot be renewed.
// Every runner mirrors the records of unfinished runs (a KV watch on the
// runs bucket); every TTL/3 it looks for running runs whose lease nobody
// holds (their runner died) and resumes them as a restarted runner would:
// finished steps are kept, a step that was running is an interrupted
// attempt, retried by its policy. Starting queued runs is decided by one
// runner at a time per pipeline (lease pipelinerunner.schedule.<pipeline>)
// so concurrency limits hold across runners. CancelRun reaches the runner
// executing the run over NATS (opsuite.internal.pipelinerunner.cancel), and
// is written to the record (cancel_requested) so a runner resuming the run
// later cancels it too.

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"google.golang.org/protobuf/proto"
)

const cancelSubject = "opsuite.internal.pipelinerunner.cancel"

func runLeaseKey(id string) string             { return "pipelinerunner.run." + id }
func scheduleLeaseKey(p string) string         { return "pipelinerunner.schedule." + p }
func (s *Service) leaseTimeout() time.Duration { return s.cfg.LeaseTTL * 3 }

// runIndex mirrors the unfinished runs of the runs bucket, by key.
type runIndex struct {
	mu   sync.Mutex
	runs map[string]indexedRun
}

type indexedRun struct {
	id       string
	pipeline string
	state    pb.RunState
}

func (x *runIndex) apply(e jetstream.KeyValueEntry) {
	var run *pb.Run
	if e.Operation() == jetstream.KeyValuePut {
		r, err := store.RunFromEntry(e)
		if err != nil {
			return
		}
		run = r
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if run == nil || engine.FinalRun(run.GetState()) {
		delete(x.runs, e.Key())
		return
	}
	x.runs[e.Key()] = indexedRun{id: run.GetId(), pipeline: run.GetPipeline(), state: run.GetState()}
}

func (x *runIndex) snapshot() []indexedRun {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]indexedRun, 0, len(x.runs))
	for _, r := range x.runs {
		out = append(out, r)
	}
	return out
}

// supervise adopts orphaned runs every TTL/3 until ctx ends.
func (s *Service) supervise(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.adoptOrphans(ctx)
		}
	}
}

// orphaned reports whether nobody executes run id: not this runner, and
// its lease is free (or left by an earlier run of this runner).
func (s *Service) orphaned(ctx context.Context, id string) bool {
	s.mu.Lock()
	_, here := s.active[id]
	s.mu.Unlock()
	if here {
		return false
	}
	holder, err := s.leases.HolderOf(ctx, runLeaseKey(id))
	return err == nil && (holder == "" || holder == s.leases.Holder())
}

// adoptOrphans resumes running runs nobody executes and schedules the
// pipelines with queued runs nobody is starting.
func (s *Service) adoptOrphans(ctx context.Context) {
	pipelines := map[string]bool{}
	for _, r := range s.index.snapshot() {
		if ctx.Err() != nil {
			return
		}
		if !s.orphaned(ctx, r.id) {
			continue
		}
		switch r.state {
		case pb.RunState_RUN_STATE_RUNNING:
			s.adopt(ctx, r.id)
		case pb.RunState_RUN_STATE_QUEUED:
			pipelines[r.pipeline] = true
		}
	}
	for p := range pipelines {
		s.schedule(ctx, p)
	}
}

// adopt takes run id's lease and resumes it when it still runs.
func (s *Service) adopt(ctx context.Context, id string) {
	l, err := s.leases.TryAcquire(ctx, runLeaseKey(id), s.cfg.LeaseTTL)
	if err != nil {
		return
	}
	v, err := s.store.Run(ctx, id)
	if err != nil || v.Value.GetState() != pb.RunState_RUN_STATE_RUNNING {
		s.releaseLease(l)
		return
	}
	s.log.Info("resuming run", "run", id)
	if err := s.startExecution(ctx, v.Value, v.Revision, l); err != nil {
		s.failRun(ctx, id, "could not resume after its runner stopped: "+err.Error())
		s.releaseLease(l)
	}
}

// releaseLease releases l, bounded in time (it expires anyway).
func (s *Service) releaseLease(l *lease.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		s.log.Warn("release lease", "key", l.Key(), "err", err)
	}
}

// serveCancel answers a cancel request for a run this runner executes;
// runners that do not execute it stay silent.
func (s *Service) serveCancel(m *nats.Msg) {
	req := &pb.CancelRunRequest{}
	if err := proto.Unmarshal(m.Data, req); err != nil {
		return
	}
	s.mu.Lock()
	e := s.active[req.GetId()]
	s.mu.Unlock()
	if e == nil {
		return
	}
	e.x.Cancel(req.GetReason())
	_ = m.Respond([]byte("cancelled"))
}

// askCancel asks the runner executing run id to cancel it; false when none
// answered.
func (s *Service) askCancel(ctx context.Context, id, reason string) bool {
	data, err := proto.Marshal(&pb.CancelRunRequest{Id: id, Reason: reason})
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = s.nc.RequestWithContext(ctx, cancelSubject, data)
	return err == nil
}

// waitFinal waits (a while) until run id is finished.
func (s *Service) waitFinal(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, s.leaseTimeout())
	defer cancel()
	for {
		v, err := s.store.Run(ctx, id)
		if err != nil || engine.FinalRun(v.Value.GetState()) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
