package pipelinerunner_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/deployer"
	"github.com/opsuite/opsuite/services/healthchecker/checkertest"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// demoBinary builds the deployer's demo workload (answers VERSION, turns
// unhealthy with UNHEALTHY=1).
func demoBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "demoapp")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/opsuite/opsuite/examples/demoapp").CombinedOutput()
	if err != nil {
		t.Fatalf("build demoapp: %v\n%s", err, out)
	}
	return bin
}

func demoSpec(bin, version string, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec {
	return &deployerv1.ApplicationSpec{
		Workload: &deployerv1.ApplicationSpec_Process{Process: &deployerv1.ProcessCommand{Argv: []string{bin}}},
		Env:      append([]*deployerv1.EnvVar{{Name: "VERSION", Value: version}}, env...),
		Ports:    []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
		Replicas: 1,
		HealthCheck: &deployerv1.HealthCheck{
			Probe:    &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz"}},
			Interval: durationpb.New(100 * time.Millisecond), FailureThreshold: 2,
		},
		ProgressDeadline: durationpb.New(20 * time.Second),
		RollbackPolicy:   &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)},
	}
}

func serveGRPC(t *testing.T, register func(grpc.ServiceRegistrar)) *grpc.ClientConn {
	t.Helper()
	return grpctest.Serve(t, register, grpctest.Options{}).Conn
}

// TestDeployStep runs the real deployer (process driver) and
// health-checker: a deploy step whose rollout succeeds followed by a health
// gate, then one whose rollout is rolled back, which fails the step.
func TestDeployStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the deployer and real processes")
	}
	e := newEnv(t)
	hc := checkertest.Start(t)
	dep, err := deployer.New(deployer.Config{ProcessStateDir: t.TempDir(), Docker: "off"}, deployer.Deps{
		JetStream: e.js, Events: e.bus, HealthChecker: hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = dep.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-dep.Ready()
	dc := deployerv1.NewDeployerServiceClient(serveGRPC(t, dep.Register))
	bin := demoBinary(t)
	if _, err := dc.CreateApplication(t.Context(), &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: demoSpec(bin, "v1")}}); err != nil {
		t.Fatal(err)
	}
	inst := e.start(t, pipelinerunner.Deps{Deployer: dc, HealthChecker: hc})
	c := inst.client
	src, err := os.ReadFile("../../examples/pipelines/build-test-deploy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The bundled example; its gate waits on the group the deployer
	// registers for the app's replicas (<app>-<environment>).
	createPipeline(t, c, "", string(src))
	res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "build-test-deploy", Ref: "main"})
	if err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, c, res.GetRun().GetId())
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatalf("run %v: %s", run.GetState(), run.GetMessage())
	}
	d := stepOf(t, run, "deploy")
	if d.GetDeploy().GetRolloutState() != "succeeded" || d.GetDeploy().GetRollout() == "" {
		t.Fatalf("deploy step %v", d)
	}
	if g := stepOf(t, run, "health_check"); g.GetState() != pb.StepState_STEP_STATE_SUCCESS || !strings.HasPrefix(g.GetGate().GetObserved(), "healthy") {
		t.Fatalf("gate %v", g)
	}
	// On another branch the deploy and the gate are skipped by their conditions.
	res, _ = c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "build-test-deploy", Ref: "feature/x"})
	run = waitRun(t, c, res.GetRun().GetId())
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS || stepOf(t, run, "deploy").GetState() != pb.StepState_STEP_STATE_SKIPPED {
		t.Fatalf("feature run %v", run)
	}

	// A revision that never turns healthy is rolled back: the step fails.
	createPipeline(t, c, "broken-release", `
steps:
  - name: deploy
    deploy: {application: shop, env: {VERSION: v2, UNHEALTHY: "1"}}
  - {name: health_check, gate: {health: shop-default}, timeout: 30s}
`)
	res, _ = c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "broken-release", Ref: "main"})
	run = waitRun(t, c, res.GetRun().GetId())
	d = stepOf(t, run, "deploy")
	if run.GetState() != pb.RunState_RUN_STATE_FAILED || d.GetState() != pb.StepState_STEP_STATE_FAILED ||
		d.GetDeploy().GetRolloutState() != "rolled_back" || !strings.Contains(d.GetMessage(), "rolled back") {
		t.Fatalf("rolled back deploy: run %v step %v", run.GetState(), d)
	}
	if d.GetAttempts()[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED {
		t.Errorf("a rollback is the step's own failure: %v", d.GetAttempts()[0])
	}
	if g := stepOf(t, run, "health_check"); g.GetState() != pb.StepState_STEP_STATE_SKIPPED {
		t.Errorf("gate after a failed deploy: %v", g)
	}
	t.Logf("rolled back: %s", d.GetMessage())
}
