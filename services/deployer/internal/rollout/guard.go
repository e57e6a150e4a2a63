package rollout

import (
	"context"
	"fmt"
	"time"
)

// ErrorGuard watches the new revision's requests while a rollout runs and
// trips when too many fail, so a revision that passes its health check but
// answers 5xx is rolled back instead of promoted.
type ErrorGuard struct {
	// Counts returns cumulative requests and failed requests the router saw
	// for a revision.
	Counts func(rev int64) (requests, errors uint64)
	// MaxErrorRatio trips the guard when exceeded; default 0.05.
	MaxErrorRatio float64
	// MinRequests is how many requests the ratio needs first; default 20.
	MinRequests uint64
	// Interval between looks; default 250ms.
	Interval time.Duration
}

// GuardTripped is the cause a tripped guard cancels the rollout's step with.
type GuardTripped struct {
	Requests, Errors uint64
	Ratio, Max       float64
}

func (g *GuardTripped) Error() string {
	return fmt.Sprintf("the new revision failed %d of %d requests (%.1f%%, over the %.1f%% allowed)",
		g.Errors, g.Requests, 100*g.Ratio, 100*g.Max)
}

// watch polls until ctx ends, calling trip once if the guard trips. It
// counts only requests after it starts.
func (g *ErrorGuard) watch(ctx context.Context, rev int64, trip func(error)) {
	maxRatio := g.MaxErrorRatio
	if maxRatio <= 0 {
		maxRatio = 0.05
	}
	minReq := g.MinRequests
	if minReq == 0 {
		minReq = 20
	}
	interval := g.Interval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	baseReq, baseErr := g.Counts(rev)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req, errs := g.Counts(rev)
		req, errs = req-baseReq, errs-baseErr
		if req < minReq {
			continue
		}
		if ratio := float64(errs) / float64(req); ratio > maxRatio {
			trip(&GuardTripped{Requests: req, Errors: errs, Ratio: ratio, Max: maxRatio})
			return
		}
	}
}
