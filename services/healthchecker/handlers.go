package healthchecker

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

func sortTargets(ts []*target) {
	slices.SortFunc(ts, func(a, b *target) int { return strings.Compare(a.spec.GetName(), b.spec.GetName()) })
}

// CreateTarget validates, stores and starts checking a new target.
func (s *Service) CreateTarget(ctx context.Context, req *hcv1.CreateTargetRequest) (*hcv1.CreateTargetResponse, error) {
	t, err := s.create(ctx, req.GetTarget())
	if err != nil {
		return nil, toStatus(err)
	}
	return &hcv1.CreateTargetResponse{Target: t}, nil
}

func (s *Service) create(ctx context.Context, in *hcv1.Target) (*hcv1.Target, error) {
	if !s.ready.Load() {
		return nil, ErrNotReady
	}
	spec := proto.CloneOf(in)
	cc, err := normalize(spec)
	if err != nil {
		return nil, err
	}
	now := timestamppb.Now()
	spec.CreateTime, spec.UpdateTime = now, now
	stored := proto.CloneOf(spec)
	stored.Status = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING, LastTransitionTime: now}
	// The store decides who wins a race for the name.
	rev, err := s.store.create(ctx, stored)
	if err != nil {
		return nil, err
	}
	t, err := newTarget(spec, cc, stored.Status, rev)
	if err != nil {
		_ = s.store.delete(ctx, spec.GetName())
		return nil, err
	}
	s.mu.Lock()
	s.startLocked(t)
	s.mu.Unlock()
	s.publishRegistered(ctx, t)
	s.log.Info("target created", "target", spec.GetName(), "group", spec.GetGroup(), "kind", checkKind(spec))
	return t.view(), nil
}

func (s *Service) publishRegistered(ctx context.Context, t *target) {
	if _, err := s.events.Publish(ctx, eventbus.Event{
		Type: EventTargetRegistered, Subject: t.spec.GetName(),
		Data: &eventsv1.HealthTargetRegistered{Target: t.view()},
	}); err != nil {
		s.log.Warn("publish target registered", "target", t.spec.GetName(), "err", err)
	}
}

// GetTarget returns one target with its status.
func (s *Service) GetTarget(_ context.Context, req *hcv1.GetTargetRequest) (*hcv1.GetTargetResponse, error) {
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &hcv1.GetTargetResponse{Target: t.view()}, nil
}

// ListTargets pages through targets ordered by name.
func (s *Service) ListTargets(_ context.Context, req *hcv1.ListTargetsRequest) (*hcv1.ListTargetsResponse, error) {
	if !s.ready.Load() {
		return nil, toStatus(ErrNotReady)
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size: must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 {
			return nil, status.Error(codes.InvalidArgument, "page_token: not a token from a previous response")
		}
		after = string(b)
	}
	all := s.snapshot(req.GetGroup())
	start, _ := slices.BinarySearchFunc(all, after, func(t *target, name string) int { return strings.Compare(t.spec.GetName(), name) })
	if after != "" && start < len(all) && all[start].spec.GetName() == after {
		start++
	}
	resp := &hcv1.ListTargetsResponse{}
	for _, t := range all[start:] {
		if len(resp.Targets) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(resp.Targets[len(resp.Targets)-1].GetName()))
			break
		}
		resp.Targets = append(resp.Targets, t.view())
	}
	return resp, nil
}

// settableFields are the top-level Target fields an update may change.
var settableFields = []string{"group", "non_critical", "labels", "interval", "timeout", "initial_delay",
	"failure_threshold", "success_threshold", "http", "tcp", "grpc", "exec", "ttl"}

