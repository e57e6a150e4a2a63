// Package access serves opsuite.gateway.v1.AccessService: API tokens with
// roles, created, listed and revoked by admins, kept by pkg/auth.
package access

import (
	"context"
	"errors"
	"time"

	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	"github.com/opsuite/opsuite/pkg/auth"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service implements AccessService over a token store; a nil store means
// access control is off.
type Service struct {
	gatewayv1.UnimplementedAccessServiceServer
	store *auth.Store
}

// New returns the service.
func New(store *auth.Store) *Service { return &Service{store: store} }

func (s *Service) ready() error {
	if s.store == nil {
		return status.Error(codes.FailedPrecondition, "access control is off in this deployment (--auth=off)")
	}
	return nil
}

// CreateToken creates a token and returns its secret, once.
func (s *Service) CreateToken(ctx context.Context, req *gatewayv1.CreateTokenRequest) (*gatewayv1.CreateTokenResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	v := validation.New("token")
	t := proto.CloneOf(req.GetToken())
	if t == nil {
		v.Add("token", "is required")
		return nil, v.Err()
	}
	switch t.GetRole() {
	case auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin:
	default:
		v.Add("token.role", "is required: ROLE_VIEWER, ROLE_OPERATOR or ROLE_ADMIN")
	}
	if len(t.GetDescription()) > 1024 {
		v.Add("token.description", "at most 1024 bytes")
	}
	now := time.Now()
	if ttl := req.GetTtl(); ttl != nil {
		if ttl.CheckValid() != nil || ttl.AsDuration() <= 0 {
			v.Add("ttl", "must be a positive duration")
		} else if t.GetExpireTime() != nil {
			v.Add("ttl", "give ttl or token.expire_time, not both")
		} else {
			t.ExpireTime = timestamppb.New(now.Add(ttl.AsDuration()))
		}
	}
	if e := t.GetExpireTime(); e != nil && !e.AsTime().After(now) {
		v.Add("token.expire_time", "is in the past")
	}
	if t.GetCreateTime() != nil || t.GetCreator() != "" || t.GetLastUsedTime() != nil || t.GetRevoked() {
		v.Add("token", "create_time, creator, last_used_time and revoked are output only")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	t.CreateTime = timestamppb.New(now)
	if p, ok := auth.FromContext(ctx); ok {
		t.Creator = p.Name
	}
	secret, err := s.store.Create(ctx, t, "")
	switch {
	case errors.Is(err, auth.ErrExists):
		return nil, status.Errorf(codes.AlreadyExists, "token %s exists; revoke it or choose another name", t.GetName())
	case errors.Is(err, auth.ErrInvalidSecret):
		v.Add("token.name", "%q is not a DNS-1123 label", t.GetName())
		return nil, v.Err()
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &gatewayv1.CreateTokenResponse{Token: t, Secret: secret}, nil
}

// ListTokens lists tokens (never their secrets).
func (s *Service) ListTokens(context.Context, *gatewayv1.ListTokensRequest) (*gatewayv1.ListTokensResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	return &gatewayv1.ListTokensResponse{Tokens: s.store.List()}, nil
}

// RevokeToken revokes a token at once, in every process.
func (s *Service) RevokeToken(ctx context.Context, req *gatewayv1.RevokeTokenRequest) (*gatewayv1.RevokeTokenResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if p, ok := auth.FromContext(ctx); ok && p.Name == req.GetName() {
		return nil, status.Error(codes.FailedPrecondition, "a token cannot revoke itself; use another admin token")
	}
	t, err := s.store.Revoke(ctx, req.GetName())
	if errors.Is(err, auth.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no token %q", req.GetName())
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &gatewayv1.RevokeTokenResponse{Token: t}, nil
}

// WhoAmI names the caller's token and role.
func (s *Service) WhoAmI(ctx context.Context, _ *gatewayv1.WhoAmIRequest) (*gatewayv1.WhoAmIResponse, error) {
	p, _ := auth.FromContext(ctx)
	return &gatewayv1.WhoAmIResponse{TokenName: p.Name, Role: p.Role}, nil
}
