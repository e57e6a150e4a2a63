package healthchecker

// Replicas. Every replica mirrors every target from the targets bucket (a
// KV watch), so reads, ListTargets, GetHealth and Watch work on any of them.
// Checking is split: targets are spread over shards by name
// (lease.ShardOf), the replicas share the shards through leases
// (lease.Shards), and only the holder of a target's shard runs its loop,
// persists its transitions and publishes them. Other replicas learn of a
// transition from the bucket and tell their own watchers. Calls that need
// the checking replica (Heartbeat, RunChecks, ListResults and a fresh
// GetTarget) are forwarded to it over NATS request-reply on the shard's
// subject, which only the shard's holder subscribes to.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/lease"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Forwarding over NATS.
const (
	forwardSubjectPrefix = "opsuite.internal.healthchecker.shard."
	methodHeader         = "Opsuite-Method"
	errorHeader          = "Opsuite-Error"
	// forwardTimeout bounds one forwarded call.
	forwardTimeout = 30 * time.Second
	// handoverWait is how long a forwarded write waits for a shard that
	// has no holder (changing hands) before giving up.
	handoverWait = 5 * time.Second
)

// errNotHere: this replica does not check the target (any more).
var errNotHere = errors.New("target is checked by another replica")

func (s *Service) shardOf(name string) int { return lease.ShardOf(name, s.cfg.Shards) }

// checksHere reports whether this replica holds the shard of the target
// named name.
func (s *Service) checksHere(name string) bool {
	s.mu.RLock()
	ctx, ok := s.owned[s.shardOf(name)]
	s.mu.RUnlock()
	return ok && ctx.Err() == nil
}

// runShard is the Work of one shard: check its targets until ctx ends, and
// answer forwarded calls about them.
func (s *Service) runShard(ctx context.Context, n int) {
	sub, err := s.nc.Subscribe(forwardSubjectPrefix+strconv.Itoa(n), s.serveForwarded)
	if err != nil {
		s.log.Warn("answer forwarded calls", "shard", n, "err", err)
	}
	s.mu.Lock()
	s.owned[n] = ctx
	count := 0
	for name, t := range s.targets {
		if s.shardOf(name) == n {
			s.startLoopLocked(ctx, t)
			count++
		}
	}
	s.mu.Unlock()
	s.log.Debug("checking shard", "shard", n, "targets", count)

	<-ctx.Done()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	s.mu.Lock()
	delete(s.owned, n)
	var loops []*loop
	for name, t := range s.targets {
		if t.loop != nil && s.shardOf(name) == n {
			loops = append(loops, t.loop)
			t.loop = nil
		}
	}
	s.mu.Unlock()
	for _, lp := range loops {
		lp.halt()
	}
	s.log.Debug("shard handed over", "shard", n)
}

// startLoopLocked starts t's check loop under ctx (its shard's ownership)
// unless it runs; s.mu must be held.
func (s *Service) startLoopLocked(ctx context.Context, t *target) {
	if t.loop != nil {
		return
	}
	t.mu.Lock()
	removed := t.removed
	t.mu.Unlock()
	if removed {
		return
	}
	lp := newLoop()
	t.loop = lp
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		s.run(ctx, t, lp)
	}()
}

// maybeStartLocked starts t's loop when this replica holds its shard; s.mu
// must be held.
func (s *Service) maybeStartLocked(t *target) {
	if ctx, ok := s.owned[s.shardOf(t.spec.GetName())]; ok && ctx.Err() == nil {
		s.startLoopLocked(ctx, t)
	}
}

