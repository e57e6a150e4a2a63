package integration_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
)

// kubeconfigOrSkip is the harness's kubeconfig (make test-kube); without
// it the test skips, unless OPSUITE_REQUIRE_KUBE is 1.
func kubeconfigOrSkip(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary and needs a cluster")
	}
	path := os.Getenv("OPSUITE_KUBECONFIG")
	if path == "" {
		if os.Getenv("OPSUITE_REQUIRE_KUBE") == "1" {
			t.Fatal("OPSUITE_REQUIRE_KUBE=1 but OPSUITE_KUBECONFIG is not set")
		}
		t.Skip("no Kubernetes harness: OPSUITE_KUBECONFIG is not set (make test-kube starts one)")
	}
	return path
}

func deployerClient(t *testing.T, addr string) deployerv1.DeployerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(tokenCreds{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return deployerv1.NewDeployerServiceClient(conn)
}

// rolloutEvents counts the rollout events published on NATS per type, for
// one rollout id.
type rolloutEvents struct {
	mu     sync.Mutex
	counts map[string]int
}

func watchRolloutEvents(t *testing.T, natsURL, id string) *rolloutEvents {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ev := &rolloutEvents{counts: map[string]int{}}
	if _, err := nc.Subscribe("opsuite.deploy.rollout.>", func(m *nats.Msg) {
		// Every rollout event carries the rollout as its first field.
		var any eventsv1.RolloutCompleted
		if err := proto.Unmarshal(m.Data, &any); err != nil || any.GetRollout().GetId() != id {
			return
		}
		ev.mu.Lock()
		ev.counts[strings.TrimPrefix(m.Subject, "opsuite.deploy.rollout.")]++
		ev.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *rolloutEvents) count(typ string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[typ]
}

// TestDeployerReplicasShareRolloutsOnKubernetes runs two deployer replicas
// in split mode against one NATS and the harness cluster. A canary started
// through replica A is promoted through replica B (the signal reaches A,
// which drives it); A is killed with SIGKILL mid-rollout; B takes the
// rollout over once A's lease expires and finishes it on a promotion:
// exactly one completion event, all pods of the new revision.
func TestDeployerReplicasShareRolloutsOnKubernetes(t *testing.T) {
	kubeconfig := kubeconfigOrSkip(t)
	ns := startNATS(t)
	natsURL := ns.ClientURL()
	hcAddr := freeAddr(t)
	startOpsuite(t, freeAddr(t), "serve", "--target=healthchecker", "--nats-url", natsURL, "--grpc-addr", hcAddr, "--data-dir", t.TempDir())
	replica := func() (*proc, string) {
		addr := freeAddr(t)
		p := startOpsuite(t, freeAddr(t), "serve", "--target=deployer", "--nats-url", natsURL, "--grpc-addr", addr,
			"--healthchecker-addr", hcAddr, "--kubeconfig", kubeconfig, "--docker", "off", "--data-dir", t.TempDir())
		return p, addr
	}
	procA, addrA := replica()
	_, addrB := replica()
	a, b := deployerClient(t, addrA), deployerClient(t, addrB)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	app := "replicas-" + strings.ToLower(strings.ReplaceAll(time.Now().Format("150405.000"), ".", ""))
	spec := func(version string, strategy *deployerv1.Strategy) *deployerv1.ApplicationSpec {
		return &deployerv1.ApplicationSpec{
			Workload: &deployerv1.ApplicationSpec_Image{Image: "registry.example/opsuite/demo:" + version},
			Ports:    []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
			Replicas: 3,
			HealthCheck: &deployerv1.HealthCheck{
				Probe: &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz", Port: 8080}},
			},
			Driver:           &deployerv1.DriverConfig{Driver: &deployerv1.DriverConfig_Kubernetes{Kubernetes: &deployerv1.KubernetesOptions{}}},
			ProgressDeadline: durationpb.New(time.Minute),
			RollbackPolicy:   &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)},
			Strategy:         strategy,
		}
	}
	if _, err := a.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: app, Spec: spec("v1", nil)}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = b.DeleteApplication(context.Background(), &deployerv1.DeleteApplicationRequest{Name: app, Force: true})
	})
	wait := func(c deployerv1.DeployerServiceClient, id string, d time.Duration, want deployerv1.RolloutPhase, step int32) *deployerv1.Rollout {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			resp, err := c.GetRollout(ctx, &deployerv1.GetRolloutRequest{Application: app, Id: id})
			if err != nil {
				t.Fatal(err)
			}
			r := resp.GetRollout()
			if r.GetPhase() == want && r.GetCurrentStepIndex() >= step {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("rollout %s: %s at step %d (%s), want %s at step %d or later", id, r.GetPhase(), r.GetCurrentStepIndex(), r.GetMessage(), want, step)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	first, err := a.Deploy(ctx, &deployerv1.DeployRequest{Name: app, Source: &deployerv1.DeployRequest_Spec{Spec: spec("v1", nil)}})
	if err != nil {
		t.Fatal(err)
	}
	wait(a, first.GetRollout().GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, -1)

	canary := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 33}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 66}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
	}}}}
	dep, err := a.Deploy(ctx, &deployerv1.DeployRequest{Name: app, Source: &deployerv1.DeployRequest_Spec{Spec: spec("v2", canary)}})
	if err != nil {
		t.Fatal(err)
	}
	id := dep.GetRollout().GetId()
	events := watchRolloutEvents(t, natsURL, id)
	r := wait(b, id, 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED, -1)
	firstPause := r.GetCurrentStepIndex()

	// Promoted through B: A drives the rollout and gets the signal.
	if _, err := b.Promote(ctx, &deployerv1.PromoteRequest{Name: app, Environment: "default"}); err != nil {
		t.Fatalf("promote through the replica that does not drive the rollout: %v", err)
	}
	r = wait(b, id, 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED, firstPause+1)
	t.Logf("paused at step %d (weight %d) after the forwarded promotion", r.GetCurrentStepIndex(), r.GetCanaryWeight())

	// A dies mid-rollout; B takes the rollout over once A's lease expires
	// and holds it paused where it was.
	procA.kill()
	killed := time.Now()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := b.Promote(ctx, &deployerv1.PromoteRequest{Name: app, Environment: "default"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never took the rollout over: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("B took the rollout over and accepted the promotion %s after A was killed", time.Since(killed).Round(100*time.Millisecond))
	r = wait(b, id, 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, -1)
	if r.GetToRevision() != 2 {
		t.Fatalf("rollout ended on revision %d", r.GetToRevision())
	}
	reps, err := b.ListReplicas(ctx, &deployerv1.ListReplicasRequest{Application: app})
	if err != nil {
		t.Fatal(err)
	}
	byRev := map[uint32]int{}
	for _, p := range reps.GetReplicas() {
		byRev[p.GetRevision()]++
	}
	if byRev[2] != 3 || len(byRev) != 1 {
		t.Fatalf("pods after the takeover: %v, want 3 of revision 2", byRev)
	}
	// Events settle: one completion, by B, and no second start.
	time.Sleep(time.Second)
	if n := events.count("completed"); n != 1 {
		t.Fatalf("%d completion events for rollout %s, want exactly 1", n, id)
	}
	if n := events.count("rolled_back"); n != 0 {
		t.Fatalf("%d rolled_back events, want 0", n)
	}
}
