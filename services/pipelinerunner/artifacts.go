package pipelinerunner

import (
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"context"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ListArtifacts lists the files a run's steps kept.
func (s *Service) ListArtifacts(ctx context.Context, req *pb.ListArtifactsRequest) (*pb.ListArtifactsResponse, error) {
	v, err := s.getRun(ctx, req.GetId(), "", 0)
	if err != nil {
		return nil, err
	}
	size, offset, err := page(req.GetPageSize(), req.GetPageToken(), 100)
	if err != nil {
		return nil, err
	}
	var all []*pb.Artifact
	for _, st := range v.Value.GetSteps() {
		if req.GetStep() == "" || req.GetStep() == st.GetId() {
			all = append(all, st.GetArtifacts()...)
		}
	}
	out, next := paginate(all, size, offset)
	return &pb.ListArtifactsResponse{Artifacts: out, NextPageToken: next}, nil
}

const artifactChunk = 64 << 10

// GetArtifact streams one artifact in chunks.
func (s *Service) GetArtifact(req *pb.GetArtifactRequest, srv grpc.ServerStreamingServer[pb.GetArtifactResponse]) error {
	ctx := srv.Context()
	v, err := s.getRun(ctx, req.GetId(), "", 0)
	if err != nil {
		return err
	}
	clean := path.Clean(strings.TrimPrefix(req.GetPath(), "/"))
	var art *pb.Artifact
	for _, st := range v.Value.GetSteps() {
		if st.GetId() != req.GetStep() {
			continue
		}
		for _, a := range st.GetArtifacts() {
			if a.GetPath() == clean {
				art = a
			}
		}
	}
	if art == nil {
		return status.Errorf(codes.NotFound, "run %s has no artifact %q of step %q", req.GetId(), req.GetPath(), req.GetStep())
	}
	if req.GetOffset() < 0 || req.GetOffset() > art.GetSizeBytes() {
		return fieldErr("offset", "must be within 0..%d", art.GetSizeBytes())
	}
	f, err := os.Open(engine.ArtifactPath(filepath.Join(s.cfg.DataDir, "artifacts"), req.GetId(), req.GetStep(), clean))
	if err != nil {
		return status.Errorf(codes.NotFound, "artifact %s is gone: %v", clean, err)
	}
	defer f.Close()
	off := req.GetOffset()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return toStatus(err)
	}
	buf := make([]byte, artifactChunk)
	first := true
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 || first {
			msg := &pb.GetArtifactResponse{Offset: off, Data: append([]byte(nil), buf[:n]...)}
			if first {
				msg.Artifact = art
				first = false
			}
			if err := srv.Send(msg); err != nil {
				return err
			}
			off += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil
		}
		if rerr != nil {
			return toStatus(rerr)
		}
	}
}
