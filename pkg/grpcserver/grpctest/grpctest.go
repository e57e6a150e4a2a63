// Package grpctest serves gRPC services on an in-memory listener for tests,
// with a client connection to them: real gRPC encoding and interceptors,
// no ports.
package grpctest

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Options tune the server and the client connection.
type Options struct {
	Server []grpc.ServerOption
	Dial   []grpc.DialOption
}

// Server is a gRPC server on a bufconn listener and a connection to it.
type Server struct {
	Conn *grpc.ClientConn
	gs   *grpc.Server
	once sync.Once
}

// Serve starts a server with the services register adds and dials it. Stop
// runs at the end of the test unless called before.
func Serve(tb testing.TB, register func(grpc.ServiceRegistrar), opts Options) *Server {
	tb.Helper()
	gs := grpc.NewServer(opts.Server...)
	register(gs)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(lis) }()
	dial := append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts.Dial...)
	conn, err := grpc.NewClient("passthrough:///bufconn", dial...)
	if err != nil {
		gs.Stop()
		tb.Fatal(err)
	}
	s := &Server{Conn: conn, gs: gs}
	tb.Cleanup(s.Stop)
	return s
}

// Stop closes the connection and stops the server; calling it again does
// nothing.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.Conn.Close()
		s.gs.Stop()
	})
}
