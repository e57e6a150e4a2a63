package healthchecker

import (
	"slices"
	"strconv"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// history is a target's last historySize results in a ring. Most results
// are plain HTTP answers (message "status N", details exactly
// {status_code: N}); those keep only values, in a slice without pointers,
// so the histories of thousands of targets add next to nothing for the
// garbage collector to scan (docs/benchmarks.md). Other results are kept
// as they are.
type history struct {
	plain []plainResult       // ring; allocated on first push
	other []*hcv1.CheckResult // ring slots holding results that are not plain; nil until one is
	next  int                 // slot of the next push
	n     int                 // results held
}

type plainResult struct {
	at      int64 // unix nanoseconds
	took    int64 // response time, nanoseconds
	outcome hcv1.CheckOutcome
	code    int32 // HTTP status
}

func (h *history) push(r *hcv1.CheckResult) {
	if h.plain == nil {
		h.plain = make([]plainResult, historySize)
	}
	i := h.next
	if p, ok := asPlain(r); ok {
		h.plain[i] = p
		if h.other != nil {
			h.other[i] = nil
		}
	} else {
		if h.other == nil {
			h.other = make([]*hcv1.CheckResult, historySize)
		}
		h.other[i] = r
	}
	h.next = (i + 1) % historySize
	h.n = min(h.n+1, historySize)
}

// recent returns up to n results, newest first.
func (h *history) recent(n int) []*hcv1.CheckResult {
	out := make([]*hcv1.CheckResult, 0, min(n, h.n))
	for k := 0; k < h.n && len(out) < n; k++ {
		i := (h.next - 1 - k + historySize) % historySize
		if h.other != nil && h.other[i] != nil {
			out = append(out, h.other[i])
			continue
		}
		out = append(out, h.plain[i].result())
	}
	return out
}

func (h *history) clone() history {
	return history{plain: slices.Clone(h.plain), other: slices.Clone(h.other), next: h.next, n: h.n}
}

// asPlain returns r's compact form if r is a plain HTTP result.
func asPlain(r *hcv1.CheckResult) (plainResult, bool) {
	d := r.GetDetails()
	if len(d) != 1 || r.GetTime() == nil || r.GetResponseTime() == nil {
		return plainResult{}, false
	}
	code, ok := d["status_code"]
	if !ok || r.GetMessage() != "status "+code {
		return plainResult{}, false
	}
	c, err := strconv.Atoi(code)
	if err != nil || c < 100 || c > 999 || strconv.Itoa(c) != code {
		return plainResult{}, false
	}
	return plainResult{
		at:      r.GetTime().AsTime().UnixNano(),
		took:    int64(r.GetResponseTime().AsDuration()),
		outcome: r.GetOutcome(),
		code:    int32(c),
	}, true
}

func (p plainResult) result() *hcv1.CheckResult {
	code := strconv.Itoa(int(p.code))
	return &hcv1.CheckResult{
		Outcome:      p.outcome,
		Time:         timestamppb.New(time.Unix(0, p.at)),
		ResponseTime: durationpb.New(time.Duration(p.took)),
		Message:      "status " + code,
		Details:      map[string]string{"status_code": code},
	}
}
