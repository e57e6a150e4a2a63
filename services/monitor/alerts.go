package monitor

import (
	"context"
	"errors"
	"fmt"
	"github.com/opsuite/opsuite/pkg/auth"
	"slices"
	"strings"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// activeSince reports whether a was pending or firing at any moment in
// [since, now].
func activeSince(a *monitorv1.Alert, since time.Time) bool {
	if isActive(a) {
		return true
	}
	return a.GetResolvedAt() != nil && !a.GetResolvedAt().AsTime().Before(since)
}

func matchAll(ms []*labels.Matcher, lbls map[string]string) bool {
	for _, m := range ms {
		if !m.Matches(lbls[m.Name]) {
			return false
		}
	}
	return true
}

// ListAlerts lists alerts, newest active_at first.
func (s *Service) ListAlerts(_ context.Context, req *monitorv1.ListAlertsRequest) (*monitorv1.ListAlertsResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	ms, err := s.parseMatchers("alerts", "matchers", req.GetMatchers())
	if err != nil {
		return nil, toStatus(err)
	}
	now := time.Now()
	var since time.Time
	history := false
	switch {
	case req.GetSince() != nil:
		since, history = req.GetSince().AsTime(), true
	case req.GetWindow() != nil:
		if req.GetWindow().AsDuration() <= 0 {
			return nil, toStatus(invalid("alerts", "window", "must be positive"))
		}
		since, history = now.Add(-req.GetWindow().AsDuration()), true
	}
	states := req.GetStates()
	if len(states) == 0 && !history {
		states = []monitorv1.AlertState{monitorv1.AlertState_ALERT_STATE_PENDING, monitorv1.AlertState_ALERT_STATE_FIRING}
	}
	var out []*monitorv1.Alert
	s.mu.Lock()
	for _, a := range s.alerts {
		if len(states) > 0 && !slices.Contains(states, a.GetState()) {
			continue
		}
		if history && !activeSince(a, since) {
			continue
		}
		if req.GetApplication() != "" && a.GetLabels()["app"] != req.GetApplication() {
			continue
		}
		if req.GetEnvironment() != "" && a.GetLabels()["environment"] != req.GetEnvironment() {
			continue
		}
		if req.GetRolloutId() != "" && a.GetDeploy().GetRolloutId() != req.GetRolloutId() {
			continue
		}
		if !matchAll(ms, a.GetLabels()) {
			continue
		}
		v := s.alertViewLocked(a, now)
		if len(v.GetSilencedBy()) > 0 && !req.GetIncludeSilenced() {
			continue
		}
		out = append(out, v)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *monitorv1.Alert) int {
		if c := b.GetActiveAt().AsTime().Compare(a.GetActiveAt().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetId(), b.GetId())
	})
	start, end, next, err := page(len(out), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListAlertsResponse{Alerts: out[start:end], NextPageToken: next}, nil
}

// GetAlert returns one alert.
func (s *Service) GetAlert(_ context.Context, req *monitorv1.GetAlertRequest) (*monitorv1.GetAlertResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.alerts[req.GetId()]
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: alert %q", ErrNotFound, req.GetId()))
	}
	return &monitorv1.GetAlertResponse{Alert: s.alertViewLocked(a, time.Now())}, nil
}

// AcknowledgeAlert records who handles an alert.
func (s *Service) AcknowledgeAlert(ctx context.Context, req *monitorv1.AcknowledgeAlertRequest) (*monitorv1.AcknowledgeAlertResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	ack := &monitorv1.Acknowledgement{By: callerIdentity(ctx), Time: timestamppb.Now(), Comment: req.GetComment()}
	var view *monitorv1.Alert
	// Revision-checked against the replica evaluating the alert: on a
	// conflict, reload and acknowledge the newer state.
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		a, ok := s.alerts[req.GetId()]
		if !ok {
			s.mu.Unlock()
			return nil, toStatus(fmt.Errorf("%w: alert %q", ErrNotFound, req.GetId()))
		}
		stored := proto.CloneOf(a)
		stored.Acknowledgement = ack
		rev := s.alertsKV.rev(a.GetId())
		s.mu.Unlock()
		err := s.writeAlert(ctx, stored, rev)
		if errors.Is(err, errStale) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, toStatus(fmt.Errorf("%w: acknowledge alert %s: %w", ErrConflict, req.GetId(), err))
		}
		s.mu.Lock()
		if cur := s.alerts[req.GetId()]; cur != nil {
			cur.Acknowledgement = ack
		}
		view = s.alertViewLocked(stored, time.Now())
		s.mu.Unlock()
		break
	}
	if _, err := s.events.Publish(ctx, eventbus.Event{Type: EventAlertAcknowledged, Subject: view.GetId(), Data: &eventsv1.AlertAcknowledged{Alert: view}}); err != nil {
		s.log.Warn("publish alert acknowledged", "alert", view.GetId(), "err", err)
	}
	return &monitorv1.AcknowledgeAlertResponse{Alert: view}, nil
}

// callerIdentity is the name of the caller's token ("anonymous" with
// access control off).
func callerIdentity(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok && p.Name != "" {
		return p.Name
	}
	return "anonymous"
}

// IsAlertFiring answers whether any alert of an application fired at any
// moment since a time (by default the start of its latest rollout).
func (s *Service) IsAlertFiring(_ context.Context, req *monitorv1.IsAlertFiringRequest) (*monitorv1.IsAlertFiringResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if req.GetApplication() == "" {
		return nil, toStatus(invalid("is firing", "application", "required"))
	}
	ms, err := s.parseMatchers("is firing", "matchers", req.GetMatchers())
	if err != nil {
		return nil, toStatus(err)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	} else if r := s.latestRolloutLocked(req.GetApplication(), req.GetEnvironment(), now); r != nil {
		since = r.GetStartTime().AsTime()
	}
	resp := &monitorv1.IsAlertFiringResponse{Since: timestamppb.New(since), EvaluationTime: timestamppb.New(now)}
	for _, a := range s.alerts {
		if a.GetLabels()["app"] != req.GetApplication() || a.GetFiredAt() == nil {
			continue
		}
		if env := a.GetLabels()["environment"]; req.GetEnvironment() != "" && env != "" && env != req.GetEnvironment() {
			continue
		}
		if req.GetFiringNow() && a.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING {
			continue
		}
		if a.GetState() == monitorv1.AlertState_ALERT_STATE_RESOLVED && a.GetResolvedAt().AsTime().Before(since) {
			continue
		}
		if !matchAll(ms, a.GetLabels()) {
			continue
		}
		v := s.alertViewLocked(a, now)
		if len(v.GetSilencedBy()) > 0 && !req.GetIncludeSilenced() {
			continue
		}
		resp.Alerts = append(resp.Alerts, v)
	}
	slices.SortFunc(resp.Alerts, func(a, b *monitorv1.Alert) int { return b.GetFiredAt().AsTime().Compare(a.GetFiredAt().AsTime()) })
	resp.Firing = len(resp.Alerts) > 0
	return resp, nil
}
