package pipelinerunner

import (
	"context"
	"errors"
	"strconv"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toStatus translates errors to gRPC statuses, once, at the edge.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *validation.Error
	var pe *pipelinefile.Error
	switch {
	case errors.As(err, &pe):
		return sourceStatus(pe)
	case errors.As(err, &ve):
		return ve.GRPCStatus().Err()
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// validationErrors turns a parse error into API validation errors.
func validationErrors(pe *pipelinefile.Error) []*pb.ValidationError {
	out := make([]*pb.ValidationError, 0, len(pe.Problems))
	for _, p := range pe.Problems {
		out = append(out, &pb.ValidationError{
			Line: int32(p.Line), Column: int32(p.Column), Key: p.Key, Message: p.Message,
			Severity: pb.ValidationSeverity_VALIDATION_SEVERITY_ERROR,
		})
	}
	return out
}

// sourceStatus is InvalidArgument naming each problem's line and key, with
// a field violation per problem (field "source.<key>") and the
// ValidationError messages ValidatePipeline returns.
func sourceStatus(pe *pipelinefile.Error) error {
	st := status.New(codes.InvalidArgument, pe.Error())
	br := &errdetails.BadRequest{}
	for _, p := range pe.Problems {
		field := "source"
		if p.Key != "" {
			field += "." + p.Key
		}
		desc := p.Message
		if p.Line > 0 {
			desc = "line " + strconv.Itoa(p.Line) + ": " + desc
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: field, Description: desc})
	}
	details := []any{br}
	for _, v := range validationErrors(pe) {
		details = append(details, v)
	}
	if d, err := withDetails(st, details); err == nil {
		return d.Err()
	}
	return st.Err()
}

func withDetails(st *status.Status, details []any) (*status.Status, error) {
	out := st
	for _, d := range details {
		var err error
		switch m := d.(type) {
		case *errdetails.BadRequest:
			out, err = out.WithDetails(m)
		case *pb.ValidationError:
			out, err = out.WithDetails(m)
		}
		if err != nil {
			return st, err
		}
	}
	return out, nil
}

func fieldErr(field, format string, args ...any) error {
	v := validation.New("request")
	v.Add(field, format, args...)
	return v.GRPCStatus().Err()
}

// page reads page size and offset token.
func page(size int32, token string, def int) (int, int, error) {
	n := int(size)
	switch {
	case n < 0:
		return 0, 0, fieldErr("page_size", "must not be negative")
	case n == 0:
		n = def
	case n > 1000:
		n = 1000
	}
	off := 0
	if token != "" {
		v, err := strconv.Atoi(token)
		if err != nil || v < 0 {
			return 0, 0, fieldErr("page_token", "is not a token this service returned")
		}
		off = v
	}
	return n, off, nil
}

func paginate[T any](all []T, size, offset int) ([]T, string) {
	if offset >= len(all) {
		return nil, ""
	}
	end := min(offset+size, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return all[offset:end], next
}
