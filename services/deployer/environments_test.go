package deployer_test

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func (s *suite) deployTo(t *testing.T, req *deployerv1.DeployRequest) *deployerv1.Rollout {
	t.Helper()
	resp, err := s.client.Deploy(t.Context(), req)
	if err != nil {
		t.Fatalf("deploy %v: %v", req, err)
	}
	return s.waitRollout(t, resp.GetRollout().GetId())
}

func (s *suite) envStatus(t *testing.T, env string) *deployerv1.EnvironmentStatus {
	t.Helper()
	resp, err := s.client.GetApplication(t.Context(), &deployerv1.GetApplicationRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.GetApplication().GetEnvironments() {
		if e.GetName() == env {
			return e.GetStatus()
		}
	}
	t.Fatalf("no environment %s", env)
	return nil
}

// TestEnvironmentPromotion: production requires staging; a revision goes
// to production only once proven in staging, by promotion.
func TestEnvironmentPromotion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	app := &deployerv1.Application{Name: "shop", Spec: appSpec("v1"), Environments: []*deployerv1.Environment{
		{Name: "staging"},
		{Name: "production", RequiresEnvironment: "staging"},
	}}
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: app}); err != nil {
		t.Fatal(err)
	}
	// Straight to production: refused, saying what to do.
	_, err := s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: "shop", Environment: "production", Source: &deployerv1.DeployRequest_Spec{Spec: appSpec("v1")}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "promote it with from_environment=staging") {
		t.Fatalf("unproven deploy to production: %v", err)
	}
	// Promoting from an environment with nothing deployed is refused too.
	_, err = s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: "shop", Environment: "production", Source: &deployerv1.DeployRequest_FromEnvironment{FromEnvironment: "staging"}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("promotion from an empty staging: %v", err)
	}
	r := s.deployTo(t, &deployerv1.DeployRequest{Name: "shop", Environment: "staging", Source: &deployerv1.DeployRequest_Spec{Spec: appSpec("v1")}})
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("staging: %s: %s", r.GetPhase(), r.GetMessage())
	}
	r = s.deployTo(t, &deployerv1.DeployRequest{Name: "shop", Environment: "production", Source: &deployerv1.DeployRequest_FromEnvironment{FromEnvironment: "staging"}})
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetKind() != deployerv1.RolloutKind_ROLLOUT_KIND_ENVIRONMENT_PROMOTION ||
		r.GetPromotedFromEnvironment() != "staging" || r.GetToRevision() != 1 {
		t.Fatalf("promotion: %v", r)
	}
	if got := served(t, s.envStatus(t, "production").GetEndpoint()); got != "v1" {
		t.Fatalf("production serves %q", got)
	}
	rev, err := s.client.GetRevision(ctx, &deployerv1.GetRevisionRequest{Application: "shop", Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]bool{}
	for _, e := range rev.GetRevision().GetEnvironments() {
		good[e.GetEnvironment()] = e.GetKnownGood()
	}
	if !good["staging"] || !good["production"] {
		t.Fatalf("revision 1 records %v, want known good in both", rev.GetRevision().GetEnvironments())
	}
	for _, tc := range []struct{ from, field string }{{"production", "from_environment"}, {"qa", "from_environment"}} {
		_, err := s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: "shop", Environment: "production", Source: &deployerv1.DeployRequest_FromEnvironment{FromEnvironment: tc.from}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Fatalf("from %q: %v, want InvalidArgument naming %s", tc.from, err, tc.field)
		}
	}
}

