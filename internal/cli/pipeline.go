package cli

import (
	"context"
	"errors"
	"fmt"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

func (e *env) pipelineCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "pipeline",
		Aliases: []string{"pipelines"},
		Short:   "Pipelines of the pipeline-runner: list, create, run, runs, logs",
	}
	c.AddCommand(e.pipelineListCmd(), e.pipelineCreateCmd(), e.pipelineRunCmd(), e.pipelineRunsCmd(), e.pipelineLogsCmd())
	return c
}

func (e *env) pipelineListCmd() *cobra.Command {
	var out, selector string
	c := &cobra.Command{
		Use:   "list",
		Short: "List pipelines with their latest run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			setIf(q, "label_selector", selector)
			resp := &prv1.ListPipelinesResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/pipelines", q, nil, resp); err != nil {
				return fmt.Errorf("list pipelines: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table { return PipelinesTable(resp.GetPipelines(), time.Now()) })
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVarP(&selector, "selector", "l", "", "only pipelines whose labels match, e.g. team=web")
	return c
}

// PipelinesTable is one row per pipeline.
func PipelinesTable(ps []*prv1.Pipeline, now time.Time) *table {
	t := newTable("NAME", "STEPS", "LAST RUN", "STATE", "RUNNING", "QUEUED", "PAUSED", "AGE")
	for _, p := range ps {
		st := p.GetStatus()
		last := ""
		if st.GetLastRunNumber() > 0 {
			last = fmt.Sprintf("#%d %s", st.GetLastRunNumber(), st.GetLastRunId())
		}
		t.add(p.GetName(), strconv.Itoa(len(p.GetSpec().GetSteps())), last, EnumName(st.GetLastRunState()),
			strconv.Itoa(int(st.GetRunningRuns())), strconv.Itoa(int(st.GetQueuedRuns())), strconv.FormatBool(p.GetPaused()), Age(p.GetCreateTime(), now))
	}
	return t
}

func (e *env) pipelineCreateCmd() *cobra.Command {
	var out, file, name string
	var update bool
	c := &cobra.Command{
		Use:   "create -f pipeline.yaml",
		Short: "Create a pipeline from its file (--update: create or replace)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			if file == "" {
				return usagef("-f is required: the pipeline file (- for standard input)")
			}
			src, err := readInput(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			p := &prv1.Pipeline{Name: name, Source: string(src)}
			var got *prv1.Pipeline
			var warnings []*prv1.ValidationError
			if update {
				if p.Name == "" {
					return usagef("--update needs --name (the pipeline to replace)")
				}
				resp := &prv1.UpdatePipelineResponse{}
				q := url.Values{"allow_missing": {"true"}}
				if err := cl.do(cmd.Context(), http.MethodPatch, "/v1/pipelines/"+url.PathEscape(p.Name), q, p, resp); err != nil {
					return fmt.Errorf("update pipeline %s: %w", p.Name, err)
				}
				got, warnings = resp.GetPipeline(), resp.GetWarnings()
			} else {
				resp := &prv1.CreatePipelineResponse{}
				if err := cl.do(cmd.Context(), http.MethodPost, "/v1/pipelines", nil, p, resp); err != nil {
					return fmt.Errorf("create pipeline from %s: %w", file, err)
				}
				got, warnings = resp.GetPipeline(), resp.GetWarnings()
			}
			for _, w := range warnings {
				fmt.Fprintf(e.stderr, "warning: %s\n", validationText(w))
			}
			if out != "table" {
				return printObject(e.stdout, out, got, nil)
			}
			_, err = fmt.Fprintf(e.stdout, "pipeline %s saved (%d steps)\n", got.GetName(), len(got.GetSpec().GetSteps()))
			return err
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "pipeline file, YAML (- for standard input)")
	c.Flags().StringVar(&name, "name", "", "pipeline name (default: the file's name:)")
	c.Flags().BoolVar(&update, "update", false, "replace the pipeline's source, creating it when missing")
	outputFlag(c.Flags(), &out)
	return c
}

func validationText(v *prv1.ValidationError) string {
	data, err := marshal.Marshal(v)
	if err != nil {
		return v.String()
	}
	return string(data)
}

func (e *env) pipelineRunCmd() *cobra.Command {
	var (
		out, ref, commit string
		file             string
		local            bool
		vars             []string
		wait             bool
		timeout          time.Duration
	)
	c := &cobra.Command{
		Use:   "run NAME | run -f FILE --local",
		Short: "Start a run of a pipeline; --wait follows it and exits 1 unless it succeeded; --local runs a file here with no server",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			variables := map[string]string{}
			for _, kv := range vars {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--var %q: use NAME=VALUE", kv)
				}
				variables[k] = v
			}
			if local {
				if file == "" || len(args) > 0 {
					return usagef("--local runs a pipeline file: give -f FILE and no pipeline name")
				}
				return runLocal(cmd.Context(), e, file, ref, commit, variables)
			}
			if file != "" {
				return usagef("-f FILE needs --local; a pipeline on the server runs by name")
			}
			if len(args) != 1 {
				return usagef("give the pipeline's name (or -f FILE --local)")
			}
			req := &prv1.RunPipelineRequest{Name: args[0], Ref: ref, Commit: commit, Manual: true, Variables: variables}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp := &prv1.RunPipelineResponse{}
			if err := cl.do(cmd.Context(), http.MethodPost, "/v1/pipelines/"+url.PathEscape(args[0])+":run", nil, req, resp); err != nil {
				return fmt.Errorf("run pipeline %s: %w", args[0], err)
			}
			run := resp.GetRun()
			progressOut := e.stdout
			if out != "table" {
				if err := printObject(e.stdout, out, run, nil); err != nil {
					return err
				}
				progressOut = e.stderr
			} else {
				fmt.Fprintf(e.stdout, "%s: run #%d %s %s\n", run.GetPipeline(), run.GetNumber(), run.GetId(), EnumName(run.GetState()))
			}
			if !wait {
				return nil
			}
			ctx, cancel := waitCtx(cmd.Context(), timeout)
			defer cancel()
			return followRun(ctx, cl, progressOut, run.GetId())
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVar(&ref, "ref", "", "git ref the run is for (branch, tag or full ref)")
	c.Flags().StringVar(&commit, "commit", "", "commit SHA")
	c.Flags().StringArrayVar(&vars, "var", nil, "run variable NAME=VALUE (repeatable)")
	c.Flags().BoolVar(&wait, "wait", false, "follow the run until it ends; exit 1 unless it succeeded")
	c.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (0: no limit)")
	c.Flags().BoolVar(&local, "local", false, "run the pipeline file given with -f here, with the same engine as the server and no server (secrets from $OPSUITE_SECRET_<NAME>)")
	c.Flags().StringVarP(&file, "file", "f", "", "pipeline file, with --local")
	return c
}

// runLocal runs a pipeline file in this process and prints its output as
// it comes; it fails unless the run succeeded.
func runLocal(ctx context.Context, e *env, file, ref, commit string, variables map[string]string) error {
	src, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	run, err := pipelinerunner.RunLocal(ctx, src, pipelinerunner.LocalOptions{
		Ref: ref, Commit: commit, Variables: variables, Out: e.stdout, Docker: "auto",
	})
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for _, s := range run.GetSteps() {
		fmt.Fprintf(e.stderr, "%-20s %s\n", s.GetId(), EnumName(s.GetState()))
	}
	return RunOutcome(run)
}

// RunOutcome is nil for a successful run, an error saying how it ended
// otherwise.
func RunOutcome(r *prv1.Run) error {
	if r.GetState() == prv1.RunState_RUN_STATE_SUCCESS {
		return nil
	}
	msg := fmt.Sprintf("run #%d %s of %s ended %s", r.GetNumber(), r.GetId(), r.GetPipeline(), EnumName(r.GetState()))
	if r.GetMessage() != "" {
		msg += ": " + r.GetMessage()
	}
	return errors.New(msg + fmt.Sprintf("\nhint: `opsuite pipeline logs %s` shows its output", r.GetId()))
}

// followRun shows a run until it is over and returns its outcome.
func followRun(ctx context.Context, cl *client, w io.Writer, id string) error {
	view := newLiveView(w)
	var last *prv1.Run
	failures := 0
	for {
		err := cl.stream(ctx, "/v1/runs/"+url.PathEscape(id)+":watch", nil, func() proto.Message { return &prv1.WatchRunResponse{} }, func(m proto.Message) error {
			resp := m.(*prv1.WatchRunResponse)
			r := resp.GetRun()
			if r == nil {
				return nil
			}
			last = r
			failures = 0
			view.show(RunFrame(r, time.Now()), RunLine(r, resp.GetChangedStep()))
			if RunTerminal(r.GetState()) {
				return errStreamDone
			}
			return nil
		})
		if errors.Is(err, errStreamDone) {
			return RunOutcome(last)
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Code != codes.Unavailable && ae.Code != codes.Internal && ae.Code != codes.Unknown {
			return fmt.Errorf("watch run %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("watch run %s: %w", id, ctx.Err())
		}
		// The stream ended without a final state: check, then reopen.
		got := &prv1.GetRunResponse{}
		if gerr := cl.do(ctx, http.MethodGet, "/v1/runs/"+url.PathEscape(id), nil, nil, got); gerr == nil && RunTerminal(got.GetRun().GetState()) {
			view.show(RunFrame(got.GetRun(), time.Now()), RunLine(got.GetRun(), ""))
			return RunOutcome(got.GetRun())
		}
		failures++
		if failures > 30 {
			return fmt.Errorf("watch run %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (e *env) pipelineRunsCmd() *cobra.Command {
	var out string
	var limit int32
	c := &cobra.Command{
		Use:   "runs [PIPELINE]",
		Short: "List runs, newest first (of one pipeline or all)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if len(args) == 1 {
				q.Set("pipeline", args[0])
			}
			if limit > 0 {
				q.Set("page_size", strconv.Itoa(int(limit)))
			}
			resp := &prv1.ListRunsResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/runs", q, nil, resp); err != nil {
				return fmt.Errorf("list runs: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table { return RunsTable(resp.GetRuns(), time.Now()) })
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().Int32Var(&limit, "limit", 0, "at most this many (server default 50)")
	return c
}

// RunsTable is one row per run.
func RunsTable(rs []*prv1.Run, now time.Time) *table {
	t := newTable("ID", "PIPELINE", "NUMBER", "STATE", "STEPS", "TRIGGER", "DURATION", "AGE", "MESSAGE")
	for _, r := range rs {
		dur := ""
		if st := r.GetStartTime(); st.IsValid() && st.GetSeconds() != 0 {
			end := now
			if et := r.GetEndTime(); et.IsValid() && et.GetSeconds() != 0 {
				end = et.AsTime()
			}
			dur = ShortDuration(end.Sub(st.AsTime()))
		}
		t.add(r.GetId(), r.GetPipeline(), strconv.FormatInt(r.GetNumber(), 10), EnumName(r.GetState()),
			fmt.Sprintf("%d/%d", runStepsDone(r), len(r.GetSteps())), EnumName(r.GetTrigger().GetKind()), dur,
			Age(r.GetCreateTime(), now), ellipsis(r.GetMessage(), 60))
	}
	return t
}

func (e *env) pipelineLogsCmd() *cobra.Command {
	var (
		out   string
		steps []string
		tail  int32
		fol   bool
	)
	c := &cobra.Command{
		Use:   "logs RUN_ID",
		Short: "Print a run's output (-f: keep following until the run ends)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out != "text" && out != "json" {
				return usagef("-o %q: use text or json", out)
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			for _, s := range steps {
				q.Add("steps", s)
			}
			if fol {
				q.Set("follow", "true")
			}
			if tail > 0 {
				q.Set("tail_lines", strconv.Itoa(int(tail)))
			}
			err = cl.stream(cmd.Context(), "/v1/runs/"+url.PathEscape(args[0])+"/logs", q, func() proto.Message { return &prv1.StreamRunLogsResponse{} }, func(m proto.Message) error {
				for _, l := range m.(*prv1.StreamRunLogsResponse).GetLines() {
					if out == "json" {
						data, err := marshal.Marshal(l)
						if err != nil {
							return err
						}
						if _, err := fmt.Fprintf(e.stdout, "%s\n", data); err != nil {
							return err
						}
						continue
					}
					if _, err := fmt.Fprintln(e.stdout, RunLogLine(l)); err != nil {
						return err
					}
				}
				return nil
			})
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("logs of run %s: %w", args[0], err)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "text", "text, or json (one LogLine a line)")
	c.Flags().StringArrayVar(&steps, "step", nil, "only lines of this step (repeatable)")
	c.Flags().Int32Var(&tail, "tail", 0, "start with only the last this many lines")
	c.Flags().BoolVarP(&fol, "follow", "f", false, "keep streaming new lines until the run ends")
	return c
}

// RunLogLine prints a run's log line as "[step] text"; the runner's own
// lines are marked with "*", stderr with "!".
func RunLogLine(l *prv1.LogLine) string {
	step := l.GetStep()
	if step == "" {
		step = "run"
	}
	mark := " "
	switch l.GetStream() {
	case prv1.LogStream_LOG_STREAM_STDERR:
		mark = "!"
	case prv1.LogStream_LOG_STREAM_SYSTEM:
		mark = "*"
	}
	return fmt.Sprintf("[%s]%s %s", step, mark, l.GetText())
}
