package shell_test

import (
	"context"
	"io"
	"os/exec"
	"testing"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/shell"
)

// BenchmarkScript is one `sh -e -c true` attempt through the executor;
// BenchmarkRaw is `sh -c true` with os/exec alone.
func BenchmarkScript(b *testing.B) {
	ws := b.TempDir()
	ex := &shell.Executor{}
	for b.Loop() {
		if _, err := ex.Run(context.Background(), executor.Spec{Script: "true", Workspace: ws, Stdout: io.Discard, Stderr: io.Discard}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRaw(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("sh", "-c", "true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
