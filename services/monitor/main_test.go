package monitor_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/monitor"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild()
		return
	}
	goleak.VerifyTestMain(m,
		// The TSDB and OpenTelemetry start process-wide helpers once.
		goleak.IgnoreTopFunction("github.com/prometheus/prometheus/tsdb/wlog.(*WL).run"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// env is a real embedded NATS server and a data dir shared by the service
// instances of one test, so a restart finds the same state.
type env struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	bus     *eventbus.Bus
	dataDir string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := natstest.Start(t, "")
	bus, err := eventbus.New(context.Background(), srv.Conn, eventbus.Config{Source: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{nc: srv.Conn, js: srv.JetStream, bus: bus, dataDir: t.TempDir()}
}

type instance struct {
	svc    *monitor.Service
	client monitorv1.MonitorServiceClient
	conn   *grpc.ClientConn
	stop   func()
}

// start runs a service on e, served over an in-memory gRPC listener, in
// e's data dir unless cfg names one.
func (e *env) start(t testing.TB, cfg monitor.Config) *instance {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = e.dataDir
	}
	if cfg.HostMetricsInterval == 0 {
		cfg.HostMetricsInterval = -1
	}
	svc, err := monitor.New(cfg, monitor.Deps{JetStream: e.js, Events: e.bus, Consumer: e.bus})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := svc.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-svc.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("service not ready")
	}
	srv := grpctest.Serve(t, svc.Register, grpctest.Options{
		Server: []grpc.ServerOption{grpc.MaxRecvMsgSize(64 << 20)},
		Dial:   []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20))},
	})
	conn := srv.Conn
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return &instance{svc: svc, client: monitorv1.NewMonitorServiceClient(conn), conn: conn, stop: stop}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// badFields asserts err is InvalidArgument and returns the fields named.
func badFields(t testing.TB, err error) map[string]string {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
	out := map[string]string{}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out[v.GetField()] = v.GetDescription()
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("InvalidArgument without field violations: %v", err)
	}
	return out
}

func wantField(t testing.TB, err error, field string) string {
	t.Helper()
	fields := badFields(t, err)
	if _, ok := fields[field]; !ok {
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		t.Fatalf("want a violation on %s, got %q (%v)", field, keys, err)
	}
	return fields[field]
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %v", timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
