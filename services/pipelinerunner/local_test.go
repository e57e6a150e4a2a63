package pipelinerunner_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner"
)

func TestRunLocal(t *testing.T) {
	ws := t.TempDir()
	var out bytes.Buffer
	run, err := pipelinerunner.RunLocal(context.Background(), []byte(`
name: local-demo
steps:
  - {name: build, script: 'echo building on $OPSUITE_BRANCH; echo bin > app.bin', artifacts: [app.bin]}
  - {name: secret, secrets: [tok], script: 'echo "tok is $TOK"'}
  - {name: only-main, when: 'branch == "main"', script: 'echo main only'}
`), pipelinerunner.LocalOptions{Workspace: ws, Ref: "dev", Secrets: map[string]string{"tok": "hidden-value"}, Out: &out, Docker: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS || run.GetTrigger().GetKind() != pb.TriggerKind_TRIGGER_KIND_CLI_LOCAL {
		t.Fatalf("run %v", run)
	}
	if _, err := os.Stat(filepath.Join(ws, "app.bin")); err != nil {
		t.Fatal("steps did not run in the workspace")
	}
	text := out.String()
	if !strings.Contains(text, "build | building on dev") || !strings.Contains(text, "secret | tok is ********") || strings.Contains(text, "hidden-value") || strings.Contains(text, "main only") {
		t.Fatalf("output:\n%s", text)
	}
	_, err = pipelinerunner.RunLocal(context.Background(), []byte("steps:\n  - {name: a, scirpt: x}\n"), pipelinerunner.LocalOptions{Workspace: ws})
	if err == nil || !strings.Contains(err.Error(), "line 2: steps.a.scirpt") {
		t.Fatalf("bad file: %v", err)
	}
}
