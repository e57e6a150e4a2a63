// Package natsembed runs a NATS server with JetStream inside the process, so
// the suite needs no external broker on one machine.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config says where the embedded server keeps its data and where it listens.
type Config struct {
	// DataDir holds the JetStream store (DataDir/jetstream).
	DataDir string
	// ListenAddr is host:port for NATS clients; empty means no listener,
	// only in-process connections.
	ListenAddr string
	// ServerName names the server in cluster and monitoring output.
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept connections.
	ReadyTimeout time.Duration
}

// Server is a running embedded NATS server.
type Server struct {
	ns  *server.Server
	log *slog.Logger
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("natsembed: data dir is required")
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.DataDir, "jetstream"),
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         8 << 20,
		JetStreamMaxMemory: 256 << 20,
	}
	if opts.ServerName == "" {
		opts.ServerName = "opsuite"
	}
	if cfg.ListenAddr == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("natsembed: listen address %q: %w", cfg.ListenAddr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("natsembed: listen address %q: bad port", cfg.ListenAddr)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: new server: %w", err)
	}
	ns.Start()
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if !ns.ReadyForConnections(timeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsembed: server not ready within %s", timeout)
	}
	if log != nil {
		log.Info("embedded NATS started", "client_url", clientURL(ns, cfg.ListenAddr), "store_dir", opts.StoreDir)
	}
	return &Server{ns: ns, log: log}, nil
}

func clientURL(ns *server.Server, listen string) string {
	if listen == "" {
		return "in-process only"
	}
	return ns.ClientURL()
}

// ClientURL is the URL external clients use, or "" without a listener.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// Connect opens an in-process client connection (no network socket).
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("natsembed: in-process connect: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits for it; safe to call twice.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
