package logaggregator

import (
	"context"
	"errors"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors of the log-aggregator; toStatus maps them to gRPC codes.
var (
	ErrNotReady = errors.New("log-aggregator is starting")
	ErrClosed   = errors.New("log-aggregator is stopping")
)

// invalid returns a validation error about subject naming one field.
func invalid(subject, field, format string, args ...any) error {
	ve := validation.New(subject)
	ve.Add(field, format, args...)
	return ve
}

// filterError turns a filter compilation error into a validation error.
func filterError(subject string, err error) error {
	var fe *filter.FieldError
	if errors.As(err, &fe) {
		return invalid(subject, fe.Field, "%s", fe.Reason)
	}
	return err
}

// toStatus translates an error from the service into a gRPC status, once, at
// the edge.
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
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
