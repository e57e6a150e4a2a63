package healthchecker

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// mustNormalize validates t in place and fails the test on any error, so
// tests run checks exactly as the service prepares them.
func mustNormalize(tb testing.TB, t *hcv1.Target) *compiledCheck {
	tb.Helper()
	cc, err := normalize(t)
	if err != nil {
		tb.Fatalf("normalize(%s): %v", t.GetName(), err)
	}
	return cc
}

// fieldErrors returns the fields a validation error names, or fails the test
// when err is not a *ValidationError.
func fieldErrors(tb testing.TB, err error) []string {
	tb.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		tb.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	fields := make([]string, len(ve.Fields))
	for i, f := range ve.Fields {
		fields[i] = f.Field
	}
	return fields
}

// assertField fails unless err is a validation error naming field.
func assertField(tb testing.TB, err error, field string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("want a validation error on %s, got none", field)
	}
	if fields := fieldErrors(tb, err); !slices.Contains(fields, field) {
		tb.Fatalf("want an error on %s, got fields %q: %v", field, fields, err)
	}
}

// closedLoopbackAddr returns a loopback address nobody listens on any more.
func closedLoopbackAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	return addr
}

func pbDur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// testHTTPTarget is a minimal valid HTTP target, for tests to adjust.
func testHTTPTarget(name, url string) *hcv1.Target {
	return &hcv1.Target{Name: name, Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: url}}}
}

func assertContains(tb testing.TB, what, got, want string) {
	tb.Helper()
	if !strings.Contains(got, want) {
		tb.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}
