package healthchecker

import (
	"context"
	"encoding/base64"
	"errors"
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
	if _, err := normalize(spec); err != nil {
		return nil, err
	}
	now := timestamppb.Now()
	spec.CreateTime, spec.UpdateTime = now, now
	stored := proto.CloneOf(spec)
	stored.Status = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING, LastTransitionTime: now}
	// The store decides who wins a race for the name; the replica holding
	// the target's shard starts checking it when its mirror sees it.
	rev, err := s.store.create(ctx, stored)
	if err != nil {
		return nil, err
	}
	// Answer with what this replica's mirror holds once it has caught up;
	// the record is durable either way, so a mirror that lags (a NATS
	// server lost under its watch) answers with what was stored.
	s.waitRevision(ctx, rev)
	view := stored
	if t, err := s.lookup(spec.GetName()); err == nil {
		view = t.view()
	}
	s.publishRegistered(ctx, view)
	s.log.Info("target created", "target", spec.GetName(), "group", spec.GetGroup(), "kind", checkKind(spec))
	return view, nil
}

func (s *Service) publishRegistered(ctx context.Context, view *hcv1.Target) {
	if _, err := s.events.Publish(ctx, eventbus.Event{
		Type: EventTargetRegistered, Subject: view.GetName(),
		Data: &eventsv1.HealthTargetRegistered{Target: view},
	}); err != nil {
		s.log.Warn("publish target registered", "target", view.GetName(), "err", err)
	}
}

