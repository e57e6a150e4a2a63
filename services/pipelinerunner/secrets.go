package pipelinerunner

import (
	"context"
	"errors"
	"slices"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// withoutValue is a secret as the API shows it.
func withoutValue(s *pb.Secret) *pb.Secret {
	out := proto.CloneOf(s)
	out.Value = ""
	return out
}

func validateSecret(s *pb.Secret, needValue bool) error {
	v := validation.New("secret")
	if !dnsLabel.MatchString(s.GetName()) {
		v.Add("secret.name", "%q is not a valid name (lower case letters, digits, '-', at most 63)", s.GetName())
	}
	if needValue && s.GetValue() == "" {
		v.Add("secret.value", "is required")
	}
	if len(s.GetValue()) > 64<<10 {
		v.Add("secret.value", "is longer than 64 KiB")
	}
	for i, p := range s.GetPipelines() {
		if !dnsLabel.MatchString(p) {
			v.Add("secret.pipelines", "entry %d %q is not a pipeline name", i, p)
		}
	}
	return v.Err()
}

// CreateSecret stores a secret.
func (s *Service) CreateSecret(ctx context.Context, req *pb.CreateSecretRequest) (*pb.CreateSecretResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	sec := proto.CloneOf(req.GetSecret())
	if sec == nil {
		sec = &pb.Secret{}
	}
	if err := validateSecret(sec, true); err != nil {
		return nil, toStatus(err)
	}
	now := timestamppb.Now()
	sec.CreateTime, sec.UpdateTime = now, now
	if _, err := st.CreateSecret(ctx, sec); err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateSecretResponse{Secret: withoutValue(sec)}, nil
}

// ListSecrets lists secrets without values.
func (s *Service) ListSecrets(ctx context.Context, req *pb.ListSecretsRequest) (*pb.ListSecretsResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	size, offset, err := page(req.GetPageSize(), req.GetPageToken(), 100)
	if err != nil {
		return nil, err
	}
	all, err := st.Secrets(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out, next := paginate(all, size, offset)
	res := make([]*pb.Secret, len(out))
	for i, sec := range out {
		res[i] = withoutValue(sec)
	}
	return &pb.ListSecretsResponse{Secrets: res, NextPageToken: next}, nil
}

// UpdateSecret rotates a secret or changes its fields.
func (s *Service) UpdateSecret(ctx context.Context, req *pb.UpdateSecretRequest) (*pb.UpdateSecretResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	in := req.GetSecret()
	cur, err := st.Secret(ctx, in.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	next := proto.CloneOf(cur.Value)
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"description", "pipelines"}
		if in.GetValue() != "" {
			paths = append(paths, "value")
		}
	}
	for _, p := range paths {
		switch p {
		case "value":
			next.Value = in.GetValue()
		case "description":
			next.Description = in.GetDescription()
		case "pipelines":
			next.Pipelines = in.GetPipelines()
		default:
			return nil, fieldErr("update_mask", "%q cannot be updated (value, description, pipelines)", p)
		}
	}
	if err := validateSecret(next, true); err != nil {
		return nil, toStatus(err)
	}
	next.UpdateTime = timestamppb.Now()
	if _, err := st.UpdateSecret(ctx, next, cur.Revision); err != nil {
		return nil, toStatus(err)
	}
	return &pb.UpdateSecretResponse{Secret: withoutValue(next)}, nil
}

// DeleteSecret deletes a secret.
func (s *Service) DeleteSecret(ctx context.Context, req *pb.DeleteSecretRequest) (*pb.DeleteSecretResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	if err := st.DeleteSecret(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteSecretResponse{}, nil
}

// secretValues resolves the secrets a pipeline may use; missing or
// forbidden ones are left out (the steps that need them fail naming them).
func (s *Service) secretValues(ctx context.Context, pipeline string, names []string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		v, err := s.store.Secret(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(v.Value.GetPipelines()) > 0 && !slices.Contains(v.Value.GetPipelines(), pipeline) {
			continue
		}
		out[n] = v.Value.GetValue()
	}
	return out, nil
}
