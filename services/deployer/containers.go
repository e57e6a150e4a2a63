package deployer

import (
	"context"
	"errors"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/containers"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The direct container API (seed parity) works on Docker containers outside
// any application; see package containers for what it may change.

func (s *Service) containerAPI() (*containers.Manager, error) {
	if s.containers == nil {
		return nil, status.Error(codes.Unavailable, "the container API needs Docker, and the deployer runs with --docker=off")
	}
	return s.containers, nil
}

// containerStatus maps the container API's errors to gRPC codes.
func containerStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, containers.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, containers.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, containers.ErrNameTaken):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, containers.ErrNotOwned), errors.Is(err, containers.ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// CreateContainer creates (and optionally starts) a container.
func (s *Service) CreateContainer(ctx context.Context, req *deployerv1.CreateContainerRequest) (*deployerv1.CreateContainerResponse, error) {
	m, err := s.containerAPI()
	if err != nil {
		return nil, err
	}
	c, err := m.Create(ctx, req.GetContainer(), req.GetStart())
	if err != nil {
		return nil, containerStatus(err)
	}
	return &deployerv1.CreateContainerResponse{Container: c}, nil
}

// StartContainer starts a container made by CreateContainer.
func (s *Service) StartContainer(ctx context.Context, req *deployerv1.StartContainerRequest) (*deployerv1.StartContainerResponse, error) {
	m, err := s.containerAPI()
	if err != nil {
		return nil, err
	}
	c, err := m.Start(ctx, req.GetId())
	if err != nil {
		return nil, containerStatus(err)
	}
	return &deployerv1.StartContainerResponse{Container: c}, nil
}

// StopContainer stops a container made by CreateContainer.
func (s *Service) StopContainer(ctx context.Context, req *deployerv1.StopContainerRequest) (*deployerv1.StopContainerResponse, error) {
	m, err := s.containerAPI()
	if err != nil {
		return nil, err
	}
	if d := req.GetTimeout(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return nil, toStatus(&fieldError{"timeout", "must be a valid non-negative duration"})
	}
	c, err := m.Stop(ctx, req.GetId(), req.GetTimeout().AsDuration())
	if err != nil {
		return nil, containerStatus(err)
	}
	return &deployerv1.StopContainerResponse{Container: c}, nil
}

// RemoveContainer removes a container made by CreateContainer.
func (s *Service) RemoveContainer(ctx context.Context, req *deployerv1.RemoveContainerRequest) (*deployerv1.RemoveContainerResponse, error) {
	m, err := s.containerAPI()
	if err != nil {
		return nil, err
	}
	if err := m.Remove(ctx, req.GetId(), req.GetForce(), req.GetRemoveVolumes()); err != nil {
		return nil, containerStatus(err)
	}
	return &deployerv1.RemoveContainerResponse{}, nil
}

// GetContainer reports any container.
func (s *Service) GetContainer(ctx context.Context, req *deployerv1.GetContainerRequest) (*deployerv1.GetContainerResponse, error) {
	m, err := s.containerAPI()
	if err != nil {
		return nil, err
	}
	c, err := m.Get(ctx, req.GetId())
	if err != nil {
		return nil, containerStatus(err)
	}
	return &deployerv1.GetContainerResponse{Container: c}, nil
}

// ListContainers lists the containers of the container API and the
// application replicas.
func (s *Service) ListContainers(ctx context.Context, req *deployerv1.ListContainersRequest) (*deployerv1.ListContainersResponse, error) {
	m, err := s.containerAPI()
	if err != nil {
		return nil, err
	}
	cs, next, err := m.List(ctx, req.GetAll(), req.GetLabelSelector(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, containerStatus(err)
	}
	return &deployerv1.ListContainersResponse{Containers: cs, NextPageToken: next}, nil
}

// GetContainerLogs streams a container's output.
func (s *Service) GetContainerLogs(req *deployerv1.GetContainerLogsRequest, stream grpc.ServerStreamingServer[deployerv1.GetContainerLogsResponse]) error {
	m, err := s.containerAPI()
	if err != nil {
		return err
	}
	if req.GetTail() < 0 {
		return toStatus(&fieldError{"tail", "must not be negative"})
	}
	if ts := req.GetSince(); ts != nil && ts.CheckValid() != nil {
		return toStatus(&fieldError{"since", "is not a valid timestamp"})
	}
	opts := containers.LogOptions{Tail: int(req.GetTail()), Follow: req.GetFollow(), Stream: req.GetStream()}
	if req.GetSince() != nil {
		opts.Since = req.GetSince().AsTime()
	}
	err = m.Logs(stream.Context(), req.GetId(), opts, func(lines []*deployerv1.LogLine) error {
		return stream.Send(&deployerv1.GetContainerLogsResponse{Lines: lines})
	})
	return containerStatus(err)
}