// apply mirrors one change of the bucket: a target created, changed or
// removed (by any replica), or a new status written by the replica that
// checks it.
func (s *Service) apply(e jetstream.KeyValueEntry) {
	name := e.Key()
	s.mu.RLock()
	old := s.targets[name]
	s.mu.RUnlock()
	if e.Operation() != jetstream.KeyValuePut {
		if old == nil {
			return
		}
		s.mu.Lock()
		if s.targets[name] == old {
			delete(s.targets, name)
		}
		s.mu.Unlock()
		s.stopTarget(old)
		return
	}
	stored := &hcv1.Target{}
	if err := proto.Unmarshal(e.Value(), stored); err != nil {
		s.log.Error("stored target does not decode; skipped", "target", name, "err", err)
		return
	}
	spec := proto.CloneOf(stored)
	spec.Status = nil
	if old != nil {
		old.persistMu.Lock()
		old.mu.Lock()
		known := old.revision
		old.mu.Unlock()
		if e.Revision() <= known {
			old.persistMu.Unlock()
			return // written by this replica, already applied
		}
		if proto.Equal(spec, old.spec) {
			s.adoptStatus(old, stored.GetStatus(), e.Revision())
			old.persistMu.Unlock()
			return
		}
		old.persistMu.Unlock()
	}
	cc, err := normalize(proto.CloneOf(spec))
	if err != nil {
		s.log.Error("stored target no longer valid; skipped", "target", name, "err", err)
		return
	}
	status := stored.GetStatus()
	if status == nil {
		status = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING}
	}
	nt, err := newTarget(spec, cc, status, e.Revision())
	if err != nil {
		s.log.Error("restore target", "target", name, "err", err)
		return
	}
	if old != nil {
		if proto.Equal(checkOf(spec), checkOf(old.spec)) {
			old.mu.Lock()
			nt.history = old.history.clone()
			old.mu.Unlock()
		}
		s.stopTarget(old)
	}
	s.mu.Lock()
	s.targets[name] = nt
	s.maybeStartLocked(nt)
	s.mu.Unlock()
}

// adoptStatus takes a status another replica stored for t and tells this
// replica's watchers when its state changed. t.persistMu must be held.
func (s *Service) adoptStatus(t *target, st *hcv1.TargetStatus, rev uint64) {
	if st == nil {
		return
	}
	st = proto.CloneOf(st)
	t.mu.Lock()
	prev := t.status.GetState()
	if st.NextCheckTime == nil {
		st.NextCheckTime = t.status.GetNextCheckTime()
	}
	t.status = st
	t.revision = rev
	t.mu.Unlock()
	if st.GetState() == prev {
		return
	}
	s.hub.publish(&hcv1.TargetTransition{
		Name: t.spec.GetName(), Group: t.spec.GetGroup(), Labels: t.spec.GetLabels(), NonCritical: t.spec.GetNonCritical(),
		PreviousState: prev, State: st.GetState(), Result: st.GetLastResult(), Time: st.GetLastTransitionTime(),
	})
}

// waitApplied waits until done holds, looking again each time the mirror
// applies a change, so a call reads its own writes; it gives up after a
// while (the write itself succeeded).
func (s *Service) waitApplied(ctx context.Context, done func() bool) {
	s.mu.RLock()
	m := s.mirror
	s.mu.RUnlock()
	if m == nil {
		return
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := m.Changed()
		if done() {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-deadline.C:
			s.log.Warn("target mirror lags behind the bucket")
			return
		}
	}
}

// waitKnown waits a little for a target another replica just created to
// reach this replica's mirror (a call forwarded right after the create).
func (s *Service) waitKnown(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s.waitApplied(ctx, func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		_, ok := s.targets[name]
		return ok
	})
}

// waitRevision waits until the mirror reached revision rev.
func (s *Service) waitRevision(ctx context.Context, rev uint64) {
	s.mu.RLock()
	m := s.mirror
	s.mu.RUnlock()
	s.waitApplied(ctx, func() bool { return m.Applied() >= rev })
}

// forwarded is one call another replica forwarded: its method and request.
type forwardedCall func(ctx context.Context, data []byte) (proto.Message, error)

