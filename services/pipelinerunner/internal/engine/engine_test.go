package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/shell"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type env struct {
	e   *engine.Engine
	dir string
}

func newEnv(t testing.TB, secrets map[string]string) *env {
	t.Helper()
	dir := t.TempDir()
	e := engine.New(engine.Engine{
		Executors:     map[string]executor.Executor{"shell": &shell.Executor{Grace: 200 * time.Millisecond}},
		WorkspaceRoot: filepath.Join(dir, "ws"),
		ArtifactRoot:  filepath.Join(dir, "artifacts"),
		Runner:        "test",
		Secrets: func(_ context.Context, _ string, names []string) (map[string]string, error) {
			out := map[string]string{}
			for _, n := range names {
				if v, ok := secrets[n]; ok {
					out[n] = v
				}
			}
			return out, nil
		},
	}, 8)
	return &env{e: e, dir: dir}
}

func parse(t testing.TB, src string) *pipelinefile.Pipeline {
	t.Helper()
	p, err := pipelinefile.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newRun(p *pipelinefile.Pipeline, id string) *pb.Run {
	return &pb.Run{
		Id: id, Pipeline: "p", Number: 1, State: pb.RunState_RUN_STATE_QUEUED, CreateTime: timestamppb.Now(),
		Trigger: &pb.Trigger{Kind: pb.TriggerKind_TRIGGER_KIND_API, Event: "api", Ref: "refs/heads/main", Branch: "main"},
		Steps:   engine.Steps(p),
	}
}

func (en *env) run(t testing.TB, src string) (*pb.Run, *engine.Memory) {
	t.Helper()
	p := parse(t, src)
	rec := &engine.Memory{}
	x := en.e.Start(context.Background(), newRun(p, "r1"), p, rec)
	select {
	case <-x.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("run did not finish")
	}
	if err := x.Err(); err != nil {
		t.Fatal(err)
	}
	return rec.Run(), rec
}

func step(t testing.TB, run *pb.Run, id string) *pb.RunStep {
	t.Helper()
	for _, s := range run.GetSteps() {
		if s.GetId() == id {
			return s
		}
	}
	t.Fatalf("no step %s", id)
	return nil
}

func TestParallelDAG(t *testing.T) {
	en := newEnv(t, nil)
	run, _ := en.run(t, `
steps:
  - {name: a, script: "echo a"}
  - {name: b, needs: [a], script: "sleep 0.4"}
  - {name: c, needs: [a], script: "sleep 0.4"}
  - {name: d, needs: [b, c], script: "echo d"}
`)
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatalf("run %v: %s", run.GetState(), run.GetMessage())
	}
	b, c, d := step(t, run, "b"), step(t, run, "c"), step(t, run, "d")
	if !b.GetStartTime().AsTime().Before(c.GetEndTime().AsTime()) || !c.GetStartTime().AsTime().Before(b.GetEndTime().AsTime()) {
		t.Errorf("b and c did not overlap: b %v-%v c %v-%v", b.GetStartTime().AsTime(), b.GetEndTime().AsTime(), c.GetStartTime().AsTime(), c.GetEndTime().AsTime())
	}
	if d.GetStartTime().AsTime().Before(b.GetEndTime().AsTime()) || d.GetStartTime().AsTime().Before(c.GetEndTime().AsTime()) {
		t.Error("d started before its needs finished")
	}
	for _, s := range run.GetSteps() {
		if s.GetState() != pb.StepState_STEP_STATE_SUCCESS || s.GetStartTime() == nil || s.GetEndTime() == nil {
			t.Errorf("step %s: %v", s.GetId(), s)
		}
	}
}

