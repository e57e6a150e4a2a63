package docker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// BenchmarkStartStop measures Start (create, start, inspect) and Stop
// (stop, remove) of one replica of the demo image at a time, beside the
// same calls made straight on the Engine API as the baseline.
func BenchmarkStartStop(b *testing.B) {
	ctx := context.Background()
	b.Run("driver", func(b *testing.B) {
		d := newDriver(b)
		var started, stopped time.Duration
		i := 0
		for b.Loop() {
			spec := testSpec(fmt.Sprintf("bench%d", i))
			i++
			removeAfter(b, spec.ID)
			t0 := time.Now()
			if _, err := d.Start(ctx, spec); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
				b.Fatal(err)
			}
			started += t1.Sub(t0)
			stopped += time.Since(t1)
		}
		report(b, i, "start", started, "stop", stopped)
	})
	b.Run("engine-api", func(b *testing.B) {
		requireDocker(b)
		cli := suite.cli
		port := network.MustParsePort("8080/tcp")
		var created, started, stopped time.Duration
		i := 0
		for b.Loop() {
			name := fmt.Sprintf("t%s-benchraw%d", suite.run, i)
			i++
			removeAfter(b, name)
			t0 := time.Now()
			res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
				Name: name,
				Config: &container.Config{
					Image: suite.image, Labels: map[string]string{labelRun: suite.run},
					ExposedPorts: network.PortSet{port: {}},
				},
				HostConfig: &container.HostConfig{PortBindings: network.PortMap{port: {{HostIP: loopbackAddr}}}},
			})
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
				b.Fatal(err)
			}
			if _, err := cli.ContainerInspect(ctx, res.ID, client.ContainerInspectOptions{}); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			timeout := 1
			if _, err := cli.ContainerStop(ctx, res.ID, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
				b.Fatal(err)
			}
			if _, err := cli.ContainerRemove(ctx, res.ID, client.ContainerRemoveOptions{RemoveVolumes: true, Force: true}); err != nil {
				b.Fatal(err)
			}
			created += t1.Sub(t0)
			started += t2.Sub(t1)
			stopped += time.Since(t2)
		}
		report(b, i, "create", created, "start+inspect", started, "stop", stopped)
	})
}

// report adds the mean of each named duration as a ms/op metric.
func report(b *testing.B, n int, pairs ...any) {
	for j := 0; j < len(pairs); j += 2 {
		d := pairs[j+1].(time.Duration)
		b.ReportMetric(float64(d.Microseconds())/1000/float64(n), pairs[j].(string)+"-ms/op")
	}
	b.ReportMetric(0, "ns/op")
}
