package monitor

import (
	"context"
	"errors"

	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors of the monitor; toStatus maps them to gRPC codes.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrNotReady      = errors.New("monitor is starting")
	ErrConflict      = errors.New("changed concurrently")
	// ErrUnavailable: a shared part (NATS) did not answer; retry.
	ErrUnavailable = errors.New("unavailable")
)

// toStatus translates an error from the service into a gRPC status, once,
// at the edge.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *validation.Error
	switch {
	case errors.As(err, &ve):
		return ve.GRPCStatus().Err()
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// invalid returns a validation error about one field.
func invalid(subject, field, format string, args ...any) error {
	v := validation.New(subject)
	v.Add(field, format, args...)
	return v
}
