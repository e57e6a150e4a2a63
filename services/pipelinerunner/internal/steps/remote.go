package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
)

// Remote runs GitLab and GitHub Actions pipeline steps over their REST APIs.
type Remote struct {
	HTTP *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// httpError is a non-2xx answer.
type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

// call does one request and decodes a JSON answer into out (when not nil).
func (r *Remote) call(ctx context.Context, method, u string, hdr http.Header, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header = hdr.Clone()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := r.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &httpError{code: res.StatusCode, body: msg}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// remoteOutcome: unreachable, 5xx and 429 answers are infrastructure
// errors; other refusals (bad token, unknown project) are failures.
func remoteOutcome(what string, err error) engine.Outcome {
	if he, ok := err.(*httpError); ok && he.code != http.StatusTooManyRequests && he.code < 500 {
		return failed("%s: %v", what, err)
	}
	return infra("%s: %v", what, err)
}

func (r *Remote) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// wait sleeps d or until ctx ends.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// GitLab triggers a pipeline and polls it until it ends.
type GitLab struct{ *Remote }

type gitlabPipeline struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
	WebURL string `json:"web_url"`
	Ref    string `json:"ref"`
}

// RunStep runs a GitLab pipeline step.
func (g GitLab) RunStep(ctx context.Context, in engine.StepInput) engine.Outcome {
	gl := in.Instance.Step.GitLab
	token, ok := in.Secrets[gl.Token]
	if !ok {
		return failed("secret %q does not exist or is not allowed for this pipeline", gl.Token)
	}
	base := strings.TrimRight(gl.URL, "/") + "/api/v4/projects/" + url.PathEscape(gl.Project)
	hdr := http.Header{"Private-Token": {token}, "Accept": {"application/json"}}
	type variable struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	body := struct {
		Ref       string     `json:"ref"`
		Variables []variable `json:"variables,omitempty"`
	}{Ref: gl.Ref}
	for _, k := range sortedKeys(gl.Variables) {
		body.Variables = append(body.Variables, variable{Key: k, Value: gl.Variables[k]})
	}
	var p gitlabPipeline
	if err := g.call(ctx, http.MethodPost, base+"/pipeline", hdr, body, &p); err != nil {
		return remoteOutcome("trigger GitLab pipeline for "+gl.Project, err)
	}
	report := func() {
		in.Update(func(s *pb.RunStep) {
			s.Detail = &pb.RunStep_Remote{Remote: &pb.RemotePipelineStatus{
				Project: gl.Project, Ref: gl.Ref, RemoteId: fmt.Sprint(p.ID), RemoteStatus: p.Status, WebUrl: p.WebURL,
			}}
		})
	}
	report()
	fmt.Fprintf(in.Log, "GitLab pipeline %d for %s@%s: %s %s\n", p.ID, gl.Project, gl.Ref, p.Status, p.WebURL)
	last, failures := p.Status, 0
	for {
		switch p.Status {
		case "success":
			return success()
		case "failed", "canceled", "skipped":
			return failed("GitLab pipeline %d %s", p.ID, p.Status)
		}
		if !wait(ctx, gl.PollInterval) {
			g.cancelGitLab(base, hdr, p.ID)
			return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, Message: fmt.Sprintf("GitLab pipeline %d still %s; cancel requested", p.ID, p.Status)}
		}
		var next gitlabPipeline
		if err := g.call(ctx, http.MethodGet, fmt.Sprintf("%s/pipelines/%d", base, p.ID), hdr, nil, &next); err != nil {
			if failures++; failures < 5 && remoteOutcome("", err).Result == pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR && ctx.Err() == nil {
				continue // a poll that failed is tried again
			}
			return remoteOutcome(fmt.Sprintf("poll GitLab pipeline %d", p.ID), err)
		}
		failures = 0
		p = next
		if p.Status != last {
			report()
			fmt.Fprintf(in.Log, "GitLab pipeline %d: %s\n", p.ID, p.Status)
			last = p.Status
		}
	}
}

func (g GitLab) cancelGitLab(base string, hdr http.Header, id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = g.call(ctx, http.MethodPost, fmt.Sprintf("%s/pipelines/%d/cancel", base, id), hdr, nil, nil)
}

// GitHub dispatches a workflow and follows the run it started.
type GitHub struct{ *Remote }

type githubRun struct {
	ID         int64     `json:"id"`
	Status     string    `json:"status"`
	Conclusion string    `json:"conclusion"`
	HTMLURL    string    `json:"html_url"`
	CreatedAt  time.Time `json:"created_at"`
	Event      string    `json:"event"`
	HeadBranch string    `json:"head_branch"`
}

