package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
)

// stepLine is one execution of a step, as the step itself wrote it.
type stepLine struct {
	run, step, workspace string
}

func readStepLines(t *testing.T, path string) []stepLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []stepLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 {
			out = append(out, stepLine{run: f[0], step: f[1], workspace: f[2]})
		}
	}
	return out
}

// TestPipelineRunnerReplicas runs two pipeline-runner processes on one NATS
// with runs queued through both; the runner executing some of them is
// killed with SIGKILL mid-step. Every run finishes, on the survivor for the
// interrupted ones; every step ran exactly once, except a step that was
// running at the kill, which runs again (its first attempt is recorded as
// interrupted) — counted here.
func TestPipelineRunnerReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	ns := startNATS(t)
	// The runners need a health-checker address for gate steps; none are
	// used here, so nothing needs to listen there.
	hc := freeAddr(t)
	a := startReplica(t, ns.ClientURL(), "pipelinerunner", "runner-a", "--healthchecker-addr", hc)
	b := startReplica(t, ns.ClientURL(), "pipelinerunner", "runner-b", "--healthchecker-addr", hc)
	ca, cb := prv1.NewPipelineRunnerServiceClient(a.conn), prv1.NewPipelineRunnerServiceClient(b.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	marks := filepath.Join(t.TempDir(), "marks")
	line := `echo "$OPSUITE_RUN_ID $OPSUITE_STEP $PWD" >> ` + marks
	src := fmt.Sprintf(`
steps:
  - {name: one, retry: {max_attempts: 2, backoff: 10ms}, script: '%[1]s'}
  - {name: two, needs: [one], retry: {max_attempts: 2, backoff: 10ms}, script: '%[1]s; sleep 4'}
  - {name: three, needs: [two], retry: {max_attempts: 2, backoff: 10ms}, script: '%[1]s'}
`, line)
	if _, err := ca.CreatePipeline(ctx, &prv1.CreatePipelineRequest{Pipeline: &prv1.Pipeline{Name: "ship", Source: src}}); err != nil {
		t.Fatal(err)
	}
	const runs = 6
	var ids []string
	for i := range runs {
		c := ca
		if i%2 == 1 {
			c = cb
		}
		res, err := c.RunPipeline(ctx, &prv1.RunPipelineRequest{Name: "ship"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.GetRun().GetId())
	}

	// Kill runner-a while its runs are in step two.
	aWork := filepath.Join(a.dataDir, "pipelinerunner", "workspaces")
	eventually(t, time.Minute, "runner-a to be in step two", func() bool {
		for _, l := range readStepLines(t, marks) {
			if l.step == "two" && strings.HasPrefix(l.workspace, aWork) {
				return true
			}
		}
		return false
	})
	a.kill()
	killed := time.Now()
	t.Logf("runner-a killed with SIGKILL; executions so far: %d", len(readStepLines(t, marks)))

	finished := map[string]*prv1.Run{}
	eventually(t, 3*time.Minute, "every run to finish", func() bool {
		for _, id := range ids {
			if finished[id] != nil {
				continue
			}
			r, err := cb.GetRun(ctx, &prv1.GetRunRequest{Id: id})
			if err != nil {
				t.Fatal(err)
			}
			switch r.GetRun().GetState() {
			case prv1.RunState_RUN_STATE_SUCCESS, prv1.RunState_RUN_STATE_FAILED, prv1.RunState_RUN_STATE_CANCELLED:
				finished[id] = r.GetRun()
			}
		}
		return len(finished) == len(ids)
	})
	t.Logf("all %d runs finished %s after the kill", runs, time.Since(killed).Round(time.Millisecond))

	lines := readStepLines(t, marks)
	executions := map[string][]string{} // run/step → workspaces
	for _, l := range lines {
		executions[l.run+"/"+l.step] = append(executions[l.run+"/"+l.step], l.workspace)
	}
	bWork := filepath.Join(b.dataDir, "pipelinerunner", "workspaces")
	var again, takenOver int
	for _, id := range ids {
		run := finished[id]
		if run.GetState() != prv1.RunState_RUN_STATE_SUCCESS {
			t.Errorf("run %s: %s %s", id, run.GetState(), run.GetMessage())
			continue
		}
		resumed := false
		for _, st := range run.GetSteps() {
			ws := executions[id+"/"+st.GetId()]
			interrupted := 0
			for _, at := range st.GetAttempts() {
				if at.GetResult() == prv1.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR {
					interrupted++
				}
			}
			switch {
			case interrupted == 0 && len(ws) != 1:
				t.Errorf("%s step %s executed %d times, want once: %v", id, st.GetId(), len(ws), ws)
			case interrupted == 1 && (len(ws) < 1 || len(ws) > 2):
				t.Errorf("%s step %s was interrupted by the kill and executed %d times, want once or twice", id, st.GetId(), len(ws))
			case interrupted > 1:
				t.Errorf("%s step %s interrupted %d times: %v", id, st.GetId(), interrupted, st.GetAttempts())
			}
			if interrupted == 1 {
				again += len(ws) - 1
				resumed = true
				if last := ws[len(ws)-1]; !strings.HasPrefix(last, bWork) {
					t.Errorf("%s step %s re-run at %s, want runner-b", id, st.GetId(), last)
				}
			}
		}
		if resumed {
			takenOver++
		}
	}
	if takenOver == 0 {
		t.Fatal("no run was taken over from runner-a: the kill came too late to test anything")
	}
	if want := 3*runs + again; len(lines) != want {
		t.Errorf("%d step executions, want %d (3 per run, plus %d re-run after the kill)", len(lines), want, again)
	}
	t.Logf("%d runs taken over by runner-b; %d step executions for %d steps: %d step(s) in flight at the kill ran again", takenOver, len(lines), 3*runs, again)
}
