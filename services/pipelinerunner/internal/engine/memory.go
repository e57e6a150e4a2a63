package engine

import (
	"context"
	"fmt"
	"io"
	"sync"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"google.golang.org/protobuf/proto"
)

// Memory is a Recorder that keeps the run and its lines in memory and can
// print the lines as they come: what `opsuite pipeline run --local` uses.
type Memory struct {
	// Out, when set, receives "step | text" per line.
	Out io.Writer

	mu    sync.Mutex
	run   *pb.Run
	lines []*pb.LogLine
	saves int
}

// SaveRun keeps a copy of the run.
func (m *Memory) SaveRun(_ context.Context, run *pb.Run, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.run = run
	m.saves++
	return nil
}

// AppendLog numbers and keeps a line.
func (m *Memory) AppendLog(_ context.Context, _ string, line *pb.LogLine) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	line = proto.CloneOf(line)
	line.Seq = uint64(len(m.lines) + 1)
	m.lines = append(m.lines, line)
	if m.Out != nil {
		step := line.GetStep()
		if step == "" {
			step = "runner"
		}
		fmt.Fprintf(m.Out, "%s | %s\n", step, line.GetText())
	}
	return nil
}

// OnRunStarted does nothing.
func (m *Memory) OnRunStarted(context.Context, *pb.Run) {}

// OnStepStarted does nothing.
func (m *Memory) OnStepStarted(context.Context, *pb.Run, *pb.RunStep) {}

// OnStepFinished does nothing.
func (m *Memory) OnStepFinished(context.Context, *pb.Run, *pb.RunStep) {}

// OnRunFinished does nothing.
func (m *Memory) OnRunFinished(context.Context, *pb.Run) {}

// Run returns the latest saved run.
func (m *Memory) Run() *pb.Run {
	m.mu.Lock()
	defer m.mu.Unlock()
	return proto.CloneOf(m.run)
}

// Lines returns the lines so far.
func (m *Memory) Lines() []*pb.LogLine {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*pb.LogLine(nil), m.lines...)
}
