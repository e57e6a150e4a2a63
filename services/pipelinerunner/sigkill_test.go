package pipelinerunner_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRunnerChild is the runner process TestSIGKILLRunnerResumes kills;
// it only runs as that test's child.
func TestRunnerChild(t *testing.T) {
	url := os.Getenv("PIPELINERUNNER_CHILD_NATS")
	if url == "" {
		t.Skip("only runs as the child of TestSIGKILLRunnerResumes")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	bus, err := eventbus.New(context.Background(), nc, eventbus.Config{Source: "opsuite/pipelinerunner"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pipelinerunner.New(pipelinerunner.Config{DataDir: os.Getenv("PIPELINERUNNER_CHILD_DATA"), RunnerName: "child", Docker: "off", LeaseTTL: 2 * time.Second},
		pipelinerunner.Deps{JetStream: js, Events: bus})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = svc.Run(context.Background()) }()
	<-svc.Ready()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	addrFile := os.Getenv("PIPELINERUNNER_CHILD_ADDR")
	if err := os.WriteFile(addrFile+".tmp", []byte(lis.Addr().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Rename(addrFile+".tmp", addrFile)
	_ = gs.Serve(lis) // until SIGKILL
}

// TestSIGKILLRunnerResumes kills a runner process with SIGKILL while a
// multi-step run is in its second step, then starts a new runner on the
// same NATS and data dir: the orphaned process group of the interrupted
// step is killed, finished steps are not run again, the interrupted step is
// retried by its policy and the run completes.
func TestSIGKILLRunnerResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	natsDir, dataDir, work := t.TempDir(), t.TempDir(), t.TempDir()
	ns, err := natsembed.Start(natsembed.Config{DataDir: natsDir, ListenAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	addrFile := filepath.Join(work, "addr")
	child := exec.Command(os.Args[0], "-test.run=^TestRunnerChild$", "-test.count=1")
	child.Env = append(os.Environ(), "PIPELINERUNNER_CHILD_NATS="+ns.ClientURL(), "PIPELINERUNNER_CHILD_DATA="+dataDir, "PIPELINERUNNER_CHILD_ADDR="+addrFile)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	var addr []byte
	for i := 0; i < 600 && len(addr) == 0; i++ {
		addr, _ = os.ReadFile(addrFile)
		time.Sleep(50 * time.Millisecond)
	}
	if len(addr) == 0 {
		t.Fatal("child runner did not start")
	}
	conn, err := grpc.NewClient(string(addr), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewPipelineRunnerServiceClient(conn)
	marks := filepath.Join(work, "marks")
	createPipeline(t, c, "crash", `
steps:
  - {name: one, script: 'echo one >> `+marks+`'}
  - name: two
    retry: {max_attempts: 2, backoff: 10ms}
    script: |
      if [ -f `+work+`/started ]; then echo two-again >> `+marks+`; exit 0; fi
      touch `+work+`/started
      echo two-start >> `+marks+`
      sleep 300
  - {name: three, script: 'echo three >> `+marks+`'}
`)
	res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetRun().GetId()
	pg := waitProcessGroup(t, c, id, "two")
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if err := syscall.Kill(-pg, 0); err != nil {
		t.Fatalf("the step's process group %d should outlive the SIGKILLed runner (orphan): %v", pg, err)
	}

	// A new runner on the same NATS and data dir.
	nc, err := ns.Connect("second")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bus, err := eventbus.New(t.Context(), nc, eventbus.Config{Source: "opsuite/pipelinerunner"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{js: js, bus: bus, dataDir: dataDir}
	second := e.start(t, pipelinerunner.Deps{})
	run := waitRun(t, second.client, id)
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatalf("run %v: %s", run.GetState(), run.GetMessage())
	}
	if groupAlive(pg) {
		t.Fatalf("orphaned process group %d of the killed runner still runs", pg)
	}
	b, _ := os.ReadFile(marks)
	if got := string(b); got != "one\ntwo-start\ntwo-again\nthree\n" {
		t.Fatalf("marks %q", got)
	}
	two := stepOf(t, run, "two")
	if a := two.GetAttempts(); len(a) != 2 || a[0].GetRunner() != "child" || a[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR || a[1].GetRunner() != "test" {
		t.Fatalf("attempts %v", a)
	}
	list, _ := second.client.ListRuns(t.Context(), &pb.ListRunsRequest{States: []pb.RunState{pb.RunState_RUN_STATE_RUNNING}})
	if len(list.GetRuns()) != 0 {
		t.Fatalf("running records left: %v", list.GetRuns())
	}
	for _, s := range run.GetSteps() {
		if strings.HasSuffix(s.GetState().String(), "RUNNING") {
			t.Fatalf("step %s left running", s.GetId())
		}
	}
}
