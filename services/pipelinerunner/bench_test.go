package pipelinerunner_test

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner"
)

func benchSource(n int, parallel bool) string {
	var b strings.Builder
	b.WriteString("steps:\n")
	for i := range n {
		if parallel {
			fmt.Fprintf(&b, "  - {name: s%d, needs: [], script: 'true'}\n", i)
		} else {
			fmt.Fprintf(&b, "  - {name: s%d, script: 'true'}\n", i)
		}
	}
	return b.String()
}

// benchService runs a pipeline of n `true` steps through the whole service
// (durable run record in JetStream KV, events, log stream) and, in the same
// benchmark, n raw `sh -c true` with the same parallelism; it reports both
// per step and the runner's overhead per step.
func benchService(b *testing.B, n int, parallel bool) {
	e := newEnvB(b)
	inst := e.startB(b, pipelinerunner.Deps{}, 8)
	c := inst.client
	name := "bench"
	if _, err := c.CreatePipeline(b.Context(), &pb.CreatePipelineRequest{Pipeline: &pb.Pipeline{Name: name, Source: benchSource(n, parallel)}}); err != nil {
		b.Fatal(err)
	}
	width := 1
	if parallel {
		width = 8
	}
	var runner, raw time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := c.RunPipeline(b.Context(), &pb.RunPipelineRequest{Name: name})
		if err != nil {
			b.Fatal(err)
		}
		if run := waitRunB(b, c, res.GetRun().GetId()); run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
			b.Fatalf("run %v", run.GetState())
		}
		runner += time.Since(start)
		start = time.Now()
		sem := make(chan struct{}, width)
		var wg sync.WaitGroup
		for range n {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				_ = exec.Command("sh", "-c", "true").Run()
			}()
		}
		wg.Wait()
		raw += time.Since(start)
	}
	steps := float64(b.N * n)
	b.ReportMetric(float64(runner.Microseconds())/steps, "µs/step")
	b.ReportMetric(float64(raw.Microseconds())/steps, "raw-µs/step")
	b.ReportMetric(float64((runner-raw).Microseconds())/steps, "overhead-µs/step")
}

func BenchmarkSequential100(b *testing.B) { benchService(b, 100, false) }
func BenchmarkWideDAG100(b *testing.B)    { benchService(b, 100, true) }
