package pipelinerunner_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func TestBadInputNamesLineAndKey(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	tests := []struct {
		name, src, field, desc string
	}{
		{"malformed yaml", "steps:\n  - name: a\n    script: [\n", "source", "line 3: malformed YAML"},
		{"unknown key", "steps:\n  - name: a\n    scirpt: x\n", "source.steps.a.scirpt", "line 3: unknown key"},
		{"cycle", "steps:\n  - {name: a, needs: [b], script: x}\n  - {name: b, needs: [a], script: x}\n", "source.steps.a.needs", "line 2: cycle in needs"},
		{"bad cron", "triggers:\n  cron:\n    - spec: '* * *'\nsteps:\n  - {name: a, script: x}\n", "source.triggers.cron[0].spec", "line 3: bad cron spec"},
		{"bad expression", "steps:\n  - name: a\n    when: 'branch =='\n    script: x\n", "source.steps.a.when", "line 2: bad expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := inst.client.CreatePipeline(t.Context(), &pb.CreatePipelineRequest{Pipeline: &pb.Pipeline{Name: "bad", Source: tt.src}})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code %v: %v", st.Code(), err)
			}
			found := false
			var vErrs int
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.BadRequest:
					for _, fv := range d.GetFieldViolations() {
						if fv.GetField() == tt.field && strings.HasPrefix(fv.GetDescription(), tt.desc) {
							found = true
						}
					}
				case *pb.ValidationError:
					vErrs++
				}
			}
			if !found || vErrs == 0 {
				t.Fatalf("no violation %s %q in %v", tt.field, tt.desc, st.Details())
			}
			res, err := inst.client.ValidatePipeline(t.Context(), &pb.ValidatePipelineRequest{Source: tt.src})
			if err != nil || res.GetValid() || len(res.GetErrors()) == 0 || res.GetErrors()[0].GetLine() == 0 {
				t.Fatalf("validate: %v %v", res, err)
			}
		})
	}
}