// UpdateTarget changes a target. The status is kept unless the check itself changed.
func (s *Service) UpdateTarget(ctx context.Context, req *hcv1.UpdateTargetRequest) (*hcv1.UpdateTargetResponse, error) {
	t, err := s.update(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &hcv1.UpdateTargetResponse{Target: t}, nil
}

func (s *Service) update(ctx context.Context, req *hcv1.UpdateTargetRequest) (*hcv1.Target, error) {
	if req.GetTarget() == nil {
		return nil, &ValidationError{Subject: "target", Fields: []*FieldError{{Field: "target", Reason: "is required"}}}
	}
	old, err := s.lookup(req.GetTarget().GetName())
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = settableFields
	}
	for _, p := range paths {
		if !slices.Contains(settableFields, strings.SplitN(p, ".", 2)[0]) {
			return nil, &ValidationError{Subject: "target", Fields: []*FieldError{{Field: "update_mask", Reason: fmt.Sprintf("%q cannot be updated; settable: %s", p, strings.Join(settableFields, ", "))}}}
		}
	}
	spec := proto.CloneOf(old.spec)
	if err := applyMask(spec.ProtoReflect(), req.GetTarget().ProtoReflect(), paths); err != nil {
		return nil, &ValidationError{Subject: "target", Fields: []*FieldError{{Field: "update_mask", Reason: err.Error()}}}
	}
	created := spec.GetCreateTime()
	cc, err := normalize(spec)
	if err != nil {
		return nil, err
	}
	spec.CreateTime, spec.UpdateTime = created, timestamppb.Now()

	// Holding persistMu keeps the old loop from writing a transition between
	// reading the revision and replacing the entry.
	old.persistMu.Lock()
	old.mu.Lock()
	st := proto.CloneOf(old.status)
	rev := old.revision
	old.mu.Unlock()
	checkChanged := !proto.Equal(checkOf(spec), checkOf(old.spec))
	if checkChanged {
		st = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING, LastTransitionTime: spec.UpdateTime}
	}
	stored := proto.CloneOf(spec)
	stored.Status = st
	newRev, err := s.store.update(ctx, stored, rev)
	if err == nil {
		old.mu.Lock()
		old.removed = true // its loop must not write over the new entry
		old.mu.Unlock()
	}
	old.persistMu.Unlock()
	if err != nil {
		return nil, err
	}
	nt, err := newTarget(spec, cc, st, newRev)
	if err != nil {
		return nil, err
	}
	if !checkChanged {
		old.mu.Lock()
		nt.history = old.history.clone()
		old.mu.Unlock()
	}
	s.stopTarget(old)
	s.mu.Lock()
	s.startLocked(nt)
	s.mu.Unlock()
	if checkChanged {
		s.publishRegistered(ctx, nt)
	}
	return nt.view(), nil
}

func checkOf(t *hcv1.Target) *hcv1.Target {
	return &hcv1.Target{Check: t.GetCheck(), Timeout: t.GetTimeout()}
}

// DeleteTarget stops and forgets a target.
func (s *Service) DeleteTarget(ctx context.Context, req *hcv1.DeleteTargetRequest) (*hcv1.DeleteTargetResponse, error) {
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.store.delete(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	if s.targets[req.GetName()] == t {
		delete(s.targets, req.GetName())
	}
	s.mu.Unlock()
	s.stopTarget(t)
	if _, err := s.events.Publish(ctx, eventbus.Event{
		Type: EventTargetRemoved, Subject: t.spec.GetName(),
		Data: &eventsv1.HealthTargetRemoved{Name: t.spec.GetName(), Group: t.spec.GetGroup()},
	}); err != nil {
		s.log.Warn("publish target removed", "target", t.spec.GetName(), "err", err)
	}
	s.log.Info("target deleted", "target", req.GetName())
	return &hcv1.DeleteTargetResponse{}, nil
}

// ListResults returns recent results, newest first.
func (s *Service) ListResults(_ context.Context, req *hcv1.ListResultsRequest) (*hcv1.ListResultsResponse, error) {
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	n := int(req.GetPageSize())
	if n < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must not be negative")
	}
	if n == 0 || n > historySize {
		n = historySize
	}
	return &hcv1.ListResultsResponse{Results: t.recent(n)}, nil
}

