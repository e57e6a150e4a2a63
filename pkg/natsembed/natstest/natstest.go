// Package natstest starts a real embedded NATS server with JetStream for
// tests, on a temporary data dir, and stops it when the test ends.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/opsuite/opsuite/pkg/natsembed"
)

// Server is a running test server with one in-process connection.
type Server struct {
	*natsembed.Server
	Conn      *nats.Conn
	JetStream jetstream.JetStream
}

// Start runs a server on dir (a fresh temp dir when empty). It is shut down
// by t.Cleanup, or earlier by Stop.
func Start(tb testing.TB, dir string) *Server {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	srv, err := natsembed.Start(natsembed.Config{DataDir: dir}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := srv.Connect("test")
	if err != nil {
		srv.Shutdown()
		tb.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		tb.Fatal(err)
	}
	s := &Server{Server: srv, Conn: nc, JetStream: js}
	tb.Cleanup(s.Stop)
	return s
}

// Stop closes the connection and shuts the server down; safe to call twice.
func (s *Server) Stop() {
	s.Conn.Close()
	s.Server.Shutdown()
}

// Client is a new connection named name and its JetStream, for a test
// that needs one of its own (a replica to cut off alone); closed when the
// test ends.
func (s *Server) Client(tb testing.TB, name string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := s.Connect(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}
