package pipelinerunner_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"
	"github.com/opsuite/opsuite/services/pipelinerunner"
)

// replica is one runner with its own NATS connection (so it can be cut
// off alone) and data dir.
type replica struct {
	nc      *nats.Conn
	client  pb.PipelineRunnerServiceClient
	stop    func()
	mu      sync.Mutex
	mayFail bool
}

func startReplica(t *testing.T, e *env, id string) *replica {
	t.Helper()
	nc, js := e.nats.Client(t, id)
	bus, err := eventbus.New(t.Context(), nc, eventbus.Config{Source: "opsuite/pipelinerunner"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelinerunner.New(pipelinerunner.Config{
		DataDir: filepath.Join(e.dataDir, id), RunnerName: id, ReplicaID: id, Docker: "off", LeaseTTL: 2 * time.Second,
	}, pipelinerunner.Deps{JetStream: js, Events: bus})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{nc: nc}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			r.mu.Lock()
			ok := r.mayFail
			r.mu.Unlock()
			if !ok {
				t.Errorf("Run %s: %v", id, err)
			}
		}
	}()
	select {
	case <-svc.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("runner not ready")
	}
	srv := grpctest.Serve(t, svc.Register, grpctest.Options{})
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			svc.Drain()
			srv.Stop()
			cancel()
			<-done
		})
	}
	t.Cleanup(r.stop)
	r.client = pb.NewPipelineRunnerServiceClient(srv.Conn)
	return r
}

// marks reads the lines steps appended to path.
func marks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(string(b), " ", "/"))
}

func count(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

// TestTwoRunnersRunEachStepOnce: runs queued through either of two runners
// run once, each step once, wherever they run.
func TestTwoRunnersRunEachStepOnce(t *testing.T) {
	e := newEnv(t)
	a, b := startReplica(t, e, "runner-a"), startReplica(t, e, "runner-b")
	work := t.TempDir()
	log := filepath.Join(work, "marks")
	createPipeline(t, a.client, "build", `
steps:
  - {name: one, script: 'echo "$OPSUITE_RUN_ID one" >> `+log+`'}
  - {name: two, needs: [one], script: 'echo "$OPSUITE_RUN_ID two" >> `+log+`'}
  - {name: three, needs: [two], script: 'echo "$OPSUITE_RUN_ID three" >> `+log+`'}
`)
	var ids []string
	for i := range 8 {
		c := a.client
		if i%2 == 1 {
			c = b.client
		}
		res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "build"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.GetRun().GetId())
	}
	runners := map[string]int{}
	for i, id := range ids {
		c := a.client
		if i%3 == 0 {
			c = b.client
		}
		run := waitRun(t, c, id)
		if run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
			t.Fatalf("run %s: %s %s", id, run.GetState(), run.GetMessage())
		}
		runners[stepOf(t, run, "one").GetAttempts()[0].GetRunner()]++
	}
	lines := marks(t, log)
	for _, id := range ids {
		for _, step := range []string{"one", "two", "three"} {
			if got := count(lines, id+"/"+step); got != 1 {
				t.Errorf("%s step %s ran %d times, want 1", id, step, got)
			}
		}
	}
	if len(lines) != 3*len(ids) {
		t.Errorf("%d step executions, want %d", len(lines), 3*len(ids))
	}
	t.Logf("runs per runner: %v", runners)
}

// TestConcurrencyLimitAcrossRunners: runs of a pipeline limited to one at a
// time, queued through two runners, never overlap.
func TestConcurrencyLimitAcrossRunners(t *testing.T) {
	e := newEnv(t)
	a, b := startReplica(t, e, "runner-a"), startReplica(t, e, "runner-b")
	log := filepath.Join(t.TempDir(), "marks")
	createPipeline(t, a.client, "deploy", `
concurrency: {limit: 1, policy: queue}
steps:
  - {name: only, script: 'echo "$OPSUITE_RUN_ID start" >> `+log+`; sleep 0.3; echo "$OPSUITE_RUN_ID end" >> `+log+`'}
`)
	var ids []string
	for i := range 5 {
		c := a.client
		if i%2 == 1 {
			c = b.client
		}
		res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "deploy"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.GetRun().GetId())
	}
	for _, id := range ids {
		if run := waitRun(t, b.client, id); run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
			t.Fatalf("run %s: %s %s", id, run.GetState(), run.GetMessage())
		}
	}
	lines := marks(t, log)
	if len(lines) != 2*len(ids) {
		t.Fatalf("marks %v, want a start and an end per run", lines)
	}
	for i := 0; i < len(lines); i += 2 {
		start, end := lines[i], lines[i+1]
		if !strings.HasSuffix(start, "/start") || strings.TrimSuffix(start, "/start") != strings.TrimSuffix(end, "/end") {
			t.Fatalf("runs overlap: %v", lines)
		}
	}
}

