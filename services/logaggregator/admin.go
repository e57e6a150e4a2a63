package logaggregator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func tsOf(ns int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, ns)) }

// DeleteLogs deletes a source's records within a time range.
func (s *Service) DeleteLogs(ctx context.Context, req *lav1.DeleteLogsRequest) (*lav1.DeleteLogsResponse, error) {
	ve := validation.New("delete request")
	src := strings.TrimSuffix(req.GetSource(), "/")
	if reason := record.CheckSource(src); reason != "" {
		ve.Add("source", "%s", reason)
	}
	var start, end int64
	if t := req.GetStartTime(); t != nil {
		if t.CheckValid() != nil {
			ve.Add("start_time", "invalid timestamp")
		}
		start = t.AsTime().UnixNano()
	}
	if t := req.GetEndTime(); t != nil {
		if t.CheckValid() != nil {
			ve.Add("end_time", "invalid timestamp")
		}
		end = t.AsTime().UnixNano()
	} else {
		end = time.Now().UnixNano()
	}
	if start != 0 && end < start {
		ve.Add("end_time", "before start_time")
	}
	if err := ve.Err(); err != nil {
		return nil, toStatus(err)
	}
	st, err := s.storeOrErr()
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetValidateOnly() {
		n, err := st.Delete(src, start, end, true)
		if err != nil {
			return nil, toStatus(err)
		}
		return &lav1.DeleteLogsResponse{DeletedCount: n}, nil
	}
	// Through the write-ahead stream, so every replica deletes at the same
	// position among the records; the count is this replica's.
	op := controlOp{ID: newOpID("delete"), Delete: &deleteOp{Source: src, Start: start, End: end}}
	res, err := s.control(ctx, op)
	if err != nil {
		return nil, toStatus(fmt.Errorf("delete logs of %s: %w", src, err))
	}
	if n := res.deleted; n > 0 && s.events != nil {
		ev := &eventsv1.LogsDeleted{Source: src, StartTime: req.GetStartTime(), EndTime: req.GetEndTime(), DeletedCount: n}
		if _, err := s.events.Publish(ctx, eventbus.Event{Type: EventLogsDeleted, ID: "logs-deleted-" + op.ID, Subject: src, Data: ev}); err != nil {
			s.log.Warn("publish logs deleted", "source", src, "err", err)
		}
	}
	return &lav1.DeleteLogsResponse{DeletedCount: res.deleted}, nil
}

// GetRetentionPolicy returns the retention limits.
func (s *Service) GetRetentionPolicy(context.Context, *lav1.GetRetentionPolicyRequest) (*lav1.GetRetentionPolicyResponse, error) {
	st, err := s.storeOrErr()
	if err != nil {
		return nil, toStatus(err)
	}
	return &lav1.GetRetentionPolicyResponse{Policy: st.Policy()}, nil
}

// retentionPaths are the fields UpdateRetentionPolicy's mask may name.
var retentionPaths = []string{"default_limits", "default_limits.max_age", "default_limits.max_bytes", "sources", "max_total_bytes"}

// UpdateRetentionPolicy changes the fields named in the mask.
func (s *Service) UpdateRetentionPolicy(ctx context.Context, req *lav1.UpdateRetentionPolicyRequest) (*lav1.UpdateRetentionPolicyResponse, error) {
	ve := validation.New("retention policy")
	in := req.GetPolicy()
	if in == nil {
		ve.Add("policy", "is required")
		return nil, toStatus(ve)
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"default_limits", "sources", "max_total_bytes"}
	}
	for i, p := range paths {
		if !slices.Contains(retentionPaths, p) {
			ve.Add(fmt.Sprintf("update_mask.paths[%d]", i), "unknown field %q; want one of %s", p, strings.Join(retentionPaths, ", "))
		}
	}
	checkLimits := func(field string, l *lav1.RetentionLimits) {
		if l.GetMaxAge() != nil && (l.GetMaxAge().CheckValid() != nil || l.GetMaxAge().AsDuration() < 0) {
			ve.Add(field+".max_age", "must be a positive duration or 0")
		} else if d := l.GetMaxAge().AsDuration(); d > 0 && d < time.Minute {
			ve.Add(field+".max_age", "must be at least 1m")
		}
	}
	checkLimits("policy.default_limits", in.GetDefaultLimits())
	seen := map[string]bool{}
	for i, sr := range in.GetSources() {
		field := fmt.Sprintf("policy.sources[%d]", i)
		src := strings.TrimSuffix(sr.GetSource(), "/")
		if reason := record.CheckSource(src); reason != "" {
			ve.Add(field+".source", "%s", reason)
		} else if seen[src] {
			ve.Add(field+".source", "%q appears twice", src)
		}
		seen[src] = true
		sr.Source = src
		if sr.GetLimits() == nil {
			ve.Add(field+".limits", "is required")
		}
		checkLimits(field+".limits", sr.GetLimits())
	}
	if err := ve.Err(); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.storeOrErr(); err != nil {
		return nil, toStatus(err)
	}
	data, err := proto.Marshal(in)
	if err != nil {
		return nil, toStatus(err)
	}
	// Through the write-ahead stream: every replica merges the same
	// updates in the same order.
	res, err := s.control(ctx, controlOp{ID: newOpID("policy"), Policy: &policyOp{Policy: data, Paths: paths, UpdateTime: time.Now().UnixNano()}})
	if err != nil {
		return nil, toStatus(fmt.Errorf("update retention policy: %w", err))
	}
	return &lav1.UpdateRetentionPolicyResponse{Policy: res.policy}, nil
}
