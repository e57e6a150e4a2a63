package rollout_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"golang.org/x/sync/errgroup"
)

// BenchmarkRollTenReplicas measures a rolling update of 10 process
// replicas (max surge 10%, none unavailable, health-gated, drained), beside
// BenchmarkStartTenReplicasDirect, the same 10 processes started and polled
// until they answer with no rollout machinery at all.
func BenchmarkRollTenReplicas(b *testing.B) {
	w := newWorld(b)
	mk := func(n int) rollout.Revision {
		s := spec("v"+strconv.Itoa(n), rolling())
		s.Replicas = 10
		return rollout.Revision{Number: int64(n), Spec: s}
	}
	prev := mk(1)
	w.deploy(b, "b0", rollout.Revision{}, prev, nil)
	b.ResetTimer()
	for i := range b.N {
		next := mk(i + 2)
		start := time.Now()
		r := w.deploy(b, fmt.Sprintf("b%d", i+1), prev, next, nil)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
			b.Fatalf("%s: %s", r.GetPhase(), r.GetMessage())
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/rollout")
		prev = next
	}
}

func BenchmarkStartTenReplicasDirect(b *testing.B) {
	w := newWorld(b)
	ctx := context.Background()
	for i := range b.N {
		start := time.Now()
		var g errgroup.Group
		ids := make([]string, 10)
		for k := range 10 {
			g.Go(func() error {
				id := fmt.Sprintf("direct-%d-%d", i, k)
				ids[k] = id
				r, err := w.drv.Start(ctx, driver.Spec{
					ID: id, App: "direct", Environment: "bench", Revision: 1, Command: []string{demoBin},
					Env: map[string]string{"VERSION": "v"}, Ports: []driver.Port{{Name: "http", ContainerPort: 8080}},
				})
				if err != nil {
					return err
				}
				url := fmt.Sprintf("http://127.0.0.1:%d/healthz", r.Bindings[0].HostPort)
				for {
					resp, err := http.Get(url)
					if err == nil {
						_ = resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							return nil
						}
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/start10")
		b.StopTimer()
		for _, id := range ids {
			_ = w.drv.Stop(ctx, id, time.Second)
		}
		b.StartTimer()
	}
}

// BenchmarkTimeToStable measures, for a canary whose replicas fail their
// health check, the time from the failure being seen to all traffic being
// back on the stable revision (Rollout.time_to_stable).
func BenchmarkTimeToStable(b *testing.B) {
	w := newWorld(b)
	stable := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(b, "s0", rollout.Revision{}, stable, nil)
	b.ResetTimer()
	for i := range b.N {
		broken := rollout.Revision{Number: int64(i + 2), Spec: spec("bad", canary(), &deployerv1.EnvVar{Name: "UNHEALTHY", Value: "1"})}
		r := w.deploy(b, fmt.Sprintf("s%d", i+1), stable, broken, nil)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK {
			b.Fatalf("%s: %s", r.GetPhase(), r.GetMessage())
		}
		b.ReportMetric(float64(r.GetTimeToStable().AsDuration().Microseconds())/1000, "ms-to-stable")
	}
}

// BenchmarkBlueGreenSwitch measures the atomic switch of all traffic from
// blue to green once green is ready: from the call to the first request
// answered by green.
func BenchmarkBlueGreenSwitch(b *testing.B) {
	w := newWorld(b)
	blue := rollout.Revision{Number: 1, Spec: spec("blue", rolling())}
	w.deploy(b, "g0", rollout.Revision{}, blue, nil)
	green := rollout.Revision{Number: 2, Spec: spec("green", rolling())}
	// Green runs beside blue with no traffic yet.
	if err := w.exec.Converge(context.Background(), rollout.State{
		App: "shop", Env: "prod", New: green, Old: blue, NewReplicas: 3, OldReplicas: 3, Weight: 0,
	}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		to, from := green.Number, blue.Number
		if i%2 == 1 {
			to, from = from, to
		}
		want := map[int64]string{1: "blue", 2: "green"}[to]
		start := time.Now()
		if err := w.router.SetWeights(map[int64]int{to: 100, from: 0}); err != nil {
			b.Fatal(err)
		}
		resp, err := http.Get(w.url)
		if err != nil {
			b.Fatal(err)
		}
		got := resp.Header.Get("X-Opsuite-Revision")
		_ = resp.Body.Close()
		if got != strconv.FormatInt(to, 10) {
			b.Fatalf("after the switch to %s a request went to revision %s", want, got)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds()), "µs-switch+first-request")
	}
}
