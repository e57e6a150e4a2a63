package deployer_test

import (
	"slices"
	"testing"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
)

func replicaIDs(t *testing.T, s *suite) []string {
	t.Helper()
	resp, err := s.client.ListReplicas(t.Context(), &deployerv1.ListReplicasRequest{Application: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range resp.GetReplicas() {
		if r.GetRevision() != 1 {
			t.Fatalf("replica %s of revision %d, want 1", r.GetId(), r.GetRevision())
		}
		ids = append(ids, r.GetId())
	}
	slices.Sort(ids)
	return ids
}

// TestRestartReplacesEveryReplica: a deploy with restart of the revision
// already serving replaces each replica with a new one of that revision,
// health-gated and drained like any rolling update, and serves throughout.
func TestRestartReplacesEveryReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: appSpec("v1")}}); err != nil {
		t.Fatal(err)
	}
	if r := s.deploy(t, appSpec("v1")); r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("v1: %s: %s", r.GetPhase(), r.GetMessage())
	}
	before := replicaIDs(t, s)
	resp, err := s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: "shop", Restart: true, Reason: "restart"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRollout().GetKind() != deployerv1.RolloutKind_ROLLOUT_KIND_RESTART {
		t.Fatalf("rollout kind %s, want restart", resp.GetRollout().GetKind())
	}
	r := s.waitRollout(t, resp.GetRollout().GetId())
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetToRevision() != 1 {
		t.Fatalf("restart: %s to %d: %s", r.GetPhase(), r.GetToRevision(), r.GetMessage())
	}
	after := replicaIDs(t, s)
	if len(after) != len(before) {
		t.Fatalf("replicas %v after the restart, want %d", after, len(before))
	}
	for _, id := range after {
		if slices.Contains(before, id) {
			t.Fatalf("replica %s survived the restart (before %v, after %v)", id, before, after)
		}
	}
	if got := served(t, s.endpoint(t)); got != "v1" {
		t.Fatalf("serves %q after the restart, want v1", got)
	}
	// Scaling afterwards keeps the restarted replicas.
	if _, err := s.client.Scale(ctx, &deployerv1.ScaleRequest{Name: "shop", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	scaled := replicaIDs(t, s)
	for _, id := range after {
		if !slices.Contains(scaled, id) {
			t.Fatalf("scale replaced replica %s (%v → %v)", id, after, scaled)
		}
	}
}