func TestPipelineCRUD(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	src, err := os.ReadFile("../../examples/pipelines/build-test-deploy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	created, err := c.CreatePipeline(t.Context(), &pb.CreatePipelineRequest{Pipeline: &pb.Pipeline{Source: string(src)}})
	if err != nil {
		t.Fatal(err)
	}
	p := created.GetPipeline()
	if w := created.GetWarnings(); len(w) != 1 || !strings.Contains(w[0].GetMessage(), `"github-webhook"`) || w[0].GetSeverity() != pb.ValidationSeverity_VALIDATION_SEVERITY_WARNING {
		t.Errorf("warnings %v", w)
	}
	if p.GetName() != "build-test-deploy" || len(p.GetSpec().GetSteps()) != 4 || !strings.HasPrefix(p.GetSourceDigest(), "sha256:") || p.GetEtag() == "" {
		t.Fatalf("created %v", p)
	}
	if wh := p.GetSpec().GetWebhooks(); len(wh) != 1 || wh[0].GetPath() != "/v1/webhooks/github/build-test-deploy" {
		t.Errorf("webhooks %v", wh)
	}
	if _, err := c.CreatePipeline(t.Context(), &pb.CreatePipelineRequest{Pipeline: &pb.Pipeline{Name: "build-test-deploy", Source: string(src)}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate create: %v", err)
	}
	if _, err := c.CreatePipeline(t.Context(), &pb.CreatePipelineRequest{Pipeline: &pb.Pipeline{Name: "other", Source: string(src)}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("name differing from the file's: %v", err)
	}
	got, err := c.GetPipeline(t.Context(), &pb.GetPipelineRequest{Name: "build-test-deploy"})
	if err != nil || got.GetPipeline().GetSpec().GetSchedules()[0].GetNextTime() == nil && false {
		t.Fatal(err)
	}
	_, err = c.UpdatePipeline(t.Context(), &pb.UpdatePipelineRequest{
		Pipeline:   &pb.Pipeline{Name: "build-test-deploy", Paused: true, Etag: "stale"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"paused"}},
	})
	if status.Code(err) != codes.Aborted {
		t.Errorf("stale etag: %v", err)
	}
	up, err := c.UpdatePipeline(t.Context(), &pb.UpdatePipelineRequest{
		Pipeline:   &pb.Pipeline{Name: "build-test-deploy", Paused: true, Labels: map[string]string{"team": "web"}, Etag: p.GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"paused", "labels"}},
	})
	if err != nil || !up.GetPipeline().GetPaused() || up.GetPipeline().GetEtag() == p.GetEtag() {
		t.Fatalf("update: %v %v", up, err)
	}
	createPipeline(t, c, "second", "steps:\n  - {name: a, script: 'true'}\n")
	list, err := c.ListPipelines(t.Context(), &pb.ListPipelinesRequest{LabelSelector: "team=web"})
	if err != nil || len(list.GetPipelines()) != 1 || list.GetPipelines()[0].GetName() != "build-test-deploy" {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := c.DeletePipeline(t.Context(), &pb.DeletePipelineRequest{Name: "second"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPipeline(t.Context(), &pb.GetPipelineRequest{Name: "second"}); status.Code(err) != codes.NotFound {
		t.Fatalf("after delete: %v", err)
	}
}

func TestRunEndToEnd(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, pipelinerunner.Deps{})
	c := inst.client
	createPipeline(t, c, "dag", `
variables:
  - {name: GREETING, default: hello}
steps:
  - {name: prepare, script: 'echo "$GREETING from $OPSUITE_BRANCH"; mkdir -p out; echo built > out/app.txt', artifacts: [out/app.txt]}
  - {name: left, needs: [prepare], script: 'sleep 0.3; echo left'}
  - {name: right, needs: [prepare], script: 'sleep 0.3; echo right >&2'}
  - {name: join, needs: [left, right], script: 'echo join'}
`)
	res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "dag", Ref: "main", RequestId: "req-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "dag", Ref: "main", RequestId: "req-1"})
	if err != nil || again.GetRun().GetId() != res.GetRun().GetId() {
		t.Fatalf("idempotent retry gave %v %v", again.GetRun().GetId(), err)
	}
	run := waitRun(t, c, res.GetRun().GetId())
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS || run.GetNumber() != 1 || run.GetVariables()["GREETING"] != "hello" {
		t.Fatalf("run %v", run)
	}
	l, r := stepOf(t, run, "left"), stepOf(t, run, "right")
	if !l.GetStartTime().AsTime().Before(r.GetEndTime().AsTime()) || !r.GetStartTime().AsTime().Before(l.GetEndTime().AsTime()) {
		t.Error("parallel branches did not overlap")
	}
	lines := logs(t, c, &pb.StreamRunLogsRequest{Id: run.GetId()})
	var texts []string
	for i, ln := range lines {
		if ln.GetSeq() != uint64(i+1) {
			t.Fatalf("seq %d at %d", ln.GetSeq(), i)
		}
		texts = append(texts, ln.GetStep()+"|"+ln.GetText())
	}
	for _, want := range []string{"prepare|hello from main", "left|left", "right|right", "join|join"} {
		if !slices.Contains(texts, want) {
			t.Errorf("missing %q in %v", want, texts)
		}
	}
	only := logs(t, c, &pb.StreamRunLogsRequest{Id: run.GetId(), Steps: []string{"right"}})
	if len(only) != 1 || only[0].GetStream() != pb.LogStream_LOG_STREAM_STDERR {
		t.Errorf("filtered logs %v", only)
	}
	tail := logs(t, c, &pb.StreamRunLogsRequest{Id: run.GetId(), TailLines: 1})
	if len(tail) != 1 || !strings.HasPrefix(tail[0].GetText(), "run finished: success") {
		t.Errorf("tail %v", tail)
	}
	arts, err := c.ListArtifacts(t.Context(), &pb.ListArtifactsRequest{Id: run.GetId()})
	if err != nil || len(arts.GetArtifacts()) != 1 {
		t.Fatalf("artifacts %v %v", arts, err)
	}
	stream, err := c.GetArtifact(t.Context(), &pb.GetArtifactRequest{Id: run.GetId(), Step: "prepare", Path: "out/app.txt"})
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	var meta *pb.Artifact
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetArtifact() != nil {
			meta = msg.GetArtifact()
		}
		data = append(data, msg.GetData()...)
	}
	if string(data) != "built\n" || meta.GetSizeBytes() != 6 {
		t.Fatalf("artifact %q %v", data, meta)
	}
	// Events: queued, started, 4 step started/finished, finished.
	want := map[string]int{
		pipelinerunner.EventRunQueued: 1, pipelinerunner.EventRunStarted: 1, pipelinerunner.EventStepStarted: 4,
		pipelinerunner.EventStepFinished: 4, pipelinerunner.EventRunFinished: 1,
	}
	got := countEvents(t, e, "opsuite.pipeline.>")
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d %s events, want %d (all: %v)", got[k], k, n, got)
		}
	}
	list, err := c.ListRuns(t.Context(), &pb.ListRunsRequest{Pipeline: "dag"})
	if err != nil || len(list.GetRuns()) != 1 {
		t.Fatalf("list runs %v %v", list, err)
	}
	byNumber, err := c.GetRun(t.Context(), &pb.GetRunRequest{Pipeline: "dag", Number: 1})
	if err != nil || byNumber.GetRun().GetId() != run.GetId() {
		t.Fatalf("get by number %v", err)
	}
	if _, err := c.CancelRun(t.Context(), &pb.CancelRunRequest{Id: run.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("cancel finished run: %v", err)
	}
}

func countEvents(t *testing.T, e *env, subject string) map[string]int {
	t.Helper()
	cons, err := e.js.OrderedConsumer(t.Context(), "OPSUITE_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		out[msg.Subject()]++
	}
}

func TestSecretNeverStoredOrStreamed(t *testing.T) {
	e := newEnv(t)
	inst := e.start(t, pipelinerunner.Deps{})
	c := inst.client
	const secret = "tok-9f8e7d6c5b4a"
	if _, err := c.CreateSecret(t.Context(), &pb.CreateSecretRequest{Secret: &pb.Secret{Name: "api-token", Value: secret}}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListSecrets(t.Context(), &pb.ListSecretsRequest{})
	if err != nil || len(list.GetSecrets()) != 1 || list.GetSecrets()[0].GetValue() != "" {
		t.Fatalf("list secrets %v %v", list, err)
	}
	createPipeline(t, c, "leaky", `
steps:
  - name: leak
    secrets: [api-token]
    script: |
      echo "token=$API_TOKEN"
      printf 'tok-9f8e'; sleep 0.2; printf '7d6c5b4a\n'
      printf '%s' "$API_TOKEN" | cut -c1-6; printf '%s\n' "$API_TOKEN" | cut -c7-
      printf 'tok-' >&2; sleep 0.1; printf '9f8e7d\n' >&2; printf '6c5b4a\n' >&2
      exit 3
`)
	res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "leaky"})
	if err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, c, res.GetRun().GetId())
	var all strings.Builder
	for _, l := range logs(t, c, &pb.StreamRunLogsRequest{Id: run.GetId()}) {
		all.WriteString(l.GetText() + "\n")
	}
	if strings.Contains(all.String(), secret) || strings.Contains(all.String(), "7d6c5b4a") {
		t.Fatalf("secret streamed:\n%s", all.String())
	}
	if !strings.Contains(all.String(), "token=********") {
		t.Fatalf("output:\n%s", all.String())
	}
	// Nothing stored anywhere in the log stream or run records holds it.
	for _, name := range []string{"OPSUITE_PIPELINE_LOGS", "KV_opsuite_pipelinerunner_runs", "OPSUITE_EVENTS"} {
		cons, err := e.js.OrderedConsumer(t.Context(), name, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
			if err != nil {
				break
			}
			if strings.Contains(string(msg.Data()), secret) || strings.Contains(string(msg.Data()), "9f8e7d6c") {
				t.Fatalf("secret stored in %s", name)
			}
		}
	}
}

