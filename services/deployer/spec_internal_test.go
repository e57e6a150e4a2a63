package deployer

import (
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestEffectiveSpecAppliesOverrides(t *testing.T) {
	base := &deployerv1.ApplicationSpec{
		Workload: &deployerv1.ApplicationSpec_Image{Image: "shop:v1"},
		Env:      []*deployerv1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}},
		Replicas: 2,
	}
	three := int32(3)
	env := &deployerv1.Environment{Name: "prod", Overrides: &deployerv1.EnvironmentOverrides{
		Replicas:         &three,
		Env:              []*deployerv1.EnvVar{{Name: "B", Value: "prod"}, {Name: "C", Value: "new"}},
		ProgressDeadline: durationpb.New(time.Minute),
	}}
	got := effectiveSpec(base, env, nil)
	if got.GetReplicas() != 3 || got.GetProgressDeadline().AsDuration() != time.Minute {
		t.Fatalf("overrides not applied: %v", got)
	}
	vals := map[string]string{}
	for _, e := range got.GetEnv() {
		vals[e.GetName()] = e.GetValue()
	}
	if vals["A"] != "1" || vals["B"] != "prod" || vals["C"] != "new" || len(vals) != 3 {
		t.Fatalf("env %v", vals)
	}
	if base.GetEnv()[1].GetValue() != "2" || base.GetReplicas() != 2 {
		t.Fatal("the revision's spec was changed")
	}
	if got := effectiveSpec(&deployerv1.ApplicationSpec{}, &deployerv1.Environment{Name: "x"}, nil); got.GetReplicas() != 1 {
		t.Fatalf("no replicas given: %d, want 1", got.GetReplicas())
	}
	recreate := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Recreate{Recreate: &deployerv1.RecreateStrategy{}}}
	if got := effectiveSpec(base, env, recreate); got.GetStrategy().GetRecreate() == nil {
		t.Fatal("the request's strategy did not win")
	}
}

func TestSpecChangesMaskSecrets(t *testing.T) {
	old := &deployerv1.ApplicationSpec{Workload: &deployerv1.ApplicationSpec_Image{Image: "shop:v1"}, Replicas: 2,
		Env: []*deployerv1.EnvVar{{Name: "TOKEN", Value: "old-secret", Secret: true}}}
	cur := &deployerv1.ApplicationSpec{Workload: &deployerv1.ApplicationSpec_Image{Image: "shop:v2"}, Replicas: 2,
		Env: []*deployerv1.EnvVar{{Name: "TOKEN", Value: "new-secret", Secret: true}}}
	changes := specChanges(old, cur)
	var paths []string
	for _, c := range changes {
		paths = append(paths, c.GetPath())
		if strings.Contains(c.GetOldValue()+c.GetNewValue(), "old-secret") || strings.Contains(c.GetOldValue()+c.GetNewValue(), "new-secret") {
			t.Fatalf("secret shown in %v", c)
		}
	}
	if strings.Join(paths, ",") != "env,image" {
		t.Fatalf("changes %v, want env (a secret changed, masked) and image", paths)
	}
	if !strings.Contains(changes[0].GetNewValue(), "(changed)") {
		t.Fatalf("env change %v does not say the secret changed", changes[0])
	}
	changes = changes[1:]
	if changes[0].GetOldValue() != `"shop:v1"` || changes[0].GetNewValue() != `"shop:v2"` {
		t.Fatalf("image change %v", changes[0])
	}
	if first := specChanges(nil, cur); len(first) < 2 {
		t.Fatalf("first deploy lists %d changes", len(first))
	}
}

func TestReplicaIDIsALabel(t *testing.T) {
	id := replicaID(strings.Repeat("a", 63), strings.Repeat("b", 63), 123456)
	if len(id) > 63 || !strings.Contains(id, "-r123456-") {
		t.Fatalf("replica id %q (%d chars)", id, len(id))
	}
}
