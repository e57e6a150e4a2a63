package healthchecker

import (
	"strconv"
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func plainHTTPResult(i int) *hcv1.CheckResult {
	return &hcv1.CheckResult{
		Outcome:      hcv1.CheckOutcome_CHECK_OUTCOME_PASS,
		Time:         timestamppb.New(time.Unix(1000+int64(i), 5)),
		ResponseTime: durationpb.New(time.Duration(i) * time.Microsecond),
		Message:      "status 200",
		Details:      map[string]string{"status_code": "200"},
	}
}

func otherResult(i int) *hcv1.CheckResult {
	return &hcv1.CheckResult{
		Outcome: hcv1.CheckOutcome_CHECK_OUTCOME_FAIL,
		Time:    timestamppb.New(time.Unix(1000+int64(i), 0)),
		Message: "refused " + strconv.Itoa(i),
	}
}

// TestHistoryKeepsResultsExactly pushes a mix of compact and other results
// past the ring's size and gets back exactly the newest ones, newest first.
func TestHistoryKeepsResultsExactly(t *testing.T) {
	var h history
	var all []*hcv1.CheckResult
	for i := range historySize + 37 {
		r := plainHTTPResult(i)
		if i%7 == 0 {
			r = otherResult(i)
		}
		all = append(all, r)
		h.push(r)
	}
	got := h.recent(historySize + 10)
	if len(got) != historySize {
		t.Fatalf("recent returned %d results, want %d", len(got), historySize)
	}
	for k, r := range got {
		want := all[len(all)-1-k]
		if !proto.Equal(r, want) {
			t.Fatalf("result %d = %v, want %v", k, r, want)
		}
	}
	if n := len(h.recent(3)); n != 3 {
		t.Fatalf("recent(3) returned %d", n)
	}
	c := h.clone()
	h.push(otherResult(999))
	if proto.Equal(c.recent(1)[0], h.recent(1)[0]) {
		t.Fatal("clone shares its ring with the original")
	}
}

func TestHistoryIsEmptyAtFirst(t *testing.T) {
	var h history
	if got := h.recent(5); len(got) != 0 {
		t.Fatalf("empty history returned %v", got)
	}
}

func TestAsPlainRejectsLookalikes(t *testing.T) {
	for _, r := range []*hcv1.CheckResult{
		{Message: "status 200", Details: map[string]string{"status_code": "200"}}, // no times
		{Time: timestamppb.Now(), ResponseTime: durationpb.New(1), Message: "status 200, slow", Details: map[string]string{"status_code": "200"}},
		{Time: timestamppb.Now(), ResponseTime: durationpb.New(1), Message: "status 0200", Details: map[string]string{"status_code": "0200"}},
		{Time: timestamppb.Now(), ResponseTime: durationpb.New(1), Message: "status 200", Details: map[string]string{"status_code": "200", "cert_expiry": "x"}},
	} {
		if _, ok := asPlain(r); ok {
			t.Errorf("asPlain accepted %v", r)
		}
	}
}
