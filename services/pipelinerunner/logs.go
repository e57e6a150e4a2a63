package pipelinerunner

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// StreamRunLogs streams a run's stored output, and with follow its new
// lines until the run finishes.
func (s *Service) StreamRunLogs(req *pb.StreamRunLogsRequest, srv grpc.ServerStreamingServer[pb.StreamRunLogsResponse]) error {
	ctx, cancel := s.streamContext(srv.Context())
	defer cancel()
	if req.GetId() == "" {
		return fieldErr("id", "is required")
	}
	if req.GetTailLines() < 0 {
		return fieldErr("tail_lines", "must not be negative")
	}
	v, err := s.getRun(ctx, req.GetId(), "", 0)
	if err != nil {
		return err
	}
	st := s.store
	follow := req.GetFollow() && !engine.FinalRun(v.Value.GetState())
	if req.GetFollow() && engine.FinalRun(v.Value.GetState()) {
		follow = false
	}
	var skip uint64
	if req.GetTailLines() > 0 && len(req.GetSteps()) == 0 {
		n, err := st.CountLogs(ctx, req.GetId())
		if err != nil {
			return toStatus(err)
		}
		if n > uint64(req.GetTailLines()) {
			skip = n - uint64(req.GetTailLines())
		}
	}
	want := func(l *pb.LogLine) bool {
		if l.GetSeq() <= req.GetAfterSeq() {
			return false
		}
		if len(req.GetSteps()) == 0 {
			return true
		}
		for _, f := range req.GetSteps() {
			if l.GetStep() == f || strings.HasPrefix(l.GetStep(), f+"[") {
				return true
			}
		}
		return false
	}
	var batch []*pb.LogLine
	var tail []*pb.LogLine
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := srv.Send(&pb.StreamRunLogsResponse{Lines: batch})
		batch = nil
		return err
	}
	err = st.ReadLogs(ctx, req.GetId(), follow, skip, func(l *pb.LogLine) error {
		if !want(l) {
			return nil
		}
		if req.GetTailLines() > 0 && len(req.GetSteps()) > 0 && !follow {
			tail = append(tail, l)
			if len(tail) > int(req.GetTailLines()) {
				tail = tail[1:]
			}
			return nil
		}
		batch = append(batch, l)
		if len(batch) >= 100 || follow {
			return flush()
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return toStatus(err)
	}
	if ctx.Err() != nil && srv.Context().Err() == nil {
		_ = flush()
		return status.Error(codes.Unavailable, "pipeline-runner is stopping; resume with after_seq")
	}
	batch = append(batch, tail...)
	return flush()
}

// WatchRun streams a run on every change until it finishes.
func (s *Service) WatchRun(req *pb.WatchRunRequest, srv grpc.ServerStreamingServer[pb.WatchRunResponse]) error {
	ctx, cancel := s.streamContext(srv.Context())
	defer cancel()
	if req.GetId() == "" {
		return fieldErr("id", "is required")
	}
	if _, err := s.getRun(ctx, req.GetId(), "", 0); err != nil {
		return err
	}
	w, err := s.store.WatchRun(ctx, req.GetId())
	if err != nil {
		return toStatus(err)
	}
	defer func() { _ = w.Stop() }()
	var prev *pb.Run
	for {
		select {
		case <-ctx.Done():
			if srv.Context().Err() == nil {
				return status.Error(codes.Unavailable, "pipeline-runner is stopping; watch again")
			}
			return status.FromContextError(ctx.Err()).Err()
		case e, ok := <-w.Updates():
			if !ok {
				return status.Error(codes.Unavailable, "run watch ended")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				if e != nil {
					return status.Errorf(codes.NotFound, "run %s was deleted", req.GetId())
				}
				continue // end of the initial values
			}
			var run pb.Run
			if err := proto.Unmarshal(e.Value(), &run); err != nil {
				return toStatus(err)
			}
			if err := srv.Send(&pb.WatchRunResponse{Run: &run, ChangedStep: changedStep(prev, &run)}); err != nil {
				return err
			}
			if engine.FinalRun(run.GetState()) {
				return nil
			}
			prev = &run
		}
	}
}

// changedStep names the first step that differs between two versions.
func changedStep(prev, cur *pb.Run) string {
	if prev == nil {
		return ""
	}
	for _, st := range cur.GetSteps() {
		i := slices.IndexFunc(prev.GetSteps(), func(p *pb.RunStep) bool { return p.GetId() == st.GetId() })
		if i < 0 || !proto.Equal(prev.GetSteps()[i], st) {
			return st.GetId()
		}
	}
	return ""
}
