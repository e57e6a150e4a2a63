package deployer_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestAutoscalingFollowsTheRequestRate: with a target of 20 requests per
// second per replica, a steady 100/s through the router scales the
// application up to its maximum; once the load stops it scales back down
// to the minimum after the stabilization window.
func TestAutoscalingFollowsTheRequestRate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	s := newSuite(t)
	ctx := t.Context()
	spec := appSpec("v1")
	spec.Replicas = 1
	spec.Autoscaling = &deployerv1.Autoscaling{
		MinReplicas: 1, MaxReplicas: 3,
		Metrics: []*deployerv1.ScalingMetric{{
			Source: &deployerv1.ScalingMetric_Router{Router: &deployerv1.RouterMetric{Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE}},
			Target: 20,
		}},
		Interval:               durationpb.New(500 * time.Millisecond),
		ScaleDownStabilization: durationpb.New(2 * time.Second),
	}
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "shop", Spec: spec}}); err != nil {
		t.Fatal(err)
	}
	s.deploy(t, spec)
	url := s.endpoint(t)

	// About 100 requests per second, bounded in time.
	loadCtx, stopLoad := context.WithTimeout(ctx, 40*time.Second)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &http.Client{Timeout: 2 * time.Second}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			if resp, err := c.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	replicas := func() (int, *deployerv1.AutoscalingStatus) {
		resp, err := s.client.ListReplicas(ctx, &deployerv1.ListReplicasRequest{Application: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		app, err := s.client.GetApplication(ctx, &deployerv1.GetApplicationRequest{Name: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetReplicas()), app.GetApplication().GetEnvironments()[0].GetStatus().GetAutoscaling()
	}
	waitFor := func(want int, within time.Duration) *deployerv1.AutoscalingStatus {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			n, st := replicas()
			if n == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d replicas after %s, want %d (autoscaler: %v)", n, within, want, st)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	st := waitFor(3, 20*time.Second)
	t.Logf("under load: %v", st)
	stopLoad()
	wg.Wait()
	begin := time.Now()
	st = waitFor(1, 20*time.Second)
	if took := time.Since(begin); took < 2*time.Second {
		t.Fatalf("scaled down after %s, before the 2s stabilization window", took)
	}
	t.Logf("idle: %v", st)
	if got := served(t, url); got != "v1" {
		t.Fatalf("serves %q", got)
	}
}
