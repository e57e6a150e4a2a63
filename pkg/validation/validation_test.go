package validation_test

import (
	"errors"
	"testing"

	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestEmptyIsNil(t *testing.T) {
	if err := validation.New("target").Err(); err != nil {
		t.Fatalf("empty validation error is %v", err)
	}
}

func TestStatusCarriesEveryField(t *testing.T) {
	v := validation.New("target")
	v.Add("target.name", "is required")
	v.Add("target.interval", "must be at least %s", "100ms")
	err := v.Err()
	if err == nil || err.Error() != "invalid target: target.name: is required; target.interval: must be at least 100ms" {
		t.Fatalf("Error() = %v", err)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("status %v %v", st, ok)
	}
	var got []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				got = append(got, fv.GetField())
			}
		}
	}
	if len(got) != 2 || got[0] != "target.name" || got[1] != "target.interval" {
		t.Fatalf("field violations %v", got)
	}
	var ve *validation.Error
	if !errors.As(err, &ve) || len(ve.Fields) != 2 {
		t.Fatal("errors.As lost the fields")
	}
}
