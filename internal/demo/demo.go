// Package demo runs the bundled example end to end against a running suite:
// the pipeline examples/pipelines/demo.yaml builds and tests the demo app
// (examples/demoapp), deploys it through the deployer with a canary
// analysed on the router's error ratio, and gates on its health; a second
// run rolls v2 out the same way. It then prints the deployment report.
// `make up` runs it (`opsuite up --demo`).
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Clients are the services the demo drives.
type Clients struct {
	Deployer       deployerv1.DeployerServiceClient
	PipelineRunner prv1.PipelineRunnerServiceClient
	Report         gatewayv1.ReportServiceClient
}

// Options say where the demo builds and what it deploys on.
type Options struct {
	// Source is the opsuite repository (holding examples/); the working
	// directory when empty.
	Source string
	// Out is where the demo app is built.
	Out string
	// Docker deploys a FROM scratch image instead of a local process.
	Docker bool
	// Dashboard is the URL shown at the end.
	Dashboard string
}

// ErrNoSource: the demo needs the repository to build the demo app.
var ErrNoSource = errors.New("the demo builds examples/demoapp from the opsuite repository; run it from a checkout (make up)")

// Run runs the demo, writing its progress and the report to out.
func Run(ctx context.Context, c Clients, opts Options, out io.Writer) error {
	src := opts.Source
	if src == "" {
		src, _ = os.Getwd()
	}
	src, _ = filepath.Abs(src)
	pipelineFile, err := os.ReadFile(filepath.Join(src, "examples", "pipelines", "demo.yaml"))
	if err != nil || !exists(filepath.Join(src, "examples", "demoapp", "main.go")) {
		return ErrNoSource
	}
	outDir, err := filepath.Abs(opts.Out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o750); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	driver := "process"
	if opts.Docker {
		driver = "docker"
	}
	fmt.Fprintf(out, "\n== demo: pipeline %q builds, tests and canary-deploys examples/demoapp (%s driver)\n", "demo", driver)

	if err := ensureApp(ctx, c.Deployer, filepath.Join(outDir, "demoapp"), opts.Docker); err != nil {
		return err
	}
	if _, err := c.PipelineRunner.CreatePipeline(ctx, &prv1.CreatePipelineRequest{Pipeline: &prv1.Pipeline{Name: "demo", Source: string(pipelineFile)}}); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("demo: create pipeline: %w", err)
	}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	for _, version := range []string{"v1", "v2"} {
		vars := map[string]string{"VERSION": version, "SOURCE": src, "OUT": outDir, "DRIVER": driver}
		resp, err := c.PipelineRunner.RunPipeline(ctx, &prv1.RunPipelineRequest{Name: "demo", Variables: vars, Manual: true})
		if err != nil {
			return fmt.Errorf("demo: run pipeline: %w", err)
		}
		run, err := follow(ctx, c.PipelineRunner, resp.GetRun(), out)
		if err != nil {
			return err
		}
		if run.GetState() != prv1.RunState_RUN_STATE_SUCCESS {
			return fmt.Errorf("demo: run #%d of %s ended %s: %s", run.GetNumber(), version, state(run.GetState().String()), run.GetMessage())
		}
		if version == "v1" {
			// Users arrive: steady traffic through the router, so the v2
			// canary's analysis has requests to judge.
			if endpoint := endpointOf(ctx, c.Deployer); endpoint != "" {
				fmt.Fprintf(out, "== sending 20 requests/s to %s during the v2 canary\n", endpoint)
				go traffic(trafficCtx, endpoint)
			}
		}
	}
	stopTraffic()
	if endpoint := endpointOf(ctx, c.Deployer); endpoint != "" {
		fmt.Fprintf(out, "== the demo app serves v2 at %s\n", endpoint)
	}
	rep, err := c.Report.GetReport(ctx, &gatewayv1.GetReportRequest{Format: gatewayv1.ReportFormat_REPORT_FORMAT_MARKDOWN, Window: durationpb.New(time.Hour)})
	if err != nil {
		return fmt.Errorf("demo: report: %w", err)
	}
	fmt.Fprintf(out, "\n%s\n", rep.GetRendered())
	if opts.Dashboard != "" {
		fmt.Fprintf(out, "== dashboard: %s (log in with the admin token); Ctrl-C stops the suite\n", opts.Dashboard)
	}
	return nil
}

