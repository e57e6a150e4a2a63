package rollout_test

import (
	"context"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/demoapp"
	"google.golang.org/protobuf/types/known/durationpb"
)

func imageSpec(image, version string, strategy *deployerv1.Strategy, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec {
	s := spec(version, strategy, append([]*deployerv1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "BIND", Value: "0.0.0.0"}}, env...)...)
	s.Workload = &deployerv1.ApplicationSpec_Image{Image: image}
	s.StopGracePeriod = durationpb.New(2 * time.Second)
	return s
}

// TestDockerRolloutsUnderLoadLoseNothing runs the rollout scenarios (see
// scenarios) on the real Docker daemon.
func TestDockerRolloutsUnderLoadLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers")
	}
	ctx := context.Background()
	drv := demoapp.Docker(t)
	image := demoapp.Image(t)
	w := newWorld(t)
	_ = w.drv.Close()
	w.exec.Driver = drv
	t.Cleanup(func() {
		reps, _ := drv.List(context.Background(), map[string]string{"opsuite.app": "shop"})
		for _, r := range reps {
			_ = drv.Stop(context.Background(), r.ID, time.Second)
		}
	})
	listDocker := func(t *testing.T) map[int64]int {
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
	scenarios(t, w, func(version string, strategy *deployerv1.Strategy, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec {
		return imageSpec(image, version, strategy, env...)
	}, listDocker)
}