// GetTarget returns one target with its status: as the replica checking it
// knows it, or as last stored when that replica does not answer.
func (s *Service) GetTarget(ctx context.Context, req *hcv1.GetTargetRequest) (*hcv1.GetTargetResponse, error) {
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	if !s.checksHere(req.GetName()) {
		resp := &hcv1.GetTargetResponse{}
		if err := s.forward(ctx, req.GetName(), "GetTarget", req, resp, false); err == nil {
			return resp, nil
		}
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
	name := req.GetTarget().GetName()
	if _, err := s.lookup(name); err != nil {
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
	// Read, change, write with the revision read; the replica checking the
	// target may write a transition in between, then read again.
	for attempt := 0; ; attempt++ {
		stored, rev, err := s.store.get(ctx, name)
		if err != nil {
			return nil, err
		}
		oldSpec := proto.CloneOf(stored)
		oldSpec.Status = nil
		spec := proto.CloneOf(oldSpec)
		if err := applyMask(spec.ProtoReflect(), req.GetTarget().ProtoReflect(), paths); err != nil {
			return nil, &ValidationError{Subject: "target", Fields: []*FieldError{{Field: "update_mask", Reason: err.Error()}}}
		}
		created := spec.GetCreateTime()
		if _, err := normalize(spec); err != nil {
			return nil, err
		}
		spec.CreateTime, spec.UpdateTime = created, timestamppb.Now()
		st := stored.GetStatus()
		checkChanged := !proto.Equal(checkOf(spec), checkOf(oldSpec))
		if checkChanged {
			st = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_PENDING, LastTransitionTime: spec.UpdateTime}
		}
		next := proto.CloneOf(spec)
		next.Status = st
		newRev, err := s.store.update(ctx, next, rev)
		if errors.Is(err, ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.waitRevision(ctx, newRev)
		view := next
		if t, err := s.lookup(name); err == nil {
			view = t.view()
		}
		if checkChanged {
			s.publishRegistered(ctx, view)
		}
		return view, nil
	}
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
	// Every replica's mirror drops it; the one checking it stops.
	s.waitApplied(ctx, func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		_, ok := s.targets[req.GetName()]
		return !ok
	})
	if _, err := s.events.Publish(ctx, eventbus.Event{
		Type: EventTargetRemoved, Subject: t.spec.GetName(),
		Data: &eventsv1.HealthTargetRemoved{Name: t.spec.GetName(), Group: t.spec.GetGroup()},
	}); err != nil {
		s.log.Warn("publish target removed", "target", t.spec.GetName(), "err", err)
	}
	s.log.Info("target deleted", "target", req.GetName())
	return &hcv1.DeleteTargetResponse{}, nil
}

// ListResults returns recent results, newest first. The history is kept
// by the replica checking the target; another answers with what it kept
// while it checked it when that one does not answer.
func (s *Service) ListResults(ctx context.Context, req *hcv1.ListResultsRequest) (*hcv1.ListResultsResponse, error) {
	if _, err := s.lookup(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must not be negative")
	}
	if !s.checksHere(req.GetName()) {
		resp := &hcv1.ListResultsResponse{}
		if err := s.forward(ctx, req.GetName(), "ListResults", req, resp, false); err == nil {
			return resp, nil
		}
	}
	resp, err := s.listResults(req)
	return resp, toStatus(err)
}

// listResultsHere answers ListResults for a target this replica checks.
func (s *Service) listResultsHere(req *hcv1.ListResultsRequest) (*hcv1.ListResultsResponse, error) {
	if !s.checksHere(req.GetName()) {
		return nil, errNotHere
	}
	return s.listResults(req)
}

func (s *Service) listResults(req *hcv1.ListResultsRequest) (*hcv1.ListResultsResponse, error) {
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, err
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
	resp := &hcv1.RunChecksResponse{Targets: make([]*hcv1.Target, len(sel))}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cap(s.sem))
	for i, t := range sel {
		if t.spec.GetTtl() != nil {
			resp.Targets[i] = t.view()
			continue // nothing to run: a TTL target is judged by its heartbeats
		}
		g.Go(func() error {
			// Run by the replica checking the target, so its state
			// follows one sequence of results.
			name := t.spec.GetName()
			r, err := onChecker(s, gctx, name, "RunCheck", &hcv1.GetTargetRequest{Name: name}, &hcv1.GetTargetResponse{},
				func() (*hcv1.GetTargetResponse, error) { return s.runCheckHere(gctx, name) })
			if err != nil {
				return err
			}
			resp.Targets[i] = r.GetTarget()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, toStatus(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return resp, nil
}

// runCheckHere checks a target this replica checks now.
func (s *Service) runCheckHere(ctx context.Context, name string) (*hcv1.GetTargetResponse, error) {
	if !s.checksHere(name) {
		return nil, errNotHere
	}
	t, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	if t.spec.GetTtl() == nil {
		s.record(ctx, t, s.probe(ctx, t), time.Time{})
	}
	return &hcv1.GetTargetResponse{Target: t.view()}, nil
}

// onChecker runs here when this replica checks the target named name, else
// asks the replica that does, waiting for a shard being handed over.
func onChecker[R proto.Message](s *Service, ctx context.Context, name, method string, req proto.Message, resp R, here func() (R, error)) (R, error) {
	for {
		if s.checksHere(name) {
			r, err := here()
			if !errors.Is(err, errNotHere) {
				return r, err
			}
		}
		err := s.forward(ctx, name, method, req, resp, true)
		if errors.Is(err, errHereNow) {
			continue
		}
		return resp, err
	}
}

// Heartbeat records a result pushed by a TTL target, at the replica
// checking it.
func (s *Service) Heartbeat(ctx context.Context, req *hcv1.HeartbeatRequest) (*hcv1.HeartbeatResponse, error) {
	if _, err := s.lookup(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	resp, err := onChecker(s, ctx, req.GetName(), "Heartbeat", req, &hcv1.HeartbeatResponse{},
		func() (*hcv1.HeartbeatResponse, error) { return s.heartbeatHere(ctx, req) })
	return resp, toStatus(err)
}

// heartbeatHere records a heartbeat for a target this replica checks.
func (s *Service) heartbeatHere(ctx context.Context, req *hcv1.HeartbeatRequest) (*hcv1.HeartbeatResponse, error) {
	if !s.checksHere(req.GetName()) {
		return nil, errNotHere
	}
	t, err := s.lookup(req.GetName())
	if err != nil {
		return nil, err
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
