package pipelinerunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// prepare parses a pipeline's source and fills its output-only fields.
func prepare(p *pb.Pipeline) (*pb.Pipeline, error) {
	v := validation.New("pipeline")
	if p.GetSource() == "" {
		v.Add("pipeline.source", "is required")
		return nil, v
	}
	if len(p.GetSource()) > pipelinefile.MaxSourceBytes {
		v.Add("pipeline.source", "is %d bytes, at most %d allowed", len(p.GetSource()), pipelinefile.MaxSourceBytes)
		return nil, v
	}
	parsed, err := pipelinefile.Parse([]byte(p.GetSource()))
	if err != nil {
		return nil, err
	}
	out := proto.CloneOf(p)
	if out.GetName() == "" {
		out.Name = parsed.Name
	}
	switch {
	case out.GetName() == "":
		v.Add("pipeline.name", "is required (or give the file a top-level name)")
	case !dnsLabel.MatchString(out.GetName()):
		v.Add("pipeline.name", "%q is not a valid name (lower case letters, digits, '-', at most 63)", out.GetName())
	case parsed.Name != "" && parsed.Name != out.GetName():
		v.Add("pipeline.name", "%q differs from the file's name %q", out.GetName(), parsed.Name)
	}
	for k := range out.GetLabels() {
		if k == "" || len(k) > 63 {
			v.Add("pipeline.labels", "bad label key %q", k)
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	out.Spec = specOf(parsed, out.GetName())
	out.SourceDigest = digestOf(out.GetSource())
	return out, nil
}

// CreatePipeline stores a new pipeline.
func (s *Service) CreatePipeline(ctx context.Context, req *pb.CreatePipelineRequest) (*pb.CreatePipelineResponse, error) {
	p, err := prepare(req.GetPipeline())
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetValidateOnly() {
		return &pb.CreatePipelineResponse{Pipeline: p}, nil
	}
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	now := timestamppb.Now()
	p.CreateTime, p.UpdateTime = now, now
	p.Status = &pb.PipelineStatus{}
	p.Etag = etag(p)
	if err := st.PutSource(ctx, p.GetSourceDigest(), p.GetSource()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := st.CreatePipeline(ctx, p); err != nil {
		return nil, toStatus(err)
	}
	s.cron.reload()
	return &pb.CreatePipelineResponse{Pipeline: s.withStatus(ctx, p), Warnings: s.secretWarnings(ctx, p)}, nil
}

// secretWarnings names the secrets a pipeline references that do not exist
// (yet) or do not allow it.
func (s *Service) secretWarnings(ctx context.Context, p *pb.Pipeline) []*pb.ValidationError {
	names := p.GetSpec().GetSecrets()
	if len(names) == 0 || s.store == nil {
		return nil
	}
	have, err := s.secretValues(ctx, p.GetName(), names)
	if err != nil {
		return nil
	}
	var out []*pb.ValidationError
	for _, n := range names {
		if _, ok := have[n]; !ok {
			out = append(out, &pb.ValidationError{
				Key: "secrets", Severity: pb.ValidationSeverity_VALIDATION_SEVERITY_WARNING,
				Message: fmt.Sprintf("secret %q does not exist or does not allow pipeline %s; steps using it will fail", n, p.GetName()),
			})
		}
	}
	return out
}

func etag(p *pb.Pipeline) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Pipeline{
		Source: p.GetSource(), Labels: p.GetLabels(), Paused: p.GetPaused(), UpdateTime: p.GetUpdateTime(),
	})
	return digestOf(string(b))[7:23]
}

// withStatus fills a pipeline's status from its runs.
func (s *Service) withStatus(ctx context.Context, p *pb.Pipeline) *pb.Pipeline {
	p = proto.CloneOf(p)
	if p.Status == nil {
		p.Status = &pb.PipelineStatus{}
	}
	p.Status.RunningRuns, p.Status.QueuedRuns = 0, 0
	runs, err := s.store.Runs(ctx, p.GetName())
	if err == nil {
		for _, v := range runs {
			switch v.Value.GetState() {
			case pb.RunState_RUN_STATE_RUNNING:
				p.Status.RunningRuns++
			case pb.RunState_RUN_STATE_QUEUED:
				p.Status.QueuedRuns++
			}
			if v.Value.GetId() == p.Status.GetLastRunId() {
				p.Status.LastRunState = v.Value.GetState()
				p.Status.LastRunEndTime = v.Value.GetEndTime()
			}
		}
	}
	if s.cron != nil {
		for _, sc := range p.GetSpec().GetSchedules() {
			sc.NextTime, sc.LastTime = s.cron.times(p.GetName(), sc.GetName(), p.GetPaused())
			if sc.NextTime != nil && (p.Status.NextScheduleTime == nil || sc.NextTime.AsTime().Before(p.Status.NextScheduleTime.AsTime())) {
				p.Status.NextScheduleTime = sc.NextTime
			}
		}
	}
	return p
}

// GetPipeline returns a pipeline.
func (s *Service) GetPipeline(ctx context.Context, req *pb.GetPipelineRequest) (*pb.GetPipelineResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	v, err := st.Pipeline(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetPipelineResponse{Pipeline: s.withStatus(ctx, v.Value)}, nil
}

// ListPipelines lists pipelines by name.
func (s *Service) ListPipelines(ctx context.Context, req *pb.ListPipelinesRequest) (*pb.ListPipelinesResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	size, offset, err := page(req.GetPageSize(), req.GetPageToken(), 100)
	if err != nil {
		return nil, err
	}
	match, err := parseSelector(req.GetLabelSelector())
	if err != nil {
		return nil, err
	}
	all, err := st.Pipelines(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var ps []*pb.Pipeline
	for _, v := range all {
		if match(v.Value.GetLabels()) {
			ps = append(ps, v.Value)
		}
	}
	out, next := paginate(ps, size, offset)
	for i, p := range out {
		out[i] = s.withStatus(ctx, p)
	}
	return &pb.ListPipelinesResponse{Pipelines: out, NextPageToken: next}, nil
}

// parseSelector reads `k=v,k!=v,k` label selectors.
func parseSelector(sel string) (func(map[string]string) bool, error) {
	type term struct {
		key, val string
		op       string
	}
	var terms []term
	for _, part := range strings.Split(sel, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		switch {
		case strings.Contains(part, "!="):
			k, v, _ := strings.Cut(part, "!=")
			terms = append(terms, term{strings.TrimSpace(k), strings.TrimSpace(v), "!="})
		case strings.Contains(part, "="):
			k, v, _ := strings.Cut(strings.Replace(part, "==", "=", 1), "=")
			terms = append(terms, term{strings.TrimSpace(k), strings.TrimSpace(v), "="})
		default:
			terms = append(terms, term{key: part, op: "exists"})
		}
		if terms[len(terms)-1].key == "" {
			return nil, fieldErr("label_selector", "bad term %q", part)
		}
	}
	return func(labels map[string]string) bool {
		for _, t := range terms {
			v, ok := labels[t.key]
			switch t.op {
			case "=":
				if !ok || v != t.val {
					return false
				}
			case "!=":
				if ok && v == t.val {
					return false
				}
			case "exists":
				if !ok {
					return false
				}
			}
		}
		return true
	}, nil
}

// UpdatePipeline changes a pipeline.
func (s *Service) UpdatePipeline(ctx context.Context, req *pb.UpdatePipelineRequest) (*pb.UpdatePipelineResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	in := req.GetPipeline()
	if in.GetName() == "" {
		return nil, fieldErr("pipeline.name", "is required")
	}
	cur, err := st.Pipeline(ctx, in.GetName())
	if errors.Is(err, store.ErrNotFound) && req.GetAllowMissing() {
		resp, err := s.CreatePipeline(ctx, &pb.CreatePipelineRequest{Pipeline: in})
		if err != nil {
			return nil, err
		}
		return &pb.UpdatePipelineResponse{Pipeline: resp.GetPipeline()}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if in.GetEtag() != "" && in.GetEtag() != cur.Value.GetEtag() {
		return nil, status.Errorf(codes.Aborted, "pipeline %s changed since it was read (etag %s, now %s)", in.GetName(), in.GetEtag(), cur.Value.GetEtag())
	}
	next := proto.CloneOf(cur.Value)
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"source", "labels", "paused"}
	}
	for _, p := range paths {
		switch p {
		case "source":
			next.Source = in.GetSource()
		case "labels":
			next.Labels = in.GetLabels()
		case "paused":
			next.Paused = in.GetPaused()
		default:
			return nil, fieldErr("update_mask", "%q cannot be updated (source, labels, paused)", p)
		}
	}
	prepared, err := prepare(next)
	if err != nil {
		return nil, toStatus(err)
	}
	prepared.UpdateTime = timestamppb.Now()
	prepared.Etag = etag(prepared)
	if err := st.PutSource(ctx, prepared.GetSourceDigest(), prepared.GetSource()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := st.UpdatePipeline(ctx, prepared, cur.Revision); err != nil {
		return nil, toStatus(err)
	}
	s.cron.reload()
	return &pb.UpdatePipelineResponse{Pipeline: s.withStatus(ctx, prepared), Warnings: s.secretWarnings(ctx, prepared)}, nil
}

// DeletePipeline removes a pipeline with its runs, logs and artifacts.
func (s *Service) DeletePipeline(ctx context.Context, req *pb.DeletePipelineRequest) (*pb.DeletePipelineResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	if _, err := st.Pipeline(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	runs, err := st.Runs(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	var active []string
	for _, v := range runs {
		if !engine.FinalRun(v.Value.GetState()) {
			active = append(active, v.Value.GetId())
		}
	}
	if len(active) > 0 && !req.GetForce() {
		return nil, status.Errorf(codes.FailedPrecondition, "pipeline %s has active runs %s; set force to cancel them", req.GetName(), strings.Join(active, ", "))
	}
	for _, id := range active {
		_, _ = s.cancel(ctx, id, "pipeline deleted")
		s.mu.Lock()
		e := s.active[id]
		s.mu.Unlock()
		if e != nil {
			<-e.x.Done()
			continue
		}
		s.waitFinal(ctx, id) // executed by another runner
	}
	if err := st.DeletePipeline(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	for _, v := range runs {
		id := v.Value.GetId()
		if err := st.DeleteRun(ctx, id); err != nil {
			return nil, toStatus(fmt.Errorf("delete run %s: %w", id, err))
		}
		_ = os.RemoveAll(filepath.Join(s.cfg.DataDir, "artifacts", id))
		_ = os.RemoveAll(filepath.Join(s.cfg.DataDir, "workspaces", id))
	}
	s.cron.reload()
	return &pb.DeletePipelineResponse{}, nil
}

// ValidatePipeline checks a pipeline file without storing it.
func (s *Service) ValidatePipeline(_ context.Context, req *pb.ValidatePipelineRequest) (*pb.ValidatePipelineResponse, error) {
	if len(req.GetSource()) > pipelinefile.MaxSourceBytes {
		return nil, fieldErr("source", "is %d bytes, at most %d allowed", len(req.GetSource()), pipelinefile.MaxSourceBytes)
	}
	p, err := pipelinefile.Parse([]byte(req.GetSource()))
	var pe *pipelinefile.Error
	if errors.As(err, &pe) {
		return &pb.ValidatePipelineResponse{Valid: false, Errors: validationErrors(pe)}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ValidatePipelineResponse{Valid: true, Spec: specOf(p, p.Name)}, nil
}
