package healthchecker

import (
	"errors"

	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors of the health-checker; toStatus maps them to gRPC codes.
var (
	ErrNotFound      = errors.New("target not found")
	ErrAlreadyExists = errors.New("target already exists")
	ErrNotReady      = errors.New("health-checker is starting")
	ErrConflict      = errors.New("target changed concurrently")
	ErrNotTTL        = errors.New("target is not a TTL check")
)

// ValidationError and FieldError are the shared validation types.
type (
	ValidationError = validation.Error
	FieldError      = validation.FieldError
)

// toStatus translates an error from the service into a gRPC status, once, at
// the edge.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		return ve.GRPCStatus().Err()
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, ErrNotReady):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, ErrNotTTL):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
