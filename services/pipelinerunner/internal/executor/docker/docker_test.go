package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/docker"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// daemon opens the executor, skipping without a daemon unless
// OPSUITE_REQUIRE_DOCKER=1.
func daemon(t *testing.T) *docker.Executor {
	t.Helper()
	ex, err := docker.New(context.Background(), "")
	if err != nil {
		if os.Getenv("OPSUITE_REQUIRE_DOCKER") == "1" {
			t.Fatalf("no Docker daemon answers and OPSUITE_REQUIRE_DOCKER=1: %v", err)
		}
		t.Skipf("no Docker daemon answers: %v", err)
	}
	t.Cleanup(func() { _ = ex.Close() })
	return ex
}

// image builds a FROM scratch image holding the static stepbin.
func image(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		if os.Getenv("OPSUITE_REQUIRE_DOCKER") == "1" {
			t.Fatal("docker CLI not found and OPSUITE_REQUIRE_DOCKER=1")
		}
		t.Skip("docker CLI not found")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "stepbin"), "./internal/stepbin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build stepbin: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY stepbin /stepbin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tag := "opsuite-test/stepbin:" + hex.EncodeToString(b)
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

func leftovers(t *testing.T, label string) string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=opsuite.test="+label).CombinedOutput()
	if err != nil {
		t.Fatalf("docker ps: %v %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestDockerExecutor(t *testing.T) {
	ex := daemon(t)
	img := image(t)
	ws := t.TempDir()
	label := hex.EncodeToString([]byte(t.Name()))[:16]
	run := func(ctx context.Context, spec executor.Spec) (executor.Result, string, error) {
		var out bytes.Buffer
		spec.Image, spec.Workspace, spec.Stdout, spec.Stderr = img, ws, &out, &out
		spec.Labels = map[string]string{"opsuite.test": label}
		res, err := ex.Run(ctx, spec)
		return res, out.String(), err
	}
	t.Run("workspace, dir and env", func(t *testing.T) {
		res, out, err := run(context.Background(), executor.Spec{Command: []string{"/stepbin", "write", "made.txt", "from container"}, Dir: "sub"})
		if err != nil || res.ExitCode != 0 || out != "wrote made.txt\n" {
			t.Fatalf("%v %q %v", res, out, err)
		}
		b, err := os.ReadFile(filepath.Join(ws, "sub", "made.txt"))
		if err != nil || string(b) != "from container" {
			t.Fatalf("file in workspace: %q %v", b, err)
		}
		_, out, _ = run(context.Background(), executor.Spec{Command: []string{"/stepbin", "env", "GREETING"}, Env: []string{"GREETING=hi"}})
		if out != "GREETING=hi\n" {
			t.Fatalf("env: %q", out)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		res, out, err := run(context.Background(), executor.Spec{Command: []string{"/stepbin", "exit", "3"}})
		if err != nil || res.ExitCode != 3 || out != "exiting with 3\n" {
			t.Fatalf("%v %q %v", res, out, err)
		}
	})
	t.Run("missing image is an infrastructure error", func(t *testing.T) {
		var out bytes.Buffer
		_, err := ex.Run(context.Background(), executor.Spec{Image: "opsuite-test/none:404", Command: []string{"x"}, Workspace: ws, Stdout: &out})
		if !errors.Is(err, executor.ErrInfra) || !strings.Contains(err.Error(), "not found locally") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("service container reachable by name", func(t *testing.T) {
		res, out, err := run(context.Background(), executor.Spec{
			Command:  []string{"/stepbin", "get", "http://db:8080/"},
			Services: []executor.Service{{Name: "db", Image: img, Command: []string{"/stepbin", "serve", ":8080"}}},
		})
		if err != nil || res.ExitCode != 0 || out != "pong\n" {
			t.Fatalf("%v %q %v", res, out, err)
		}
	})
	t.Run("timeout removes the container", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var id string
		_, _, err := run(ctx, executor.Spec{Command: []string{"/stepbin", "sleep", "300"}, Started: func(s string) { id = s }})
		if !errors.Is(err, context.DeadlineExceeded) || id == "" {
			t.Fatalf("err %v id %q", err, id)
		}
	})
	if left := leftovers(t, label); left != "" {
		t.Fatalf("containers left behind: %s", left)
	}
}

// TestDockerStepInEngine runs a pipeline whose step uses the docker
// executor through the engine: output captured, artifacts kept.
func TestDockerStepInEngine(t *testing.T) {
	ex := daemon(t)
	img := image(t)
	dir := t.TempDir()
	p, err := pipelinefile.Parse([]byte(`
executor: docker
image: ` + img + `
steps:
  - {name: make, command: [/stepbin, write, out.txt, artifact-data], artifacts: [out.txt]}
  - {name: where, command: [/stepbin, pwd], working_dir: nested}
  - {name: fail, command: [/stepbin, exit, "4"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Engine{
		Executors: map[string]executor.Executor{"docker": ex}, WorkspaceRoot: filepath.Join(dir, "ws"),
		ArtifactRoot: filepath.Join(dir, "art"), Runner: "test",
	}, 4)
	rec := &engine.Memory{}
	x := e.Start(context.Background(), &pb.Run{Id: "d-1", Pipeline: "d", State: pb.RunState_RUN_STATE_QUEUED, CreateTime: timestamppb.Now(), Steps: engine.Steps(p)}, p, rec)
	<-x.Done()
	run := rec.Run()
	states := map[string]pb.StepState{}
	for _, s := range run.GetSteps() {
		states[s.GetId()] = s.GetState()
	}
	if states["make"] != pb.StepState_STEP_STATE_SUCCESS || states["where"] != pb.StepState_STEP_STATE_SUCCESS || states["fail"] != pb.StepState_STEP_STATE_FAILED {
		t.Fatalf("states %v", states)
	}
	if c := run.GetSteps()[0].GetCommand(); c.GetExecutor() != pb.Executor_EXECUTOR_DOCKER || c.GetContainerId() == "" || len(run.GetSteps()[0].GetArtifacts()) != 1 {
		t.Fatalf("make step %v", run.GetSteps()[0])
	}
	var texts []string
	for _, l := range rec.Lines() {
		texts = append(texts, l.GetStep()+"|"+l.GetText())
	}
	joined := strings.Join(texts, "\n")
	if !strings.Contains(joined, "where|/workspace/nested") || !strings.Contains(joined, "fail|exiting with 4") {
		t.Fatalf("output:\n%s", joined)
	}
}