// ensureApp creates the demo application unless it exists: three replicas
// behind the router, checked on /healthz, rolled out by a canary whose
// analysis reads the router's error ratio.
func ensureApp(ctx context.Context, d deployerv1.DeployerServiceClient, bin string, docker bool) error {
	spec := &deployerv1.ApplicationSpec{
		Env:      []*deployerv1.EnvVar{{Name: "VERSION", Value: "v0"}},
		Ports:    []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
		Replicas: 3,
		HealthCheck: &deployerv1.HealthCheck{
			Probe:    &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz", Port: 8080}},
			Interval: durationpb.New(500 * time.Millisecond), FailureThreshold: 2,
		},
		StopGracePeriod:  durationpb.New(3 * time.Second),
		ProgressDeadline: durationpb.New(2 * time.Minute),
		RollbackPolicy:   &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(5 * time.Second)},
		Strategy: &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
			{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 34}}},
			{Step: &deployerv1.CanaryStep_Analysis{Analysis: &deployerv1.AnalysisStep{Analysis: &deployerv1.Analysis{
				Interval: durationpb.New(2 * time.Second), Count: 2,
				Metrics: []*deployerv1.AnalysisMetric{{
					Name: "error-ratio",
					Source: &deployerv1.AnalysisMetric_Router{Router: &deployerv1.RouterMetric{
						Kind: deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO, MinRequests: 5,
					}},
					Comparison: deployerv1.Comparison_COMPARISON_LESS_OR_EQUAL, Threshold: 0.01,
				}},
			}}}},
			{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 67}}},
			{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{Duration: durationpb.New(2 * time.Second)}}},
		}}}},
	}
	if docker {
		spec.Workload = &deployerv1.ApplicationSpec_Image{Image: "opsuite-demo/demoapp:v0"}
		spec.Env = append(spec.Env, &deployerv1.EnvVar{Name: "PORT", Value: "8080"}, &deployerv1.EnvVar{Name: "BIND", Value: "0.0.0.0"})
	} else {
		spec.Workload = &deployerv1.ApplicationSpec_Process{Process: &deployerv1.ProcessCommand{Argv: []string{bin}}}
	}
	_, err := d.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{
		Name: "demo", Description: "The demo app of `make up`", Labels: map[string]string{"team": "demo"}, Spec: spec,
	}})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("demo: create application: %w", err)
	}
	return nil
}

// follow prints each step's progress until the run ends.
func follow(ctx context.Context, c prv1.PipelineRunnerServiceClient, run *prv1.Run, out io.Writer) (*prv1.Run, error) {
	fmt.Fprintf(out, "run #%d (%s):\n", run.GetNumber(), run.GetVariables()["VERSION"])
	seen := map[string]string{}
	deadline := time.Now().Add(15 * time.Minute)
	for {
		resp, err := c.GetRun(ctx, &prv1.GetRunRequest{Id: run.GetId()})
		if err != nil {
			return nil, fmt.Errorf("demo: read run: %w", err)
		}
		run = resp.GetRun()
		for _, s := range run.GetSteps() {
			line := state(s.GetState().String())
			if d := s.GetDeploy(); d != nil && d.GetRolloutState() != "" {
				line += fmt.Sprintf(" (rollout %s %s)", d.GetRollout(), d.GetRolloutState())
			}
			if m := s.GetMessage(); m != "" && s.GetState() != prv1.StepState_STEP_STATE_RUNNING {
				line += ": " + strings.TrimPrefix(m, line+": ")
			}
			if seen[s.GetId()] != line {
				seen[s.GetId()] = line
				fmt.Fprintf(out, "  %-14s %s\n", s.GetId(), line)
			}
		}
		switch run.GetState() {
		case prv1.RunState_RUN_STATE_QUEUED, prv1.RunState_RUN_STATE_RUNNING, prv1.RunState_RUN_STATE_UNSPECIFIED:
		default:
			fmt.Fprintf(out, "  run #%d %s\n", run.GetNumber(), state(run.GetState().String()))
			return run, nil
		}
		if time.Now().After(deadline) {
			return run, errors.New("demo: the run did not end within 15 minutes")
		}
		select {
		case <-ctx.Done():
			return run, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func state(s string) string {
	if i := strings.Index(s, "_STATE_"); i >= 0 {
		s = s[i+len("_STATE_"):]
	}
	return strings.ToLower(s)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// DockerAnswers reports whether the docker CLI reaches a daemon, which the
// demo's image step needs.
func DockerAnswers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").Run() == nil
}

func endpointOf(ctx context.Context, d deployerv1.DeployerServiceClient) string {
	app, err := d.GetApplication(ctx, &deployerv1.GetApplicationRequest{Name: "demo"})
	if err != nil || len(app.GetApplication().GetEnvironments()) == 0 {
		return ""
	}
	return app.GetApplication().GetEnvironments()[0].GetStatus().GetEndpoint()
}

// traffic sends 20 requests a second to url until ctx ends.
func traffic(ctx context.Context, url string) {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
}