// RunStep runs a GitHub Actions workflow step.
func (g GitHub) RunStep(ctx context.Context, in engine.StepInput) engine.Outcome {
	gh := in.Instance.Step.GitHub
	token, ok := in.Secrets[gh.Token]
	if !ok {
		return failed("secret %q does not exist or is not allowed for this pipeline", gh.Token)
	}
	repo := strings.TrimRight(gh.URL, "/") + "/repos/" + gh.Repository
	wf := repo + "/actions/workflows/" + url.PathEscape(gh.Workflow)
	hdr := http.Header{
		"Authorization": {"Bearer " + token}, "Accept": {"application/vnd.github+json"},
		"X-Github-Api-Version": {"2022-11-28"},
	}
	// Runs that exist before the dispatch are not ours.
	before, err := g.listRuns(ctx, wf, hdr, gh.Ref)
	if err != nil {
		return remoteOutcome("list runs of "+gh.Workflow, err)
	}
	dispatched := g.now().Add(-5 * time.Second)
	body := map[string]any{"ref": gh.Ref}
	if len(gh.Inputs) > 0 {
		body["inputs"] = gh.Inputs
	}
	if err := g.call(ctx, http.MethodPost, wf+"/dispatches", hdr, body, nil); err != nil {
		return remoteOutcome("dispatch workflow "+gh.Workflow+" of "+gh.Repository, err)
	}
	fmt.Fprintf(in.Log, "dispatched workflow %s of %s on %s\n", gh.Workflow, gh.Repository, gh.Ref)
	var run githubRun
	for run.ID == 0 {
		if !wait(ctx, gh.PollInterval) {
			return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, Message: "workflow run not found before the step ended"}
		}
		runs, err := g.listRuns(ctx, wf, hdr, gh.Ref)
		if err != nil {
			if remoteOutcome("", err).Result == pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR && ctx.Err() == nil {
				continue
			}
			return remoteOutcome("list runs of "+gh.Workflow, err)
		}
		for _, r := range runs {
			known := slices.ContainsFunc(before, func(b githubRun) bool { return b.ID == r.ID })
			if !known && r.Event == "workflow_dispatch" && !r.CreatedAt.Before(dispatched) && (run.ID == 0 || r.CreatedAt.Before(run.CreatedAt)) {
				run = r
			}
		}
	}
	state := func() string {
		if run.Status == "completed" {
			return "completed/" + run.Conclusion
		}
		return run.Status
	}
	report := func() {
		in.Update(func(s *pb.RunStep) {
			s.Detail = &pb.RunStep_Remote{Remote: &pb.RemotePipelineStatus{
				Project: gh.Repository, Workflow: gh.Workflow, Ref: gh.Ref, RemoteId: fmt.Sprint(run.ID),
				RemoteStatus: state(), WebUrl: run.HTMLURL,
			}}
		})
	}
	report()
	fmt.Fprintf(in.Log, "workflow run %d: %s %s\n", run.ID, state(), run.HTMLURL)
	last, failures := state(), 0
	for {
		if run.Status == "completed" {
			if run.Conclusion == "success" {
				return success()
			}
			return failed("workflow run %d concluded %s", run.ID, run.Conclusion)
		}
		if !wait(ctx, gh.PollInterval) {
			g.cancelGitHub(repo, hdr, run.ID)
			return engine.Outcome{Result: pb.AttemptResult_ATTEMPT_RESULT_CANCELLED, Message: fmt.Sprintf("workflow run %d still %s; cancel requested", run.ID, run.Status)}
		}
		var next githubRun
		if err := g.call(ctx, http.MethodGet, fmt.Sprintf("%s/actions/runs/%d", repo, run.ID), hdr, nil, &next); err != nil {
			if failures++; failures < 5 && remoteOutcome("", err).Result == pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR && ctx.Err() == nil {
				continue
			}
			return remoteOutcome(fmt.Sprintf("poll workflow run %d", run.ID), err)
		}
		failures = 0
		run = next
		if state() != last {
			report()
			fmt.Fprintf(in.Log, "workflow run %d: %s\n", run.ID, state())
			last = state()
		}
	}
}

func (g GitHub) listRuns(ctx context.Context, wf string, hdr http.Header, ref string) ([]githubRun, error) {
	var res struct {
		WorkflowRuns []githubRun `json:"workflow_runs"`
	}
	q := url.Values{"event": {"workflow_dispatch"}, "branch": {ref}, "per_page": {"20"}}
	if err := g.call(ctx, http.MethodGet, wf+"/runs?"+q.Encode(), hdr, nil, &res); err != nil {
		return nil, err
	}
	return res.WorkflowRuns, nil
}

func (g GitHub) cancelGitHub(repo string, hdr http.Header, id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = g.call(ctx, http.MethodPost, fmt.Sprintf("%s/actions/runs/%d/cancel", repo, id), hdr, nil, nil)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