func TestCancelRunKillsGroup(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	createPipeline(t, c, "long", "steps:\n  - {name: wait, script: 'sleep 300'}\n  - {name: after, script: 'true'}\n")
	res, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "long"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetRun().GetId()
	pg := waitProcessGroup(t, c, id, "wait")
	if _, err := c.CancelRun(t.Context(), &pb.CancelRunRequest{Id: id, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, c, id)
	if run.GetState() != pb.RunState_RUN_STATE_CANCELLED || stepOf(t, run, "after").GetState() != pb.StepState_STEP_STATE_CANCELLED {
		t.Fatalf("run %v", run)
	}
	if groupAlive(pg) {
		t.Fatal("cancelled step's process group still runs")
	}
}

// waitProcessGroup waits until the step runs and returns its process group.
func waitProcessGroup(t *testing.T, c pb.PipelineRunnerServiceClient, id, step string) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res, err := c.GetRun(t.Context(), &pb.GetRunRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if pg := stepOf(t, res.GetRun(), step).GetCommand().GetProcessGroup(); pg != "" {
			n, _ := strconv.Atoi(pg)
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("step %s never started", step)
	return 0
}

func groupAlive(pg int) bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pg, 0); err != nil {
			return false
		}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pg) + "/stat"); err != nil || strings.Contains(string(b), ") Z ") {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestRestartResumesRun stops the runner while a multi-step run is in its
// second step and starts a new one on the same NATS: the first step is not
// run again, the interrupted one is retried, the run completes, and no
// record is left running.
func TestRestartResumesRun(t *testing.T) {
	e := newEnv(t)
	marks := filepath.Join(t.TempDir(), "marks")
	first := e.start(t, pipelinerunner.Deps{})
	createPipeline(t, first.client, "resume", `
steps:
  - {name: one, script: 'echo one >> `+marks+`'}
  - {name: two, script: 'echo two-start >> `+marks+`; sleep 2; echo two-done >> `+marks+`', retry: {max_attempts: 2, backoff: 10ms}}
  - {name: three, script: 'echo three >> `+marks+`'}
`)
	res, err := first.client.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "resume"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetRun().GetId()
	pg := waitProcessGroup(t, first.client, id, "two")
	first.stop() // the runner goes away mid-step
	if groupAlive(pg) {
		t.Fatal("the stopped runner left its step's process group running")
	}
	second := e.start(t, pipelinerunner.Deps{})
	run := waitRun(t, second.client, id)
	if run.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatalf("run %v: %s", run.GetState(), run.GetMessage())
	}
	b, _ := os.ReadFile(marks)
	if got := string(b); got != "one\ntwo-start\ntwo-start\ntwo-done\nthree\n" {
		t.Fatalf("marks %q: step one must run once, two twice, three once", got)
	}
	two := stepOf(t, run, "two")
	if len(two.GetAttempts()) != 2 || two.GetAttempts()[0].GetResult() != pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR ||
		two.GetAttempts()[0].GetMessage() != "runner restarted while the step was running" {
		t.Fatalf("two: %v", two)
	}
	if len(stepOf(t, run, "one").GetAttempts()) != 1 {
		t.Fatal("one ran again")
	}
	// The run started once (no second started event).
	if n := countEvents(t, e, pipelinerunner.EventRunStarted)[pipelinerunner.EventRunStarted]; n != 1 {
		t.Errorf("%d run started events", n)
	}
}

