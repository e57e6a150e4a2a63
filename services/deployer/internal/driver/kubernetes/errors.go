package kubernetes

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Sentinel errors of the platform. Errors also wrap the driver package's
// sentinels where they mean the same: driver.ErrInvalidSpec for bad input,
// driver.ErrUnavailable when the API server cannot be reached,
// driver.ErrNotFound for a missing application or revision.
var (
	// ErrNotOwned: an object the platform would create or change exists
	// without the deployer's managed-by label, or an object the deployer does
	// not own would be selected by (or would select) the deployer's pods.
	// Nothing is changed. Maps to gRPC FailedPrecondition.
	ErrNotOwned = errors.New("object not managed by opsuite-deployer")
	// ErrProgressDeadline: a Deployment reported ProgressDeadlineExceeded,
	// i.e. its new pods did not become available within the progress
	// deadline. The caller rolls back (Rollback or Abort).
	ErrProgressDeadline = errors.New("rollout exceeded its progress deadline")
	// ErrNoRevision: the revision asked for is not kept by the Deployment
	// (its ReplicaSet history) nor run by either slot.
	ErrNoRevision = errors.New("revision not kept")
)

// invalidError is bad input: it is a *validation.Error (InvalidArgument,
// naming each field) and it wraps driver.ErrInvalidSpec.
type invalidError struct{ v *validation.Error }

func (e *invalidError) Error() string              { return e.v.Error() }
func (e *invalidError) Unwrap() []error            { return []error{e.v, driver.ErrInvalidSpec} }
func (e *invalidError) GRPCStatus() *status.Status { return e.v.GRPCStatus() }
func invalid(v *validation.Error) error {
	if v.Err() == nil {
		return nil
	}
	return &invalidError{v: v}
}

// notOwnedError names the object that is not ours.
type notOwnedError struct {
	kind, namespace, name, why string
}

func (e *notOwnedError) Error() string {
	return fmt.Sprintf("%s %s/%s: %s: %v", e.kind, e.namespace, e.name, e.why, ErrNotOwned)
}
func (e *notOwnedError) Unwrap() error { return ErrNotOwned }

// GRPCStatus makes a clash FailedPrecondition: the request is valid but the
// cluster holds objects the deployer must not touch.
func (e *notOwnedError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}
