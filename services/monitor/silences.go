package monitor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func silenceState(sl *monitorv1.Silence, now time.Time) monitorv1.SilenceState {
	switch {
	case now.Before(sl.GetStartTime().AsTime()):
		return monitorv1.SilenceState_SILENCE_STATE_PENDING
	case now.Before(sl.GetEndTime().AsTime()):
		return monitorv1.SilenceState_SILENCE_STATE_ACTIVE
	}
	return monitorv1.SilenceState_SILENCE_STATE_EXPIRED
}

// silencedByLocked lists the active silences matching lbls.
func (s *Service) silencedByLocked(lbls map[string]string, now time.Time) []string {
	var out []string
	for id, sl := range s.silences {
		if silenceState(sl, now) != monitorv1.SilenceState_SILENCE_STATE_ACTIVE {
			continue
		}
		match := true
		for _, m := range sl.GetMatchers() {
			lm, err := toMatcher(m)
			if err != nil || !lm.Matches(lbls[m.GetName()]) {
				match = false
				break
			}
		}
		if match {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func validateSilence(sl *monitorv1.Silence) error {
	verr := validation.New("silence")
	if len(sl.GetMatchers()) == 0 {
		verr.Add("silence.matchers", "at least one matcher is required")
	}
	nonEmpty := false
	for i, m := range sl.GetMatchers() {
		lm, err := toMatcher(m)
		if err != nil {
			verr.Add(fmt.Sprintf("silence.matchers[%d]", i), "%v", err)
			continue
		}
		if !lm.Matches("") {
			nonEmpty = true
		}
	}
	if len(sl.GetMatchers()) > 0 && !nonEmpty {
		verr.Add("silence.matchers", "at least one matcher must not match the empty string")
	}
	if sl.GetEndTime() == nil {
		verr.Add("silence.end_time", "required")
	} else if !sl.GetEndTime().AsTime().After(sl.GetStartTime().AsTime()) {
		verr.Add("silence.end_time", "must be after start_time")
	}
	if sl.GetComment() == "" {
		verr.Add("silence.comment", "required")
	}
	return verr.Err()
}

func (s *Service) silenceView(sl *monitorv1.Silence) *monitorv1.Silence {
	out := proto.CloneOf(sl)
	out.State = silenceState(sl, time.Now())
	return out
}

// CreateSilence mutes notifications of matching alerts for a time.
func (s *Service) CreateSilence(ctx context.Context, req *monitorv1.CreateSilenceRequest) (*monitorv1.CreateSilenceResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	sl := proto.CloneOf(req.GetSilence())
	if sl == nil {
		sl = &monitorv1.Silence{}
	}
	now := timestamppb.Now()
	if sl.StartTime == nil {
		sl.StartTime = now
	}
	if err := validateSilence(sl); err != nil {
		return nil, toStatus(err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	sl.Id = hex.EncodeToString(b[:])
	sl.CreateTime, sl.UpdateTime, sl.State = now, now, 0
	if sl.CreatedBy == "" {
		sl.CreatedBy = callerIdentity(ctx)
	}
	if err := s.silencesKV.put(ctx, sl.GetId(), sl); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.silences[sl.GetId()] = sl
	s.mu.Unlock()
	return &monitorv1.CreateSilenceResponse{Silence: s.silenceView(sl)}, nil
}

func (s *Service) getSilence(id string) (*monitorv1.Silence, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.silences[id]
	if !ok {
		return nil, fmt.Errorf("%w: silence %q", ErrNotFound, id)
	}
	return proto.CloneOf(sl), nil
}

// GetSilence returns a silence.
func (s *Service) GetSilence(_ context.Context, req *monitorv1.GetSilenceRequest) (*monitorv1.GetSilenceResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	sl, err := s.getSilence(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.GetSilenceResponse{Silence: s.silenceView(sl)}, nil
}

// ListSilences lists silences, active first, then by end time.
func (s *Service) ListSilences(_ context.Context, req *monitorv1.ListSilencesRequest) (*monitorv1.ListSilencesResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	var out []*monitorv1.Silence
	s.mu.Lock()
	for _, sl := range s.silences {
		v := s.silenceView(sl)
		if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), v.GetState()) {
			continue
		}
		out = append(out, v)
	}
	s.mu.Unlock()
	rank := func(st monitorv1.SilenceState) int {
		switch st {
		case monitorv1.SilenceState_SILENCE_STATE_ACTIVE:
			return 0
		case monitorv1.SilenceState_SILENCE_STATE_PENDING:
			return 1
		}
		return 2
	}
	slices.SortFunc(out, func(a, b *monitorv1.Silence) int {
		if c := rank(a.GetState()) - rank(b.GetState()); c != 0 {
			return c
		}
		return a.GetEndTime().AsTime().Compare(b.GetEndTime().AsTime())
	})
	start, end, next, err := page(len(out), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListSilencesResponse{Silences: out[start:end], NextPageToken: next}, nil
}

// UpdateSilence changes the masked fields of a silence.
func (s *Service) UpdateSilence(ctx context.Context, req *monitorv1.UpdateSilenceRequest) (*monitorv1.UpdateSilenceResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	in := req.GetSilence()
	sl, err := s.getSilence(in.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"matchers", "start_time", "end_time", "comment"}
	}
	for _, p := range paths {
		switch p {
		case "matchers":
			sl.Matchers = in.GetMatchers()
		case "start_time":
			if in.GetStartTime() != nil {
				sl.StartTime = in.GetStartTime()
			}
		case "end_time":
			sl.EndTime = in.GetEndTime()
		case "comment":
			sl.Comment = in.GetComment()
		default:
			return nil, toStatus(invalid("silence", "update_mask", "%q cannot be updated", p))
		}
	}
	if err := validateSilence(sl); err != nil {
		return nil, toStatus(err)
	}
	sl.UpdateTime = timestamppb.Now()
	if err := s.silencesKV.put(ctx, sl.GetId(), sl); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.silences[sl.GetId()] = sl
	s.mu.Unlock()
	return &monitorv1.UpdateSilenceResponse{Silence: s.silenceView(sl)}, nil
}

// DeleteSilence ends a silence now; it stays listed as expired.
func (s *Service) DeleteSilence(ctx context.Context, req *monitorv1.DeleteSilenceRequest) (*monitorv1.DeleteSilenceResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	sl, err := s.getSilence(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	now := timestamppb.Now()
	if sl.GetEndTime().AsTime().After(now.AsTime()) {
		sl.EndTime = now
		if sl.GetStartTime().AsTime().After(now.AsTime()) {
			sl.StartTime = now
		}
	}
	sl.UpdateTime = now
	if err := s.silencesKV.put(ctx, sl.GetId(), sl); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.silences[sl.GetId()] = sl
	s.mu.Unlock()
	return &monitorv1.DeleteSilenceResponse{Silence: s.silenceView(sl)}, nil
}
