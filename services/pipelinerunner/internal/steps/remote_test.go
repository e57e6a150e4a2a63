package steps_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/steps"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const token = "glpat-secret-token-123"

func runPipeline(t *testing.T, src string) (*pb.Run, *engine.Memory) {
	t.Helper()
	p, err := pipelinefile.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	remote := &steps.Remote{HTTP: &http.Client{Timeout: 5 * time.Second}}
	dir := t.TempDir()
	e := engine.New(engine.Engine{
		Handlers: map[string]engine.StepHandler{
			pipelinefile.TypeGitLab: steps.GitLab{Remote: remote},
			pipelinefile.TypeGitHub: steps.GitHub{Remote: remote},
		},
		Secrets: func(context.Context, string, []string) (map[string]string, error) {
			return map[string]string{"gl-token": token, "gh-token": token}, nil
		},
		WorkspaceRoot: filepath.Join(dir, "ws"), ArtifactRoot: filepath.Join(dir, "art"),
	}, 4)
	rec := &engine.Memory{}
	x := e.Start(context.Background(), &pb.Run{Id: "r-1", Pipeline: "p", State: pb.RunState_RUN_STATE_QUEUED, CreateTime: timestamppb.Now(), Steps: engine.Steps(p)}, p, rec)
	select {
	case <-x.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("run did not finish")
	}
	for _, l := range rec.Lines() {
		if strings.Contains(l.GetText(), token) {
			t.Fatalf("token logged: %q", l.GetText())
		}
	}
	return rec.Run(), rec
}

// fakeGitLab follows the documented pipeline trigger and get APIs.
func fakeGitLab(t *testing.T, final string) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("PRIVATE-TOKEN") != token {
			http.Error(w, `{"message":"401 Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.EscapedPath() == "/api/v4/projects/group%2Fapp/pipeline":
			var body struct {
				Ref       string `json:"ref"`
				Variables []struct{ Key, Value string }
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Ref != "main" || len(body.Variables) != 1 || body.Variables[0].Key != "TARGET" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id":77,"status":"created","ref":"main","web_url":"https://gitlab.example/group/app/-/pipelines/77"}`))
		case r.Method == http.MethodGet && r.URL.EscapedPath() == "/api/v4/projects/group%2Fapp/pipelines/77":
			polls++
			st := "running"
			if polls == 2 {
				http.Error(w, "upstream hiccup", http.StatusBadGateway) // a failed poll is retried
				return
			}
			if polls >= 3 {
				st = final
			}
			_, _ = w.Write([]byte(`{"id":77,"status":"` + st + `","ref":"main","web_url":"https://gitlab.example/group/app/-/pipelines/77"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGitLabPipeline(t *testing.T) {
	for _, tt := range []struct {
		final string
		state pb.StepState
	}{{"success", pb.StepState_STEP_STATE_SUCCESS}, {"failed", pb.StepState_STEP_STATE_FAILED}} {
		t.Run(tt.final, func(t *testing.T) {
			srv := fakeGitLab(t, tt.final)
			run, _ := runPipeline(t, `
steps:
  - name: remote
    gitlab: {url: "`+srv.URL+`", project: group/app, ref: main, token: gl-token, variables: {TARGET: prod}, poll_interval: 20ms}
`)
			s := run.GetSteps()[0]
			if s.GetState() != tt.state || s.GetRemote().GetRemoteId() != "77" || s.GetRemote().GetRemoteStatus() != tt.final || s.GetRemote().GetWebUrl() == "" {
				t.Fatalf("step %v", s)
			}
		})
	}
	t.Run("bad token fails without retry", func(t *testing.T) {
		srv := fakeGitLab(t, "success")
		run, _ := runPipeline(t, `
steps:
  - name: remote
    gitlab: {url: "`+srv.URL+`", project: group/app, ref: main, token: other}
`)
		s := run.GetSteps()[0]
		if s.GetState() != pb.StepState_STEP_STATE_FAILED || !strings.Contains(s.GetMessage(), `secret "other"`) {
			t.Fatalf("step %v", s)
		}
	})
}

// fakeGitHub follows the documented workflow dispatch, list workflow runs
// and get workflow run APIs.
func fakeGitHub(t *testing.T) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	type run struct {
		ID         int64     `json:"id"`
		Status     string    `json:"status"`
		Conclusion string    `json:"conclusion,omitempty"`
		Event      string    `json:"event"`
		HeadBranch string    `json:"head_branch"`
		HTMLURL    string    `json:"html_url"`
		CreatedAt  time.Time `json:"created_at"`
	}
	runs := []*run{{ID: 1, Status: "completed", Conclusion: "failure", Event: "workflow_dispatch", HeadBranch: "main", CreatedAt: time.Now().Add(-time.Hour)}}
	gets := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token || r.Header.Get("X-GitHub-Api-Version") == "" {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/repos/acme/shop/actions/workflows/ci.yml/dispatches":
			var body struct {
				Ref    string            `json:"ref"`
				Inputs map[string]string `json:"inputs"`
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Ref != "main" || body.Inputs["env"] != "prod" {
				http.Error(w, "bad request", http.StatusUnprocessableEntity)
				return
			}
			runs = append(runs, &run{ID: 2, Status: "queued", Event: "workflow_dispatch", HeadBranch: "main", HTMLURL: "https://github.example/acme/shop/actions/runs/2", CreatedAt: time.Now()})
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodGet && r.URL.Path == "/repos/acme/shop/actions/workflows/ci.yml/runs":
			if r.URL.Query().Get("event") != "workflow_dispatch" {
				http.Error(w, "bad query", http.StatusBadRequest)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"total_count": len(runs), "workflow_runs": runs})
		case r.Method == http.MethodGet && r.URL.Path == "/repos/acme/shop/actions/runs/2":
			gets++
			rn := runs[1]
			if gets == 1 {
				rn.Status = "in_progress"
			} else {
				rn.Status, rn.Conclusion = "completed", "success"
			}
			_ = json.NewEncoder(w).Encode(rn)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGitHubWorkflow(t *testing.T) {
	srv := fakeGitHub(t)
	run, rec := runPipeline(t, `
steps:
  - name: dispatch
    github: {url: "`+srv.URL+`", repository: acme/shop, workflow: ci.yml, ref: main, token: gh-token, inputs: {env: prod}, poll_interval: 20ms}
`)
	s := run.GetSteps()[0]
	if s.GetState() != pb.StepState_STEP_STATE_SUCCESS || s.GetRemote().GetRemoteId() != "2" || s.GetRemote().GetRemoteStatus() != "completed/success" {
		t.Fatalf("step %v", s)
	}
	var texts []string
	for _, l := range rec.Lines() {
		texts = append(texts, l.GetText())
	}
	if !strings.Contains(strings.Join(texts, "\n"), "workflow run 2: in_progress") {
		t.Errorf("output %v", texts)
	}
}
