package healthchecker

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// historySize is how many results a target keeps.
const historySize = 100

// target is one target at run time: its spec, its status, and the goroutine
// that checks it.
type target struct {
	spec     *hcv1.Target // immutable once the target runs; replaced by a new target on update
	cc       *compiledCheck
	grpcConn *grpc.ClientConn
	interval time.Duration
	timeout  time.Duration

	persistMu sync.Mutex // orders writes of this target to the store

	mu       sync.Mutex
	status   *hcv1.TargetStatus
	revision uint64
	history  history
	removed  bool

	loop      *loop // the running check loop, under Service.mu; nil when this replica does not check it
	heartbeat chan struct{}
}

// loop is one run of a target's check loop.
type loop struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newLoop() *loop { return &loop{stop: make(chan struct{}), done: make(chan struct{})} }

// halt stops the loop and waits for it.
func (l *loop) halt() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

func newTarget(spec *hcv1.Target, cc *compiledCheck, status *hcv1.TargetStatus, rev uint64) (*target, error) {
	t := &target{
		spec:      spec,
		cc:        cc,
		interval:  spec.GetInterval().AsDuration(),
		timeout:   spec.GetTimeout().AsDuration(),
		status:    status,
		revision:  rev,
		heartbeat: make(chan struct{}, 1),
	}
	if t.status == nil {
		t.status = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING}
	}
	if g := spec.GetGrpc(); g != nil {
		conn, err := newGRPCConn(g)
		if err != nil {
			return nil, err
		}
		t.grpcConn = conn
	}
	return t, nil
}

// view returns a copy of the spec with the current status, safe to hand out.
func (t *target) view() *hcv1.Target {
	out := proto.CloneOf(t.spec)
	t.mu.Lock()
	out.Status = proto.CloneOf(t.status)
	t.mu.Unlock()
	return out
}

// recent returns up to n results, newest first.
func (t *target) recent(n int) []*hcv1.CheckResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.history.recent(n)
}

// firstDue is when a newly started loop checks first: after the initial
// delay (counted from creation), plus jitter so targets started together
// spread over the interval.
func (t *target) firstDue(now time.Time) time.Time {
	start := now
	if ct := t.spec.GetCreateTime(); ct != nil {
		if due := ct.AsTime().Add(t.spec.GetInitialDelay().AsDuration()); due.After(start) {
			start = due
		}
	}
	jitterSpan := min(t.interval, 5*time.Second)
	return start.Add(time.Duration(rand.Int64N(int64(jitterSpan))))
}

// run checks the target on schedule until stopped or ctx (the ownership of
// its shard) ends.
func (s *Service) run(ctx context.Context, t *target, lp *loop) {
	defer close(lp.done)
	if t.spec.GetTtl() != nil {
		s.runTTL(ctx, t, lp)
		return
	}
	next := t.firstDue(time.Now())
	t.mu.Lock()
	t.status.NextCheckTime = timestamppb.New(next)
	t.mu.Unlock()
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lp.stop:
			return
		case <-timer.C:
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return
		case <-lp.stop:
			return
		}
		started := time.Now()
		lag := started.Sub(next)
		s.metrics.lag.Observe(lag.Seconds())
		if s.scheduleLag != nil {
			s.scheduleLag(lag)
		}
		res := s.probe(ctx, t)
		<-s.sem
		next = next.Add(t.interval)
		if now := time.Now(); next.Before(now) {
			// Overran: skip missed slots instead of bunching checks.
			missed := now.Sub(next)/t.interval + 1
			next = next.Add(missed * t.interval)
		}
		s.record(ctx, t, res, next)
		timer.Reset(time.Until(next))
	}
}

// runTTL fails the target whenever no heartbeat arrived within its TTL.
func (s *Service) runTTL(ctx context.Context, t *target, lp *loop) {
	ttl := t.spec.GetTtl().GetTtl().AsDuration()
	first := time.Now().Add(ttl)
	if ct := t.spec.GetCreateTime(); ct != nil {
		if due := ct.AsTime().Add(t.spec.GetInitialDelay().AsDuration() + ttl); due.After(first) {
			first = due
		}
	}
	timer := time.NewTimer(time.Until(first))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lp.stop:
			return
		case <-t.heartbeat:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(ttl)
		case fired := <-timer.C:
			res := result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, fired, "no heartbeat within ttl "+ttl.String(), nil)
			res.ResponseTime = nil
			s.record(ctx, t, res, fired.Add(ttl))
			timer.Reset(ttl)
		}
	}
}

// probe runs the target's check once, bounded by its timeout.
func (s *Service) probe(ctx context.Context, t *target) *hcv1.CheckResult {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var res *hcv1.CheckResult
	switch c := t.spec.GetCheck().(type) {
	case *hcv1.Target_Http:
		res = s.prober.probeHTTP(ctx, c.Http, t.cc)
	case *hcv1.Target_Tcp:
		res = probeTCP(ctx, c.Tcp)
	case *hcv1.Target_Grpc:
		res = probeGRPC(ctx, t.grpcConn, c.Grpc)
	case *hcv1.Target_Exec:
		res = probeExec(ctx, c.Exec)
	default:
		res = result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, time.Now(), "target has no runnable check", nil)
	}
	s.metrics.checked(checkKind(t.spec), res.GetOutcome())
	return res
}

func checkKind(t *hcv1.Target) string {
	switch t.GetCheck().(type) {
	case *hcv1.Target_Http:
		return "http"
	case *hcv1.Target_Tcp:
		return "tcp"
	case *hcv1.Target_Grpc:
		return "grpc"
	case *hcv1.Target_Exec:
		return "exec"
	case *hcv1.Target_Ttl:
		return "ttl"
	}
	return "none"
}

// record applies a result to the target and, on a state change, persists
// the new status, publishes the transition and tells watchers.
func (s *Service) record(ctx context.Context, t *target, res *hcv1.CheckResult, next time.Time) {
	t.mu.Lock()
	if t.removed {
		t.mu.Unlock()
		return
	}
	prev := t.status.GetState()
	changed := applyResult(t.status, t.spec.GetFailureThreshold(), t.spec.GetSuccessThreshold(), res)
	if !next.IsZero() {
		// In place: the status is only handed out as a copy (view).
		if ts := t.status.NextCheckTime; ts != nil {
			ts.Seconds, ts.Nanos = next.Unix(), int32(next.Nanosecond())
		} else {
			t.status.NextCheckTime = timestamppb.New(next)
		}
	}
	t.history.push(res)
	state := t.status.GetState()
	t.mu.Unlock()
	if !changed {
		return
	}
	tr := &hcv1.TargetTransition{
		Name:          t.spec.GetName(),
		Group:         t.spec.GetGroup(),
		Labels:        t.spec.GetLabels(),
		NonCritical:   t.spec.GetNonCritical(),
		PreviousState: prev,
		State:         state,
		Result:        res,
		Time:          res.GetTime(),
	}
	s.transition(ctx, t, tr, res)
}
