package deployer_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opsuite/opsuite/pkg/grpcserver/grpctest"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/deployer"
	"github.com/opsuite/opsuite/services/deployer/internal/demoapp"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
	"github.com/opsuite/opsuite/services/healthchecker/checkertest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

var demoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deployer-demo-")
	if err != nil {
		panic(err)
	}
	if demoBin, err = demoapp.Build(dir, false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// serve runs a gRPC server over an in-memory listener and returns a client conn.
func serve(t *testing.T, register func(grpc.ServiceRegistrar)) *grpc.ClientConn {
	t.Helper()
	return grpctest.Serve(t, register, grpctest.Options{}).Conn
}

// suite is NATS, the health-checker and one deployer instance that can be
// restarted on the same state.
type suite struct {
	nats     *natstest.Server
	bus      *eventbus.Bus
	hc       hcv1.HealthCheckerServiceClient
	stateDir string
	client   deployerv1.DeployerServiceClient
	stop     func()
	extra    map[string]driver.Driver
	// kube, when set, is the deployer's kubernetes driver.
	kube *kubernetes.Platform
}

func newSuite(t *testing.T) *suite { return newSuiteWith(t, nil) }

// newSuiteWith adds drivers beside the process driver.
func newSuiteWith(t *testing.T, extra map[string]driver.Driver) *suite {
	t.Helper()
	return newSuiteOn(t, extra, nil)
}

// newSuiteOn adds drivers beside the process driver, and kube as the
// kubernetes driver when not nil.
func newSuiteOn(t *testing.T, extra map[string]driver.Driver, kube *kubernetes.Platform) *suite {
	t.Helper()
	s := &suite{nats: natstest.Start(t, ""), stateDir: t.TempDir(), kube: kube}
	var err error
	s.bus, err = eventbus.New(t.Context(), s.nats.Conn, eventbus.Config{Source: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.hc = checkertest.Start(t)
	s.extra = extra
	s.startDeployer(t)
	return s
}

func (s *suite) startDeployer(t *testing.T) {
	t.Helper()
	drv, err := process.New(process.Config{StateDir: s.stateDir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	drivers := map[string]driver.Driver{"process": drv}
	for k, d := range s.extra {
		drivers[k] = d
	}
	svc, err := deployer.New(deployer.Config{}, deployer.Deps{
		JetStream: s.nats.JetStream, Events: s.bus, HealthChecker: s.hc, Drivers: drivers, Kubernetes: s.kube,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	<-svc.Ready()
	s.client = deployerv1.NewDeployerServiceClient(serve(t, svc.Register))
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		_ = drv.Close()
	}
	t.Cleanup(func() {
		s.stop()
		// Leave no process behind.
		d, err := process.New(process.Config{StateDir: s.stateDir}, nil)
		if err == nil {
			reps, _ := d.List(context.Background(), nil)
			for _, r := range reps {
				_ = d.Stop(context.Background(), r.ID, time.Second)
			}
			_ = d.Close()
		}
	})
}

func appSpec(version string, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec {
	return &deployerv1.ApplicationSpec{
		Workload: &deployerv1.ApplicationSpec_Process{Process: &deployerv1.ProcessCommand{Argv: []string{demoBin}}},
		Env:      append([]*deployerv1.EnvVar{{Name: "VERSION", Value: version}}, env...),
		Ports:    []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
		Replicas: 2,
		HealthCheck: &deployerv1.HealthCheck{
			Probe:    &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz"}},
			Interval: durationpb.New(100 * time.Millisecond), FailureThreshold: 2,
		},
		ProgressDeadline: durationpb.New(30 * time.Second),
		RollbackPolicy:   &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)},
	}
}

func (s *suite) waitRollout(t *testing.T, id string) *deployerv1.Rollout {
	t.Helper()
	return s.waitRolloutOf(t, "shop", id)
}

func (s *suite) waitRolloutOf(t *testing.T, app, id string) *deployerv1.Rollout {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := s.client.GetRollout(t.Context(), &deployerv1.GetRolloutRequest{Application: app, Id: id})
		if err != nil {
			t.Fatal(err)
		}
		switch resp.GetRollout().GetPhase() {
		case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
			// The environment records the outcome just after.
			time.Sleep(100 * time.Millisecond)
			return resp.GetRollout()
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s still %s", id, resp.GetRollout().GetPhase())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *suite) endpoint(t *testing.T) string {
	t.Helper()
	resp, err := s.client.GetApplication(t.Context(), &deployerv1.GetApplicationRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetApplication().GetEnvironments()[0].GetStatus().GetEndpoint()
}

func served(t *testing.T, url string) string {
	t.Helper()
	var last string
	for range 10 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if last != "" && string(body) != last {
			t.Fatalf("mixed versions: %q then %q", last, body)
		}
		last = string(body)
	}
	return last
}

// deploy deploys spec and follows the rollout on the WatchRollout stream
// until it ends.
func (s *suite) deploy(t *testing.T, spec *deployerv1.ApplicationSpec) *deployerv1.Rollout {
	t.Helper()
	resp, err := s.client.Deploy(t.Context(), &deployerv1.DeployRequest{Name: "shop", Source: &deployerv1.DeployRequest_Spec{Spec: spec}, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	watch, err := s.client.WatchRollout(ctx, &deployerv1.WatchRolloutRequest{Application: "shop", Id: resp.GetRollout().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var last *deployerv1.Rollout
	updates := 0
	for {
		msg, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("watch rollout: %v", err)
		}
		last = msg.GetRollout()
		updates++
	}
	if last == nil || updates < 2 {
		t.Fatalf("watch saw %d updates", updates)
	}
	return s.waitRollout(t, last.GetId())
}

func TestDeployRollbackAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	events, err := s.nats.Conn.SubscribeSync("opsuite.deploy.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: appSpec("v1")}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "Bad Name", Spec: appSpec("v1")}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid name: %v, want InvalidArgument", err)
	}

	r := s.deploy(t, appSpec("v1"))
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetToRevision() != 1 {
		t.Fatalf("v1: %s to revision %d: %s", r.GetPhase(), r.GetToRevision(), r.GetMessage())
	}
	url := s.endpoint(t)
	if got := served(t, url); got != "v1" {
		t.Fatalf("serves %q, want v1", got)
	}
	// The same spec again changes nothing.
	resp, err := s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: "shop"})
	if err != nil || !resp.GetUnchanged() {
		t.Fatalf("redeploy of the same spec: %v %v, want unchanged", resp, err)
	}

	r = s.deploy(t, appSpec("v2"))
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetFromRevision() != 1 || r.GetToRevision() != 2 {
		t.Fatalf("v2: %s %d→%d: %s", r.GetPhase(), r.GetFromRevision(), r.GetToRevision(), r.GetMessage())
	}
	if got := served(t, url); got != "v2" {
		t.Fatalf("serves %q, want v2", got)
	}

	r = s.deploy(t, appSpec("v3", &deployerv1.EnvVar{Name: "UNHEALTHY", Value: "1"}))
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK {
		t.Fatalf("broken v3: %s: %s", r.GetPhase(), r.GetMessage())
	}
	t.Logf("v3: %s", r.GetMessage())
	if got := served(t, url); got != "v2" {
		t.Fatalf("after the failed v3 serves %q, want v2", got)
	}

	rb, err := s.client.Rollback(ctx, &deployerv1.RollbackRequest{Name: "shop", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	r = s.waitRollout(t, rb.GetRollout().GetId())
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetToRevision() != 1 {
		t.Fatalf("rollback: %s to %d: %s", r.GetPhase(), r.GetToRevision(), r.GetMessage())
	}
	if got := served(t, url); got != "v1" {
		t.Fatalf("after rollback serves %q, want v1", got)
	}

	// The rollouts were published as events.
	seen := map[string]int{}
	for {
		m, err := events.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		seen[m.Subject]++
		if m.Header.Get("ce-source") != "test" || m.Header.Get("ce-id") == "" {
			t.Fatalf("event %s without CloudEvents headers: %v", m.Subject, m.Header)
		}
	}
	for subject, atLeast := range map[string]int{
		"opsuite.deploy.rollout.started": 4, "opsuite.deploy.rollout.step_changed": 4,
		"opsuite.deploy.rollout.completed": 3, "opsuite.deploy.rollout.rolled_back": 1,
		// v1 starts 2; v2 starts 2 and stops 2; the broken v3 starts 1 and
		// stops it; the rollback to v1 starts 2 and stops 2.
		"opsuite.deploy.replica.started": 7, "opsuite.deploy.replica.stopped": 5,
	} {
		if seen[subject] < atLeast {
			t.Errorf("%d %s events, want at least %d (all: %v)", seen[subject], subject, atLeast, seen)
		}
	}

	// Restart the deployer: the router comes back on the same endpoint.
	s.stop()
	s.startDeployer(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "v1" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart %s does not serve v1 (%v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	list, err := s.client.ListRollouts(ctx, &deployerv1.ListRolloutsRequest{Application: "shop"})
	if err != nil || len(list.GetRollouts()) != 4 {
		t.Fatalf("rollouts after restart: %d %v, want 4", len(list.GetRollouts()), err)
	}
	if _, err := s.client.DeleteApplication(ctx, &deployerv1.DeleteApplicationRequest{Name: "shop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("router still answers after the application was deleted")
	}
}

func TestPlanDeployChangesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	v1 := appSpec("v1", &deployerv1.EnvVar{Name: "TOKEN", Value: "hunter2", Secret: true})
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: v1}}); err != nil {
		t.Fatal(err)
	}
	first, err := s.client.PlanDeploy(ctx, &deployerv1.PlanDeployRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if p := first.GetPlan(); !p.GetNewRevision() || p.GetFromRevision() != 0 || len(p.GetSteps()) != 1 || p.GetSteps()[0].GetNewReplicas() != 2 {
		t.Fatalf("first plan: %v", p)
	}
	if r := s.deploy(t, v1); r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("v1: %s", r.GetMessage())
	}
	same, err := s.client.PlanDeploy(ctx, &deployerv1.PlanDeployRequest{Name: "shop"})
	if err != nil || !same.GetPlan().GetUnchanged() {
		t.Fatalf("plan of the serving spec: %v %v, want unchanged", same, err)
	}
	v2 := appSpec("v2", &deployerv1.EnvVar{Name: "TOKEN", Value: "hunter3", Secret: true})
	next, err := s.client.PlanDeploy(ctx, &deployerv1.PlanDeployRequest{Name: "shop", Source: &deployerv1.PlanDeployRequest_Spec{Spec: v2}})
	if err != nil {
		t.Fatal(err)
	}
	p := next.GetPlan()
	if !p.GetNewRevision() || p.GetFromRevision() != 1 || len(p.GetChanges()) != 1 || p.GetChanges()[0].GetPath() != "env" {
		t.Fatalf("plan to v2: %v", p)
	}
	if c := p.GetChanges()[0]; strings.Contains(c.GetOldValue()+c.GetNewValue(), "hunter") || !strings.Contains(c.GetNewValue(), "v2") {
		t.Fatalf("env change %v: secrets must be masked and the version shown", c)
	}
	if len(p.GetSteps()) != 4 || p.GetExpectedDuration().AsDuration() <= 0 {
		t.Fatalf("rolling 2 replicas: %d steps, %s expected", len(p.GetSteps()), p.GetExpectedDuration().AsDuration())
	}
	// Planning created nothing.
	revs, err := s.client.ListRevisions(ctx, &deployerv1.ListRevisionsRequest{Application: "shop"})
	if err != nil || len(revs.GetRevisions()) != 1 {
		t.Fatalf("revisions after planning: %v %v", revs, err)
	}
}

func TestScaleAndListReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: appSpec("v1")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Scale(ctx, &deployerv1.ScaleRequest{Name: "shop", Replicas: 3}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("scale before any deploy: %v, want FailedPrecondition", err)
	}
	s.deploy(t, appSpec("v1"))
	count := func() int {
		resp, err := s.client.ListReplicas(ctx, &deployerv1.ListReplicasRequest{Application: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetReplicas() {
			if r.GetState() != deployerv1.ReplicaState_REPLICA_STATE_RUNNING || r.GetHostPort() == 0 || r.GetRevision() != 1 ||
				r.GetHealth() != deployerv1.HealthState_HEALTH_STATE_HEALTHY || !r.GetInRotation() {
				t.Fatalf("replica %v: want running, healthy and in rotation", r)
			}
		}
		return len(resp.GetReplicas())
	}
	if n := count(); n != 2 {
		t.Fatalf("%d replicas, want 2", n)
	}
	for _, want := range []int32{4, 1} {
		if _, err := s.client.Scale(ctx, &deployerv1.ScaleRequest{Name: "shop", Replicas: want}); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != int(want) {
			t.Fatalf("after scaling to %d: %d replicas", want, n)
		}
		if got := served(t, s.endpoint(t)); got != "v1" {
			t.Fatalf("serves %q", got)
		}
	}
	if _, err := s.client.Scale(ctx, &deployerv1.ScaleRequest{Name: "shop", Replicas: -1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative scale: %v", err)
	}
	// A later deploy keeps the scaled count.
	if r := s.deploy(t, appSpec("v2")); r.GetDesiredReplicas() != 1 {
		t.Fatalf("deploy after scale to 1 wants %d replicas", r.GetDesiredReplicas())
	}
}

// TestFailingRevisionIsRolledBackAndCounted deploys a canary that passes its
// health check but answers 500 while requests flow: the deployer rolls it
// back on the router's error counts and the rollout says how many failed.
func TestFailingRevisionIsRolledBackAndCounted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: appSpec("v1")}}); err != nil {
		t.Fatal(err)
	}
	s.deploy(t, appSpec("v1"))
	url := s.endpoint(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < 5000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if resp, err := http.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	bad := appSpec("v2", &deployerv1.EnvVar{Name: "FAIL", Value: "1"})
	bad.Strategy = &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 50}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{Duration: durationpb.New(20 * time.Second)}}},
	}}}}
	r := s.deploy(t, bad)
	close(stop)
	<-done
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS {
		t.Fatalf("failing v2: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
	if r.GetFailedRequests() == 0 || r.GetTotalRequests() < r.GetFailedRequests() {
		t.Fatalf("rollout counted %d failed of %d requests", r.GetFailedRequests(), r.GetTotalRequests())
	}
	t.Logf("%s; %d of %d requests failed during the rollout", r.GetMessage(), r.GetFailedRequests(), r.GetTotalRequests())
	if got := served(t, url); got != "v1" {
		t.Fatalf("after rollback serves %q", got)
	}
}