// TestSupersede: a deploy with supersede stops the rollout in progress where
// it stands and moves on to the new revision; without it, it is refused.
func TestSupersede(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: appSpec("v1")}}); err != nil {
		t.Fatal(err)
	}
	s.deploy(t, appSpec("v1"))
	held := appSpec("v2")
	held.Strategy = &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 50}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
	}}}}
	resp, err := s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: "shop", Source: &deployerv1.DeployRequest_Spec{Spec: held}})
	if err != nil {
		t.Fatal(err)
	}
	first := resp.GetRollout().GetId()
	waitPhase(t, s, first, deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED)

	v3 := &deployerv1.DeployRequest{Name: "shop", Source: &deployerv1.DeployRequest_Spec{Spec: appSpec("v3")}}
	if _, err := s.client.Deploy(ctx, v3); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("deploy during a rollout: %v, want FailedPrecondition", err)
	}
	v3.Supersede = true
	r := s.deployTo(t, v3)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetFromRevision() != 1 {
		t.Fatalf("superseding rollout: %s from %d: %s", r.GetPhase(), r.GetFromRevision(), r.GetMessage())
	}
	old, err := s.client.GetRollout(ctx, &deployerv1.GetRolloutRequest{Id: first})
	if err != nil {
		t.Fatal(err)
	}
	if old.GetRollout().GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED || !strings.Contains(old.GetRollout().GetMessage(), "superseded") {
		t.Fatalf("superseded rollout: %s: %s", old.GetRollout().GetPhase(), old.GetRollout().GetMessage())
	}
	if got := served(t, s.endpoint(t)); got != "v3" {
		t.Fatalf("serves %q, want v3", got)
	}
	reps, err := s.client.ListReplicas(ctx, &deployerv1.ListReplicasRequest{Application: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reps.GetReplicas() {
		if rep.GetRevision() != 3 {
			t.Fatalf("replica %s of revision %d left behind", rep.GetId(), rep.GetRevision())
		}
	}
}

func waitPhase(t *testing.T, s *suite, id string, phase deployerv1.RolloutPhase) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, err := s.client.GetRollout(t.Context(), &deployerv1.GetRolloutRequest{Id: id})
		if err == nil && r.GetRollout().GetPhase() == phase {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("rollout %s never reached %s", id, phase)
}

// TestUnhealthyReplicaIsAnnounced: a replica that hangs after it served
// (SIGSTOP: its checks time out) is taken out of rotation and announced with
// its last output; requests keep being answered by the other replica, and
// the hung one rejoins once it answers again.
func TestUnhealthyReplicaIsAnnounced(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: appSpec("v1")}}); err != nil {
		t.Fatal(err)
	}
	s.deploy(t, appSpec("v1"))
	sub, err := s.nats.Conn.SubscribeSync("opsuite.deploy.replica.unhealthy")
	if err != nil {
		t.Fatal(err)
	}
	reps, err := s.client.ListReplicas(ctx, &deployerv1.ListReplicasRequest{Application: "shop"})
	if err != nil || len(reps.GetReplicas()) != 2 {
		t.Fatalf("replicas %v, %v", reps, err)
	}
	victim := reps.GetReplicas()[0]
	pid := int(victim.GetProcess().GetPid())
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	msg, err := sub.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("no unhealthy event: %v", err)
	}
	var ev eventsv1.ReplicaUnhealthy
	if err := proto.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetReplica().GetId() != victim.GetId() || ev.GetCheckMessage() == "" {
		t.Fatalf("event %v, want replica %s with the check's message", &ev, victim.GetId())
	}
	if out := strings.Join(ev.GetRecentOutput(), "\n"); !strings.Contains(out, "demoapp v1 listening") {
		t.Fatalf("recent output %q should hold the replica's start line", out)
	}
	// Out of rotation: every request goes to the survivor, none hangs.
	client := &http.Client{Timeout: 2 * time.Second}
	for range 20 {
		resp, err := client.Get(s.endpoint(t))
		if err != nil {
			t.Fatalf("request while a replica hangs: %v", err)
		}
		resp.Body.Close()
	}
	// Back in rotation once it answers again: the health-checker reports it
	// passing and requests reach it (its pid answers).
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	watch, err := s.hc.Watch(ctx, &hcv1.WatchRequest{Names: []string{victim.GetHealthTarget()}, InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		tr, err := watch.Recv()
		if err != nil {
			t.Fatalf("watch %s: %v", victim.GetHealthTarget(), err)
		}
		if tr.GetTransition().GetState() == hcv1.CheckState_CHECK_STATE_PASSING {
			break
		}
	}
}

// TestUpdateApplication changes parts of an application by field mask; the
// next deploy without a source rolls out the changed spec.
func TestUpdateApplication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	app := &deployerv1.Application{Name: "shop", Spec: appSpec("v1"), Environments: []*deployerv1.Environment{{Name: "staging"}}}
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: app}); err != nil {
		t.Fatal(err)
	}
	r := s.deployTo(t, &deployerv1.DeployRequest{Name: "shop", Environment: "staging"})
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetDesiredReplicas() != 2 {
		t.Fatalf("first deploy: %s, %d replicas", r.GetPhase(), r.GetDesiredReplicas())
	}
	mask := func(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
	upd, err := s.client.UpdateApplication(ctx, &deployerv1.UpdateApplicationRequest{
		Application: &deployerv1.Application{Name: "shop", Description: "the shop", Spec: &deployerv1.ApplicationSpec{Replicas: 3}},
		UpdateMask:  mask("description", "spec.replicas"),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := upd.GetApplication()
	if got.GetDescription() != "the shop" || got.GetSpec().GetReplicas() != 3 || got.GetSpec().GetProcess() == nil ||
		got.GetEnvironments()[0].GetStatus().GetCurrentRevision() != 1 {
		t.Fatalf("after update: %v", got)
	}
	r = s.deployTo(t, &deployerv1.DeployRequest{Name: "shop", Environment: "staging"})
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetDesiredReplicas() != 3 || r.GetToRevision() != 2 {
		t.Fatalf("deploy of the updated spec: %s, revision %d, %d replicas", r.GetPhase(), r.GetToRevision(), r.GetDesiredReplicas())
	}
	for _, tc := range []struct {
		name string
		req  *deployerv1.UpdateApplicationRequest
		code codes.Code
		want string
	}{
		{"unknown path", &deployerv1.UpdateApplicationRequest{Application: &deployerv1.Application{Name: "shop"}, UpdateMask: mask("status")}, codes.InvalidArgument, "update_mask"},
		{"invalid value", &deployerv1.UpdateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: &deployerv1.ApplicationSpec{Replicas: -1}}, UpdateMask: mask("spec.replicas")}, codes.InvalidArgument, "spec.replicas"},
		{"remove a serving environment", &deployerv1.UpdateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Environments: []*deployerv1.Environment{{Name: "prod"}}}, UpdateMask: mask("environments")}, codes.FailedPrecondition, "staging serves revision 2"},
		{"unknown application", &deployerv1.UpdateApplicationRequest{Application: &deployerv1.Application{Name: "nope"}}, codes.NotFound, "nope"},
	} {
		_, err := s.client.UpdateApplication(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.code, tc.want)
		}
	}
	// Adding an environment keeps the serving one's status.
	upd, err = s.client.UpdateApplication(ctx, &deployerv1.UpdateApplicationRequest{
		Application: &deployerv1.Application{Name: "shop", Environments: []*deployerv1.Environment{{Name: "staging"}, {Name: "prod", RequiresEnvironment: "staging"}}},
		UpdateMask:  mask("environments"),
	})
	if err != nil || len(upd.GetApplication().GetEnvironments()) != 2 || upd.GetApplication().GetEnvironments()[0].GetStatus().GetCurrentRevision() != 2 {
		t.Fatalf("add an environment: %v, %v", upd.GetApplication().GetEnvironments(), err)
	}
}