// TestCancelThroughTheOtherRunner: a run executing on one runner is
// cancelled through the other.
func TestCancelThroughTheOtherRunner(t *testing.T) {
	e := newEnv(t)
	a, b := startReplica(t, e, "runner-a"), startReplica(t, e, "runner-b")
	createPipeline(t, a.client, "slow", `
steps:
  - {name: wait, script: 'sleep 300'}
`)
	res, err := a.client.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetRun().GetId()
	waitProcessGroup(t, a.client, id, "wait")
	started := time.Now()
	if _, err := b.client.CancelRun(t.Context(), &pb.CancelRunRequest{Id: id, Reason: "enough"}); err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, b.client, id)
	if run.GetState() != pb.RunState_RUN_STATE_CANCELLED || !run.GetCancelRequested() {
		t.Fatalf("run %s: %s %s", id, run.GetState(), run.GetMessage())
	}
	if !strings.Contains(run.GetMessage(), "enough") {
		t.Errorf("message %q does not carry the reason", run.GetMessage())
	}
	t.Logf("cancelled through the other runner in %s", time.Since(started))
}

// TestRunTakenOverWhenItsRunnerIsCutOff: the runner executing a run loses
// NATS mid-step; the other resumes the run after the lease expired:
// finished steps are not run again, the interrupted one is retried, the
// run succeeds.
func TestRunTakenOverWhenItsRunnerIsCutOff(t *testing.T) {
	e := newEnv(t)
	a, b := startReplica(t, e, "runner-a"), startReplica(t, e, "runner-b")
	work := t.TempDir()
	log := filepath.Join(work, "marks")
	createPipeline(t, a.client, "long", `
steps:
  - {name: one, script: 'echo "$OPSUITE_RUN_ID one" >> `+log+`'}
  - name: two
    needs: [one]
    retry: {max_attempts: 2, backoff: 10ms}
    script: |
      echo "$OPSUITE_RUN_ID two" >> `+log+`
      if [ ! -f `+work+`/again ]; then touch `+work+`/again; sleep 300; fi
  - {name: three, needs: [two], script: 'echo "$OPSUITE_RUN_ID three" >> `+log+`'}
`)
	res, err := a.client.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "long"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetRun().GetId()
	waitProcessGroup(t, a.client, id, "two")
	a.mu.Lock()
	a.mayFail = true
	a.mu.Unlock()
	cut := time.Now()
	a.nc.Close()
	run := waitRun(t, b.client, id)
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatalf("run %s: %s %s", id, run.GetState(), run.GetMessage())
	}
	t.Logf("run finished %s after its runner was cut off", time.Since(cut))
	lines := marks(t, log)
	want := []string{id + "/one", id + "/two", id + "/two", id + "/three"}
	if !slices.Equal(lines, want) {
		t.Fatalf("marks %v, want %v (the interrupted step twice, the others once)", lines, want)
	}
	two := stepOf(t, run, "two")
	runners := make([]string, 0, len(two.GetAttempts()))
	for _, at := range two.GetAttempts() {
		runners = append(runners, fmt.Sprintf("%s:%s", at.GetRunner(), at.GetResult()))
	}
	if len(two.GetAttempts()) != 2 || two.GetAttempts()[0].GetRunner() != "runner-a" || two.GetAttempts()[1].GetRunner() != "runner-b" {
		t.Fatalf("attempts of two: %v", runners)
	}
	if one := stepOf(t, run, "one"); len(one.GetAttempts()) != 1 || one.GetAttempts()[0].GetRunner() != "runner-a" {
		t.Fatalf("step one attempts %v", one.GetAttempts())
	}
}

// TestCancelWhileItsRunnerIsGone: a run whose runner was cut off is
// cancelled through the other runner before anyone resumed it; the runner
// that resumes it honours the cancellation.
func TestCancelWhileItsRunnerIsGone(t *testing.T) {
	e := newEnv(t)
	a, b := startReplica(t, e, "runner-a"), startReplica(t, e, "runner-b")
	log := filepath.Join(t.TempDir(), "marks")
	createPipeline(t, a.client, "stuck", `
steps:
  - {name: wait, script: 'echo "$OPSUITE_RUN_ID wait" >> `+log+`; sleep 300'}
  - {name: after, needs: [wait], script: 'echo "$OPSUITE_RUN_ID after" >> `+log+`'}
`)
	res, err := a.client.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "stuck"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetRun().GetId()
	waitProcessGroup(t, a.client, id, "wait")
	a.mu.Lock()
	a.mayFail = true
	a.mu.Unlock()
	a.nc.Close()
	got, err := b.client.CancelRun(t.Context(), &pb.CancelRunRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetRun().GetCancelRequested() {
		t.Fatalf("cancel not recorded: %v", got.GetRun())
	}
	run := waitRun(t, b.client, id)
	if run.GetState() != pb.RunState_RUN_STATE_CANCELLED {
		t.Fatalf("run %s: %s %s", id, run.GetState(), run.GetMessage())
	}
	if lines := marks(t, log); count(lines, id+"/after") != 0 {
		t.Fatalf("a step after the cancellation ran: %v", lines)
	}
}
