package auth

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/grpcserver"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Publisher publishes audit events.
type Publisher interface {
	Publish(ctx context.Context, ev eventbus.Event) (string, error)
}

// InternalName is the principal of the suite's own calls between services.
const InternalName = "opsuite-internal"

// Guard authenticates and authorizes gRPC calls.
type Guard struct {
	// Store holds the tokens; nil makes every call anonymous with the admin
	// role (auth off), which only a person turning it off should get.
	Store *Store
	// Internal is this process's secret for calls between its own
	// services; empty accepts none.
	Internal string
	// Audit receives an event for every call that changes state; optional.
	Audit Publisher
	Log   *slog.Logger
}

type principalKey struct{}

// FromContext returns the caller of the call ctx belongs to.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// Interceptors returns the unary and stream interceptors.
func (g *Guard) Interceptors() grpcserver.Interceptors {
	return grpcserver.Interceptors{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			p, err := g.authorize(ctx, info.FullMethod)
			if err != nil {
				g.audit(ctx, info.FullMethod, p, req, err)
				return nil, err
			}
			resp, err := h(WithPrincipal(ctx, p), req)
			g.audit(ctx, info.FullMethod, p, req, err)
			return resp, err
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			p, err := g.authorize(ss.Context(), info.FullMethod)
			if err != nil {
				g.audit(ss.Context(), info.FullMethod, p, nil, err)
				return err
			}
			err = h(srv, &principalStream{ServerStream: ss, ctx: WithPrincipal(ss.Context(), p)})
			g.audit(ss.Context(), info.FullMethod, p, nil, err)
			return err
		},
	}
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context //nolint:containedctx // the stream's own context, with the principal
}

func (s *principalStream) Context() context.Context { return s.ctx }

// authorize finds the caller and checks its role against the method's.
func (g *Guard) authorize(ctx context.Context, method string) (Principal, error) {
	need := Required(method)
	if g.Store == nil {
		return Principal{Name: "anonymous", Role: RoleAdmin}, nil
	}
	if need == RoleNone {
		return Principal{Name: "anonymous"}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch {
	case len(vals) == 0:
		return Principal{}, status.Error(codes.Unauthenticated,
			"no token: send the header 'Authorization: Bearer <token>' (CLI: --token or $OPSUITE_TOKEN; ask an admin for a token)")
	case len(vals) > 1:
		return Principal{}, status.Error(codes.Unauthenticated, "more than one authorization value")
	}
	scheme, secret, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || secret == "" {
		return Principal{}, status.Error(codes.Unauthenticated, "the authorization value must be 'Bearer <token>'")
	}
	var p Principal
	if g.Internal != "" && equal(secret, g.Internal) {
		p = Principal{Name: InternalName, Role: RoleAdmin}
	} else {
		var err error
		if p, err = g.Store.Authenticate(secret, time.Now()); err != nil {
			return Principal{}, status.Error(codes.Unauthenticated, err.Error())
		}
	}
	if p.Role < need {
		return p, status.Errorf(codes.PermissionDenied, "token %s has role %s; %s needs %s", p.Name, roleName(p.Role), method, roleName(need))
	}
	return p, nil
}

func roleName(r Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

// audit publishes who did what for calls that change state (also refused
// ones: an attempt is worth knowing about).
func (g *Guard) audit(ctx context.Context, method string, p Principal, req any, err error) {
	if g.Audit == nil || !Changes(method) || p.Name == InternalName {
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	ev := &eventsv1.AuditRecorded{
		Actor: p.Name, Role: roleName(p.Role), Method: method, Code: status.Code(err).String(),
		Transport: "grpc", Time: timestamppb.Now(),
	}
	if ev.Actor == "" {
		ev.Actor = "unauthenticated"
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && (len(md.Get("x-forwarded-for")) > 0 || len(md.Get("grpcgateway-user-agent")) > 0) {
		ev.Transport = "rest"
	}
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		ev.Peer = pr.Addr.String()
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		ev.TraceId = sc.TraceID().String()
	}
	if m, ok := req.(proto.Message); ok {
		ev.Resource = resourceOf(m)
	}
	svc, name := splitMethod(method)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, perr := g.Audit.Publish(pctx, eventbus.Event{Type: "opsuite.audit." + svc + "." + name, Subject: ev.GetResource(), Data: ev}); perr != nil && g.Log != nil {
		g.Log.Warn("audit event not published", "method", method, "actor", ev.GetActor(), "err", perr)
	}
}

// splitMethod turns /opsuite.deployer.v1.DeployerService/Deploy into
// ("deployer", "Deploy").
func splitMethod(method string) (string, string) {
	full, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	parts := strings.Split(full, ".")
	svc := full
	if len(parts) >= 2 {
		svc = parts[1]
	}
	return svc, name
}

// resourceOf names what a request acts on from its first identifying field.
func resourceOf(m proto.Message) string {
	r := m.ProtoReflect()
	for _, f := range []protoreflect.Name{"name", "application", "id", "pipeline", "project"} {
		fd := r.Descriptor().Fields().ByName(f)
		if fd != nil && fd.Kind() == protoreflect.StringKind && r.Get(fd).String() != "" {
			return string(f) + "/" + r.Get(fd).String()
		}
	}
	// Create requests carry the object: look one level down for its name.
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && r.Has(fd) {
			inner := r.Get(fd).Message()
			if nf := inner.Descriptor().Fields().ByName("name"); nf != nil && nf.Kind() == protoreflect.StringKind && inner.Get(nf).String() != "" {
				return string(fd.Name()) + "/" + inner.Get(nf).String()
			}
		}
	}
	return ""
}
