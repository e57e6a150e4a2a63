package engine_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
)

// sequentialSource is n `true` steps, each after the previous one.
func sequentialSource(n int) string {
	var b strings.Builder
	b.WriteString("steps:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: s%d, script: 'true'}\n", i)
	}
	return b.String()
}

// wideSource is n independent `true` steps.
func wideSource(n int) string {
	var b strings.Builder
	b.WriteString("steps:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: s%d, needs: [], script: 'true'}\n", i)
	}
	return b.String()
}

func benchRuns(b *testing.B, src string, parallel int) {
	en := newEnv(b, nil)
	en.e = engine.New(*en.e, parallel)
	p := parse(b, src)
	steps := len(p.Steps)
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		rec := &engine.Memory{}
		x := en.e.Start(context.Background(), newRun(p, fmt.Sprintf("r%d", i)), p, rec)
		<-x.Done()
		if st := rec.Run().GetState(); st != pb.RunState_RUN_STATE_SUCCESS {
			b.Fatalf("run %v", st)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*steps), "µs/step")
}

func benchRaw(b *testing.B, n, parallel int) {
	start := time.Now()
	for b.Loop() {
		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		for range n {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := exec.Command("sh", "-c", "true").Run(); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*n), "µs/step")
}

// BenchmarkSequential100 is 100 sequential `true` steps through the engine
// (in-memory recorder); BenchmarkRawSequential100 the same 100 `sh -c true`
// with nothing around them.
func BenchmarkSequential100(b *testing.B)    { benchRuns(b, sequentialSource(100), 16) }
func BenchmarkRawSequential100(b *testing.B) { benchRaw(b, 100, 1) }

// BenchmarkWide100 is 100 independent steps, 8 at a time.
func BenchmarkWide100(b *testing.B)    { benchRuns(b, wideSource(100), 8) }
func BenchmarkRawWide100(b *testing.B) { benchRaw(b, 100, 8) }
