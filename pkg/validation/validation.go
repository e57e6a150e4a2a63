// Package validation collects the problems of one request or document,
// each naming its field, and presents them as a gRPC InvalidArgument status
// with google.rpc.BadRequest details.
package validation

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldError says which field is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Error is every field error of one thing, e.g. a target or an application.
type Error struct {
	// Subject names what was validated, e.g. "target".
	Subject string
	Fields  []*FieldError
}

// New returns an empty Error about subject.
func New(subject string) *Error { return &Error{Subject: subject} }

// Add records a problem with field.
func (e *Error) Add(field, format string, args ...any) {
	e.Fields = append(e.Fields, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Err returns e when it holds any problem, else nil.
func (e *Error) Err() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return "invalid " + e.Subject + ": " + strings.Join(parts, "; ")
}

// GRPCStatus makes the error an InvalidArgument status with one field
// violation per problem, which the gateway maps to HTTP 400.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(codes.InvalidArgument, e.Error())
	br := &errdetails.BadRequest{}
	for _, f := range e.Fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Reason})
	}
	if withDetails, err := st.WithDetails(br); err == nil {
		return withDetails
	}
	return st
}
