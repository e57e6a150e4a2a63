package rollout_test

import (
	"context"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/demoapp"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"google.golang.org/protobuf/types/known/durationpb"
)

func imageSpec(image, version string, strategy *deployerv1.Strategy, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec {
	s := spec(version, strategy, append([]*deployerv1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "BIND", Value: "0.0.0.0"}}, env...)...)
	s.Workload = &deployerv1.ApplicationSpec_Image{Image: image}
	s.StopGracePeriod = durationpb.New(2 * time.Second)
	return s
}

// TestDockerRolloutsUnderLoadLoseNothing runs the rollout scenarios on the
// real Docker daemon: rolling, canary and blue-green updates and a broken
// revision rolled back, under load through the router, losing no request.
func TestDockerRolloutsUnderLoadLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers")
	}
	ctx := context.Background()
	drv := demoapp.Docker(t)
	image := demoapp.Image(t)
	w := newWorld(t)
	_ = w.drv.Close()
	w.runner.Exec.Driver = drv
	t.Cleanup(func() {
		reps, _ := drv.List(context.Background(), map[string]string{"opsuite.app": "shop"})
		for _, r := range reps {
			_ = drv.Stop(context.Background(), r.ID, time.Second)
		}
	})
	listDocker := func() map[int64]int {
		reps, err := drv.List(ctx, map[string]string{"opsuite.app": "shop"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[int64]int{}
		for _, r := range reps {
			out[r.Revision]++
		}
		return out
	}

	v1 := rollout.Revision{Number: 1, Spec: imageSpec(image, "v1", rolling())}
	if r := w.deploy(t, "d1", rollout.Revision{}, v1, nil); r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("v1: %s: %s", r.GetPhase(), r.GetMessage())
	}
	l := startLoad(t, w.url, 4)
	prev := v1
	for i, tc := range []struct {
		version  string
		strategy *deployerv1.Strategy
	}{{"v2", rolling()}, {"v3", canary()}, {"v4", blueGreen()}} {
		next := rollout.Revision{Number: int64(i + 2), Spec: imageSpec(image, tc.version, tc.strategy)}
		r := w.deploy(t, "d-"+tc.version, prev, next, nil)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
			t.Fatalf("%s: %s: %s", tc.version, r.GetPhase(), r.GetMessage())
		}
		if got := w.versions(t); got[tc.version] != 30 {
			t.Fatalf("after %s: served %v", tc.version, got)
		}
		if reps := listDocker(); len(reps) != 1 || reps[next.Number] != 3 {
			t.Fatalf("after %s: containers by revision %v", tc.version, reps)
		}
		prev = next
	}
	broken := rollout.Revision{Number: 5, Spec: imageSpec(image, "v5", canary(), &deployerv1.EnvVar{Name: "UNHEALTHY", Value: "1"})}
	r := w.deploy(t, "d-v5", prev, broken, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK {
		t.Fatalf("broken v5: %s: %s", r.GetPhase(), r.GetMessage())
	}
	t.Logf("v5: %s (time to stable %s)", r.GetMessage(), r.GetTimeToStable().AsDuration())
	if got := w.versions(t); got["v4"] != 30 {
		t.Fatalf("after rollback: served %v", got)
	}
	if reps := listDocker(); len(reps) != 1 || reps[4] != 3 {
		t.Fatalf("after rollback: containers by revision %v", reps)
	}
	l.finish(t)
}
