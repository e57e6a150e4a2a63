package monitor

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// wireServiceDesc is the generated service description with the push
// methods' handlers replaced by ones that keep the request's bytes.
//
// The bytes are obtained without a codec of our own: the request is
// unmarshalled by the server's proto codec into an Empty message, which has
// no fields, so protobuf keeps every field of the request, unparsed, as the
// message's unknown fields — the request's encoding. Interceptors see that
// Empty as the request.
func wireServiceDesc() *grpc.ServiceDesc {
	desc := monitorv1.MonitorService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	desc.Streams = slices.Clone(desc.Streams)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "PushMetrics" {
			desc.Methods[i].Handler = pushMetricsWireHandler
		}
	}
	for i := range desc.Streams {
		if desc.Streams[i].StreamName == "PushMetricsStream" {
			desc.Streams[i].Handler = pushMetricsStreamWireHandler
		}
	}
	return &desc
}

func pushMetricsWireHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(emptypb.Empty)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*Service)
	raw := in.ProtoReflect().GetUnknown()
	if interceptor == nil {
		return s.pushWire(ctx, raw)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: monitorv1.MonitorService_PushMetrics_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, _ any) (any, error) { return s.pushWire(ctx, raw) })
}

func pushMetricsStreamWireHandler(srv any, stream grpc.ServerStream) error {
	return srv.(*Service).pushStreamWire(stream)
}

// pushWire is PushMetrics on the request's encoding.
func (s *Service) pushWire(ctx context.Context, raw []byte) (*monitorv1.PushMetricsResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	d := s.decoders.Get().(*ingest.Decoder)
	defer s.decoders.Put(d) // after store: the series share the decoder's memory
	now := time.Now().UnixMilli()
	series, err := d.DecodeWire(raw, now)
	if err != nil {
		return nil, wireStatus(err)
	}
	if err := s.publishRaw(ctx, kindPush, raw, now, series); err != nil {
		return nil, toStatus(err)
	}
	res, err := s.store(ctx, series)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.PushMetricsResponse{Accepted: res.Accepted, Rejected: res.Rejected, Rejections: rejections(res)}, nil
}

// pushStreamWire is PushMetricsStream on the messages' encodings.
func (s *Service) pushStreamWire(stream grpc.ServerStream) error {
	if err := s.checkReady(); err != nil {
		return toStatus(err)
	}
	d := ingest.NewDecoder(s.refs)
	var total ingest.Result
	var batches uint64
	for {
		in := new(emptypb.Empty)
		if err := stream.RecvMsg(in); err != nil {
			if errors.Is(err, io.EOF) {
				return stream.SendMsg(&monitorv1.PushMetricsStreamResponse{
					Accepted: total.Accepted, Rejected: total.Rejected, Rejections: rejections(total), Batches: batches,
				})
			}
			return err
		}
		raw, now := in.ProtoReflect().GetUnknown(), time.Now().UnixMilli()
		series, err := d.DecodeWireStream(streamPrefix(batches), raw, now)
		if err != nil {
			return wireStatus(err)
		}
		if err := s.publishRaw(stream.Context(), kindStream, raw, now, series); err != nil {
			return toStatus(err)
		}
		res, err := s.store(stream.Context(), series)
		if err != nil {
			return toStatus(err)
		}
		total.Add(res)
		batches++
	}
}

// wireStatus is toStatus, with bytes that are not the message refused as
// the gRPC server refuses them.
func wireStatus(err error) error {
	if errors.Is(err, ingest.ErrMalformed) {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return toStatus(err)
}