func TestRerunFailedSteps(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	flag := filepath.Join(t.TempDir(), "ok")
	createPipeline(t, c, "flaky", `
steps:
  - {name: build, script: 'echo build; mkdir -p out; echo bin > out/bin', artifacts: [out/bin]}
  - {name: test, script: 'test -f `+flag+`'}
  - {name: ship, script: 'cat out/bin'}
`)
	res, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "flaky"})
	run := waitRun(t, c, res.GetRun().GetId())
	if run.GetState() != pb.RunState_RUN_STATE_FAILED || stepOf(t, run, "ship").GetState() != pb.StepState_STEP_STATE_SKIPPED {
		t.Fatalf("first run %v", run)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	re, err := c.RerunRun(t.Context(), &pb.RerunRunRequest{Id: run.GetId(), Mode: pb.RerunMode_RERUN_MODE_FAILED_STEPS})
	if err != nil {
		t.Fatal(err)
	}
	run2 := waitRun(t, c, re.GetRun().GetId())
	if run2.GetState() != pb.RunState_RUN_STATE_SUCCESS || run2.GetRerunOf() != run.GetId() {
		t.Fatalf("rerun %v", run2)
	}
	if b := stepOf(t, run2, "build"); b.GetReusedFrom() != run.GetId() || len(b.GetArtifacts()) != 1 {
		t.Errorf("build not reused: %v", b)
	}
	var shipOut []string
	for _, l := range logs(t, c, &pb.StreamRunLogsRequest{Id: run2.GetId(), Steps: []string{"ship", "build"}}) {
		shipOut = append(shipOut, l.GetStep()+"|"+l.GetText())
	}
	if !slices.Equal(shipOut, []string{"ship|bin"}) {
		t.Errorf("rerun output %v: build must not run again, ship must see its workspace", shipOut)
	}
}