// RunChecks checks the selected targets now and returns their statuses.
func (s *Service) RunChecks(ctx context.Context, req *hcv1.RunChecksRequest) (*hcv1.RunChecksResponse, error) {
	if !s.ready.Load() {
		return nil, toStatus(ErrNotReady)
	}
	var sel []*target
	if len(req.GetNames()) > 0 {
		for _, n := range req.GetNames() {
			t, err := s.lookup(n)
			if err != nil {
				return nil, toStatus(err)
			}
			if req.GetGroup() == "" || t.spec.GetGroup() == req.GetGroup() {
				sel = append(sel, t)
			}
		}
		sortTargets(sel)
	} else {
		sel = s.snapshot(req.GetGroup())
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cap(s.sem))
	for _, t := range sel {
		if t.spec.GetTtl() != nil {
			continue // nothing to run: a TTL target is judged by its heartbeats
		}
		g.Go(func() error {
			s.record(gctx, t, s.probe(gctx, t), time.Time{})
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	resp := &hcv1.RunChecksResponse{Targets: make([]*hcv1.Target, len(sel))}
	for i, t := range sel {
		resp.Targets[i] = t.view()
	}
	return resp, nil
}

// Heartbeat records a result pushed by a TTL target.
func (s *Service) Heartbeat(ctx context.Context, req *hcv1.HeartbeatRequest) (*hcv1.HeartbeatResponse, error) {
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	if t.spec.GetTtl() == nil {
		return nil, toStatus(fmt.Errorf("%w: %q has a %s check", ErrNotTTL, req.GetName(), checkKind(t.spec)))
	}
	outcome := req.GetOutcome()
	if outcome == hcv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED {
		outcome = hcv1.CheckOutcome_CHECK_OUTCOME_PASS
	}
	if _, ok := hcv1.CheckOutcome_name[int32(outcome)]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "outcome: unknown value %d", outcome)
	}
	if len(req.GetMessage()) > maxPatternLen {
		return nil, status.Errorf(codes.InvalidArgument, "message: at most %d bytes", maxPatternLen)
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = "heartbeat"
	}
	now := time.Now()
	res := result(outcome, now, msg, nil)
	res.ResponseTime = nil
	s.metrics.checked("ttl", outcome)
	s.record(ctx, t, res, now.Add(t.spec.GetTtl().GetTtl().AsDuration()))
	select {
	case t.heartbeat <- struct{}{}:
	default:
	}
	return &hcv1.HeartbeatResponse{Target: t.view()}, nil
}

// GetHealth rolls up target states.
func (s *Service) GetHealth(_ context.Context, req *hcv1.GetHealthRequest) (*hcv1.GetHealthResponse, error) {
	if !s.ready.Load() {
		return nil, toStatus(ErrNotReady)
	}
	ts := s.snapshot(req.GetGroup())
	views := make([]*hcv1.Target, len(ts))
	for i, t := range ts {
		views[i] = t.view()
	}
	return rollUp(views), nil
}

// Watch streams transitions until the client goes away.
func (s *Service) Watch(req *hcv1.WatchRequest, stream hcv1.HealthCheckerService_WatchServer) error {
	if !s.ready.Load() {
		return toStatus(ErrNotReady)
	}
	w := s.hub.subscribe(req.GetGroup(), req.GetNames())
	defer s.hub.unsubscribe(w)
	// Tell clients (and the gateway) the stream is open before the first transition.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	if req.GetInitialState() {
		for _, t := range s.snapshot(req.GetGroup()) {
			v := t.view()
			tr := &hcv1.TargetTransition{
				Name: v.GetName(), Group: v.GetGroup(), Labels: v.GetLabels(), NonCritical: v.GetNonCritical(),
				PreviousState: v.GetStatus().GetState(), State: v.GetStatus().GetState(),
				Result: v.GetStatus().GetLastResult(), Time: v.GetStatus().GetLastTransitionTime(),
			}
			if !w.wants(tr) {
				continue
			}
			if err := stream.Send(&hcv1.WatchResponse{Transition: tr}); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.draining:
			return status.Error(codes.Unavailable, "health-checker is shutting down; watch again after it restarts")
		case <-w.dropped:
			return status.Error(codes.ResourceExhausted, "watcher fell too far behind; watch again with initial_state to resync")
		case tr := <-w.ch:
			if err := stream.Send(&hcv1.WatchResponse{Transition: tr}); err != nil {
				return err
			}
		}
	}
}