func TestRetries(t *testing.T) {
	en := newEnv(t, nil)
	run, rec := en.run(t, `
steps:
  - name: flaky
    needs: []
    # fails with exit 3 twice, then succeeds
    script: |
      n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
      echo "attempt $n"
      [ $n -ge 3 ] || exit 3
    retry: {max_attempts: 3, backoff: 20ms, exit_codes: [3]}
  - name: broken
    needs: []
    script: exit 1
    retry: {max_attempts: 3, backoff: 20ms}
  - name: infra
    needs: []
    command: [/no/such/binary]
    retry: {max_attempts: 2, backoff: 20ms}
  - name: always
    needs: []
    script: exit 4
    retry: {max_attempts: 2, backoff: 20ms, when: [command_failed]}
`)
	flaky := step(t, run, "flaky")
	if flaky.GetState() != pb.StepState_STEP_STATE_SUCCESS || len(flaky.GetAttempts()) != 3 {
		t.Errorf("flaky: %v after %d attempts", flaky.GetState(), len(flaky.GetAttempts()))
	}
	for i, a := range flaky.GetAttempts()[:2] {
		if a.GetResult() != pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED || a.GetExitCode() != 3 {
			t.Errorf("flaky attempt %d: %v", i+1, a)
		}
	}
	broken := step(t, run, "broken")
	if broken.GetState() != pb.StepState_STEP_STATE_FAILED || len(broken.GetAttempts()) != 1 || broken.GetMessage() != "exit code 1" {
		t.Errorf("broken (command failure, default policy) must not be retried: %v", broken)
	}
	infra := step(t, run, "infra")
	if infra.GetState() != pb.StepState_STEP_STATE_FAILED || len(infra.GetAttempts()) != 2 || infra.GetAttempts()[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR {
		t.Errorf("infra error must be retried by default: %v", infra)
	}
	always := step(t, run, "always")
	if len(always.GetAttempts()) != 2 || !strings.HasSuffix(always.GetMessage(), "after 2 attempts") {
		t.Errorf("always: %v", always)
	}
	if run.GetState() != pb.RunState_RUN_STATE_FAILED {
		t.Errorf("run %v", run.GetState())
	}
	var retryLines int
	for _, l := range rec.Lines() {
		if l.GetStream() == pb.LogStream_LOG_STREAM_SYSTEM && strings.HasPrefix(l.GetText(), "retrying in") {
			retryLines++
		}
	}
	if retryLines != 4 {
		t.Errorf("%d retry lines, want 4", retryLines)
	}
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

func TestStepTimeoutKillsGroup(t *testing.T) {
	en := newEnv(t, nil)
	start := time.Now()
	run, _ := en.run(t, `
steps:
  - name: hang
    timeout: 500ms
    script: |
      sleep 300 &
      echo $! > "$OPSUITE_WORKSPACE/bg.pid"
      sleep 300
  - {name: after, script: "echo never"}
`)
	if time.Since(start) > 10*time.Second {
		t.Fatal("timeout not enforced")
	}
	hang := step(t, run, "hang")
	if hang.GetState() != pb.StepState_STEP_STATE_FAILED || hang.GetAttempts()[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT {
		t.Fatalf("hang: %v", hang)
	}
	if step(t, run, "after").GetState() != pb.StepState_STEP_STATE_SKIPPED {
		t.Error("dependent of a failed step must be skipped")
	}
	pg, _ := strconv.Atoi(hang.GetCommand().GetProcessGroup())
	b, _ := os.ReadFile(filepath.Join(en.dir, "ws", "r1", "bg.pid"))
	bg, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pg == 0 || bg == 0 {
		t.Fatalf("pgid %d bg %d", pg, bg)
	}
	time.Sleep(100 * time.Millisecond)
	for _, p := range []int{pg, bg} {
		if alive(p) {
			t.Errorf("process %d of the timed-out step's group still runs", p)
		}
	}
}

func TestCancel(t *testing.T) {
	en := newEnv(t, nil)
	p := parse(t, `
steps:
  - {name: long, script: "sleep 300"}
  - {name: next, script: "echo next"}
`)
	rec := &engine.Memory{}
	x := en.e.Start(context.Background(), newRun(p, "r1"), p, rec)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r := rec.Run(); r != nil && r.GetSteps()[0].GetCommand().GetProcessGroup() != "" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	x.Cancel("superseded")
	select {
	case <-x.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not stop the run")
	}
	run := rec.Run()
	if run.GetState() != pb.RunState_RUN_STATE_CANCELLED || run.GetMessage() != "run cancelled: superseded" {
		t.Fatalf("run %v %q", run.GetState(), run.GetMessage())
	}
	if s := step(t, run, "long"); s.GetState() != pb.StepState_STEP_STATE_CANCELLED || s.GetAttempts()[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_CANCELLED {
		t.Errorf("long: %v", s)
	}
	if s := step(t, run, "next"); s.GetState() != pb.StepState_STEP_STATE_CANCELLED {
		t.Errorf("next: %v", s)
	}
	pg, _ := strconv.Atoi(step(t, run, "long").GetCommand().GetProcessGroup())
	if alive(pg) {
		t.Error("cancelled step's process still runs")
	}
}

func TestSecretsMasked(t *testing.T) {
	secret := "s3cr3t-Value-42"
	multi := "line-one-secret\nline-two-secret"
	en := newEnv(t, map[string]string{"token": secret, "cert": multi})
	run, rec := en.run(t, `
steps:
  - name: leak
    secrets: [token, {name: cert, env: CERT}]
    script: |
      echo "whole: $TOKEN"
      printf 's3cr3t-'; sleep 0.2; printf 'Value-42 split\n'
      printf 's3'; printf 'cr'; printf '3t-Va'; printf 'lue-42\n' >&2
      echo "$CERT"
      echo "end"
      exit 1
`)
	if run.GetState() != pb.RunState_RUN_STATE_FAILED {
		t.Fatal(run.GetState())
	}
	var all strings.Builder
	for _, l := range rec.Lines() {
		all.WriteString(l.GetText() + "\n")
	}
	out := all.String()
	for _, bad := range []string{secret, "line-one-secret", "line-two-secret", "Value-42"} {
		if strings.Contains(out, bad) {
			t.Errorf("%q leaked in output:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, "whole: ********") || !strings.Contains(out, "******** split") || !strings.Contains(out, "end") {
		t.Errorf("output:\n%s", out)
	}
}

func TestConditionsAndMatrix(t *testing.T) {
	en := newEnv(t, nil)
	run, rec := en.run(t, `
steps:
  - {name: build, script: "exit 1"}
  - {name: after-build, script: "echo x"}
  - {name: notify, needs: [build], when: 'status.build == "failed"', script: "echo notify"}
  - {name: release, needs: [], when: 'branch == "release"', script: "echo rel"}
  - {name: onmain, needs: [], when: 'branch == "main" && event == "api"', script: "echo main"}
  - name: test
    needs: []
    matrix: {go: ["1.22", "1.23"]}
    script: echo "go=$GO"
`)
	want := map[string]pb.StepState{
		"build": pb.StepState_STEP_STATE_FAILED, "after-build": pb.StepState_STEP_STATE_SKIPPED,
		"notify": pb.StepState_STEP_STATE_SUCCESS, "release": pb.StepState_STEP_STATE_SKIPPED,
		"onmain": pb.StepState_STEP_STATE_SUCCESS, "test[go=1.22]": pb.StepState_STEP_STATE_SUCCESS,
		"test[go=1.23]": pb.StepState_STEP_STATE_SUCCESS,
	}
	for id, st := range want {
		if s := step(t, run, id); s.GetState() != st {
			t.Errorf("%s: %v (%s), want %v", id, s.GetState(), s.GetMessage(), st)
		}
	}
	if m := step(t, run, "release").GetMessage(); m != "skipped: when `branch == \"release\"` was false" {
		t.Errorf("release message %q", m)
	}
	got := map[string]bool{}
	for _, l := range rec.Lines() {
		got[l.GetStep()+":"+l.GetText()] = true
	}
	if !got["test[go=1.22]:go=1.22"] || !got["test[go=1.23]:go=1.23"] {
		t.Errorf("matrix values not in env: %v", got)
	}
}

func TestArtifacts(t *testing.T) {
	en := newEnv(t, nil)
	run, _ := en.run(t, `
steps:
  - name: build
    script: "mkdir -p out/sub && echo hello > out/a.txt && echo x > out/sub/b.bin"
    artifacts: [out]
`)
	arts := step(t, run, "build").GetArtifacts()
	if len(arts) != 2 || arts[0].GetPath() != "out/a.txt" || arts[0].GetSizeBytes() != 6 || !strings.HasPrefix(arts[0].GetDigest(), "sha256:") {
		t.Fatalf("artifacts %v", arts)
	}
	b, err := os.ReadFile(engine.ArtifactPath(filepath.Join(en.dir, "artifacts"), "r1", "build", "out/a.txt"))
	if err != nil || string(b) != "hello\n" {
		t.Fatal(string(b), err)
	}
}

// TestResume: a record left by a runner that died mid-run resumes: the
// finished step is not run again, the interrupted one is retried.
func TestResume(t *testing.T) {
	en := newEnv(t, nil)
	p := parse(t, `
steps:
  - {name: a, script: "echo a >> ran"}
  - {name: b, script: "echo b >> ran", retry: {max_attempts: 2, backoff: 10ms}}
  - {name: c, script: "echo c >> ran"}
  - {name: d, needs: [], script: "echo d >> ran"}
`)
	run := newRun(p, "r1")
	run.State = pb.RunState_RUN_STATE_RUNNING
	run.StartTime = timestamppb.Now()
	run.Steps[0].State = pb.StepState_STEP_STATE_SUCCESS
	run.Steps[0].Attempts = []*pb.Attempt{{Number: 1, Result: pb.AttemptResult_ATTEMPT_RESULT_SUCCESS}}
	run.Steps[1].State = pb.StepState_STEP_STATE_RUNNING
	run.Steps[1].Attempts = []*pb.Attempt{{Number: 1, StartTime: timestamppb.Now()}}
	run.Steps[3].State = pb.StepState_STEP_STATE_RUNNING
	run.Steps[3].Attempts = []*pb.Attempt{{Number: 1, StartTime: timestamppb.Now()}} // no retry policy: fails
	rec := &engine.Memory{}
	x := en.e.Start(context.Background(), run, p, rec)
	<-x.Done()
	got := rec.Run()
	b, _ := os.ReadFile(filepath.Join(en.dir, "ws", "r1", "ran"))
	if string(b) != "b\nc\n" {
		t.Errorf("ran %q, want b and c only", b)
	}
	if s := step(t, got, "b"); s.GetState() != pb.StepState_STEP_STATE_SUCCESS || len(s.GetAttempts()) != 2 ||
		s.GetAttempts()[0].GetMessage() != "runner restarted while the step was running" {
		t.Errorf("b: %v", s)
	}
	if s := step(t, got, "d"); s.GetState() != pb.StepState_STEP_STATE_FAILED || !strings.Contains(s.GetMessage(), "runner restarted") {
		t.Errorf("d: %v", s)
	}
	for _, s := range got.GetSteps() {
		if s.GetState() == pb.StepState_STEP_STATE_RUNNING || s.GetState() == pb.StepState_STEP_STATE_PENDING {
			t.Errorf("step %s left %v", s.GetId(), s.GetState())
		}
	}
	if got.GetState() != pb.RunState_RUN_STATE_FAILED {
		t.Errorf("run %v", got.GetState())
	}
}

func TestPipelineTimeout(t *testing.T) {
	en := newEnv(t, nil)
	run, _ := en.run(t, `
timeout: 400ms
steps:
  - {name: a, script: "sleep 300"}
  - {name: b, script: "true"}
`)
	if run.GetState() != pb.RunState_RUN_STATE_FAILED || !strings.Contains(run.GetMessage(), "pipeline timeout") {
		t.Fatalf("run %v %q", run.GetState(), run.GetMessage())
	}
	if s := step(t, run, "a"); s.GetAttempts()[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT {
		t.Errorf("a: %v", s)
	}
}