func TestFollowLogsLive(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	createPipeline(t, c, "live", "steps:\n  - {name: talk, script: 'for i in 1 2 3; do echo line $i; sleep 0.3; done'}\n")
	res, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "live"})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := c.StreamRunLogs(ctx, &pb.StreamRunLogsRequest{Id: res.GetRun().GetId(), Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got []string
	var firstAt time.Duration
	for {
		msg, err := stream.Recv()
		if err != nil {
			break
		}
		for _, l := range msg.GetLines() {
			if l.GetText() == "line 1" {
				firstAt = time.Since(start)
			}
			got = append(got, l.GetText())
		}
	}
	if len(got) != 4 || got[2] != "line 3" || !strings.HasPrefix(got[3], "run finished") {
		t.Fatalf("followed %v", got)
	}
	if firstAt > 800*time.Millisecond {
		t.Errorf("first line arrived after %v: not live", firstAt)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	createPipeline(t, c, "serial", "concurrency: {limit: 1}\nsteps:\n  - {name: a, script: 'sleep 0.5'}\n")
	first, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "serial"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "serial"})
	if err != nil {
		t.Fatal(err)
	}
	if second.GetRun().GetState() != pb.RunState_RUN_STATE_QUEUED || second.GetRun().GetQueuePosition() != 1 {
		t.Fatalf("second run %v position %d, want queued 1", second.GetRun().GetState(), second.GetRun().GetQueuePosition())
	}
	r1 := waitRun(t, c, first.GetRun().GetId())
	r2 := waitRun(t, c, second.GetRun().GetId())
	if r2.GetState() != pb.RunState_RUN_STATE_SUCCESS || r2.GetStartTime().AsTime().Before(r1.GetEndTime().AsTime()) {
		t.Fatalf("second run started %v before the first ended %v", r2.GetStartTime().AsTime(), r1.GetEndTime().AsTime())
	}
	// Cancelling a queued run.
	createPipeline(t, c, "skipper", "concurrency: {limit: 1, policy: skip}\nsteps:\n  - {name: a, script: 'sleep 0.5'}\n")
	a, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "skipper"})
	b, err := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "skipper"})
	if err != nil || b.GetRun().GetState() != pb.RunState_RUN_STATE_SKIPPED {
		t.Fatalf("skip policy: %v %v", b.GetRun(), err)
	}
	waitRun(t, c, a.GetRun().GetId())
	q1, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "serial"})
	q2, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "serial"})
	cr, err := c.CancelRun(t.Context(), &pb.CancelRunRequest{Id: q2.GetRun().GetId(), Reason: "not needed"})
	if err != nil || cr.GetRun().GetState() != pb.RunState_RUN_STATE_CANCELLED {
		t.Fatalf("cancel queued: %v %v", cr, err)
	}
	if r := waitRun(t, c, q1.GetRun().GetId()); r.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatal(r)
	}
	got, _ := c.GetRun(t.Context(), &pb.GetRunRequest{Id: q2.GetRun().GetId()})
	if got.GetRun().GetState() != pb.RunState_RUN_STATE_CANCELLED || got.GetRun().GetStartTime() != nil {
		t.Fatalf("cancelled queued run ran: %v", got.GetRun())
	}
}