// forwardable are the calls a replica answers for the targets it checks.
func (s *Service) forwardable(method string) forwardedCall {
	switch method {
	case "Heartbeat":
		return func(ctx context.Context, data []byte) (proto.Message, error) {
			req := &hcv1.HeartbeatRequest{}
			if err := proto.Unmarshal(data, req); err != nil {
				return nil, err
			}
			s.waitKnown(ctx, req.GetName())
			return s.heartbeatHere(ctx, req)
		}
	case "RunCheck":
		return func(ctx context.Context, data []byte) (proto.Message, error) {
			req := &hcv1.GetTargetRequest{}
			if err := proto.Unmarshal(data, req); err != nil {
				return nil, err
			}
			s.waitKnown(ctx, req.GetName())
			return s.runCheckHere(ctx, req.GetName())
		}
	case "ListResults":
		return func(ctx context.Context, data []byte) (proto.Message, error) {
			req := &hcv1.ListResultsRequest{}
			if err := proto.Unmarshal(data, req); err != nil {
				return nil, err
			}
			s.waitKnown(ctx, req.GetName())
			return s.listResultsHere(req)
		}
	case "GetTarget":
		return func(ctx context.Context, data []byte) (proto.Message, error) {
			req := &hcv1.GetTargetRequest{}
			if err := proto.Unmarshal(data, req); err != nil {
				return nil, err
			}
			if !s.checksHere(req.GetName()) {
				return nil, errNotHere
			}
			s.waitKnown(ctx, req.GetName())
			t, err := s.lookup(req.GetName())
			if err != nil {
				return nil, err
			}
			return &hcv1.GetTargetResponse{Target: t.view()}, nil
		}
	}
	return nil
}

// serveForwarded answers a call forwarded by another replica.
func (s *Service) serveForwarded(m *nats.Msg) {
	call := s.forwardable(m.Header.Get(methodHeader))
	go func() {
		ctx, cancel := context.WithTimeout(s.runCtx, forwardTimeout)
		defer cancel()
		reply := nats.NewMsg(m.Reply)
		var resp proto.Message
		err := fmt.Errorf("unknown forwarded method %q", m.Header.Get(methodHeader))
		if call != nil {
			resp, err = call(ctx, m.Data)
		}
		if errors.Is(err, errNotHere) {
			err = status.Error(codes.Unavailable, errNotHere.Error())
		}
		if err != nil {
			reply.Header.Set(errorHeader, "1")
			reply.Data, _ = proto.Marshal(status.Convert(toStatus(err)).Proto())
		} else {
			reply.Data, _ = proto.Marshal(resp)
		}
		if err := m.RespondMsg(reply); err != nil {
			s.log.Debug("answer forwarded call", "err", err)
		}
	}()
}

// forward asks the replica checking the target named name to answer
// method. With wait, a target whose shard has no holder right now (being
// handed over) is asked again for a while; without, errNotHere says so at
// once.
func (s *Service) forward(ctx context.Context, name, method string, req, resp proto.Message, wait bool) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	subject := forwardSubjectPrefix + strconv.Itoa(s.shardOf(name))
	deadline := time.Now().Add(handoverWait)
	for {
		m := nats.NewMsg(subject)
		m.Header.Set(methodHeader, method)
		m.Data = data
		rctx, cancel := context.WithTimeout(ctx, forwardTimeout)
		reply, err := s.nc.RequestMsgWithContext(rctx, m)
		cancel()
		handover := false
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			handover = true
		case err != nil:
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Unavailable, "ask the replica checking %q: %v", name, err)
		case reply.Header.Get(errorHeader) != "":
			st := &spb.Status{}
			if err := proto.Unmarshal(reply.Data, st); err != nil {
				return status.Errorf(codes.Internal, "decode forwarded error: %v", err)
			}
			if codes.Code(st.GetCode()) != codes.Unavailable || st.GetMessage() != errNotHere.Error() {
				return status.FromProto(st).Err()
			}
			handover = true
		default:
			return proto.Unmarshal(reply.Data, resp)
		}
		if handover && !wait {
			return errNotHere
		}
		if time.Now().After(deadline) {
			return status.Errorf(codes.Unavailable, "no replica checks target %q right now (its shard is changing hands); retry", name)
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(100 * time.Millisecond):
		}
		if s.checksHere(name) {
			return errHereNow
		}
	}
}

// errHereNow: while forwarding, this replica took the target's shard.
var errHereNow = errors.New("target is checked here now")
