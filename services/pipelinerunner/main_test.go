package pipelinerunner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	"github.com/nats-io/nats.go/jetstream"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"))
}

type env struct {
	nats    *natstest.Server
	js      jetstream.JetStream
	bus     *eventbus.Bus
	dataDir string
}

func newEnv(t *testing.T) *env { return newEnvB(t) }

func newEnvB(t testing.TB) *env {
	t.Helper()
	srv := natstest.Start(t, "")
	bus, err := eventbus.New(t.Context(), srv.Conn, eventbus.Config{Source: "opsuite/pipelinerunner"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{nats: srv, js: srv.JetStream, bus: bus, dataDir: t.TempDir()}
}

type instance struct {
	svc    *pipelinerunner.Service
	client pb.PipelineRunnerServiceClient
	stop   func()
}

func (e *env) start(t *testing.T, deps pipelinerunner.Deps) *instance { return e.startB(t, deps, 0) }

func (e *env) startB(t testing.TB, deps pipelinerunner.Deps, parallel int) *instance {
	t.Helper()
	deps.JetStream, deps.Events = e.js, e.bus
	// A short lease TTL: a runner killed by a test is taken over soon.
	svc, err := pipelinerunner.New(pipelinerunner.Config{DataDir: e.dataDir, RunnerName: "test", Docker: "off", MaxParallelSteps: parallel, LeaseTTL: 2 * time.Second}, deps)
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
	case <-time.After(15 * time.Second):
		t.Fatal("service not ready")
	}
	srv := grpctest.Serve(t, svc.Register, grpctest.Options{})
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
	return &instance{svc: svc, client: pb.NewPipelineRunnerServiceClient(conn), stop: stop}
}

func createPipeline(t *testing.T, c pb.PipelineRunnerServiceClient, name, src string) *pb.Pipeline {
	t.Helper()
	res, err := c.CreatePipeline(t.Context(), &pb.CreatePipelineRequest{Pipeline: &pb.Pipeline{Name: name, Source: src}})
	if err != nil {
		t.Fatalf("create pipeline %s: %v", name, err)
	}
	return res.GetPipeline()
}

// waitRun follows the run with WatchRun until it finishes.
func waitRun(t *testing.T, c pb.PipelineRunnerServiceClient, id string) *pb.Run {
	return waitRunB(t, c, id)
}

func waitRunB(t testing.TB, c pb.PipelineRunnerServiceClient, id string) *pb.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	stream, err := c.WatchRun(ctx, &pb.WatchRunRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	var last *pb.Run
	for {
		msg, err := stream.Recv()
		if err != nil {
			if last == nil {
				t.Fatalf("watch %s: %v", id, err)
			}
			return last
		}
		last = msg.GetRun()
	}
}

func stepOf(t *testing.T, run *pb.Run, id string) *pb.RunStep {
	t.Helper()
	for _, s := range run.GetSteps() {
		if s.GetId() == id {
			return s
		}
	}
	t.Fatalf("run %s has no step %s", run.GetId(), id)
	return nil
}

func logs(t *testing.T, c pb.PipelineRunnerServiceClient, req *pb.StreamRunLogsRequest) []*pb.LogLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := c.StreamRunLogs(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*pb.LogLine
	for {
		msg, err := stream.Recv()
		if err != nil {
			return out
		}
		out = append(out, msg.GetLines()...)
	}
}

func sleepShort() { time.Sleep(50 * time.Millisecond) }