func TestDrainEndsStreams(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	createPipeline(t, c, "slow", "steps:\n  - {name: a, script: 'sleep 300'}\n")
	res, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "slow"})
	stream, err := c.StreamRunLogs(t.Context(), &pb.StreamRunLogsRequest{Id: res.GetRun().GetId(), Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := c.WatchRun(t.Context(), &pb.WatchRunRequest{Id: res.GetRun().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	inst.svc.Drain()
	for _, recv := range []func() error{
		func() error { _, err := stream.Recv(); return err },
		func() error {
			for {
				if _, err := watch.Recv(); err != nil {
					return err
				}
			}
		},
	} {
		done := make(chan error, 1)
		go func() { done <- recv() }()
		select {
		case err := <-done:
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("stream ended with %v, want Unavailable", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("stream not ended by Drain")
		}
	}
	_, _ = c.CancelRun(t.Context(), &pb.CancelRunRequest{Id: res.GetRun().GetId()})
}

// TestShipsOutputToLogAggregator: with a stream on opsuite.logs.> (the
// log-aggregator's), each step's masked output is published as a LogBatch.
func TestShipsOutputToLogAggregator(t *testing.T) {
	e := newEnv(t)
	if _, err := e.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "LOGS_TEST", Subjects: []string{"opsuite.logs.>"}}); err != nil {
		t.Fatal(err)
	}
	inst := e.start(t, pipelinerunner.Deps{})
	c := inst.client
	if _, err := c.CreateSecret(t.Context(), &pb.CreateSecretRequest{Secret: &pb.Secret{Name: "pw", Value: "hunter22"}}); err != nil {
		t.Fatal(err)
	}
	createPipeline(t, c, "shipped", "steps:\n  - {name: say, secrets: [pw], script: 'echo hello; echo \"pw=$PW\" >&2'}\n")
	res, _ := c.RunPipeline(t.Context(), &pb.RunPipelineRequest{Name: "shipped"})
	waitRun(t, c, res.GetRun().GetId())
	cons, err := e.js.OrderedConsumer(t.Context(), "LOGS_TEST", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"opsuite.logs.pipeline.shipped.1.say"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var batch lav1.LogBatch
	if err := proto.Unmarshal(msg.Data(), &batch); err != nil {
		t.Fatal(err)
	}
	st := batch.GetStreams()[0]
	if st.GetSource() != "pipeline/shipped/1/say" || st.GetLabels()["step"] != "say" || len(st.GetEntries()) != 2 {
		t.Fatalf("batch %v", &batch)
	}
	for _, en := range st.GetEntries() {
		if strings.Contains(en.GetMessage(), "hunter22") {
			t.Fatal("secret shipped")
		}
	}
}
