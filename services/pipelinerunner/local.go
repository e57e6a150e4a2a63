package pipelinerunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/docker"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/shell"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/steps"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// LocalOptions configure RunLocal.
type LocalOptions struct {
	// Workspace is the directory steps run in; default the current directory.
	Workspace string
	// ArtifactDir receives kept artifacts; default <Workspace>/.opsuite-artifacts.
	ArtifactDir string
	// Ref and Commit the run is for, as the `when` conditions see them.
	Ref, Commit string
	Variables   map[string]string
	// Secrets by name; nil reads OPSUITE_SECRET_<NAME> (upper case, '-' as
	// '_') from the environment.
	Secrets map[string]string
	// Out receives "step | line" output, already masked.
	Out io.Writer
	// Docker enables the docker executor ("", "auto", "on", "off").
	Docker     string
	DockerHost string
	// MaxParallelSteps bounds steps at once; default 4.
	MaxParallelSteps int
	// Deployer and HealthChecker, when set, run deploy and gate steps.
	Deployer      deployerv1.DeployerServiceClient
	HealthChecker hcv1.HealthCheckerServiceClient
}

// RunLocal runs a pipeline file with the same engine the server uses, with
// no server: what `opsuite pipeline run -f FILE --local` calls. It returns
// the finished run; an invalid file is an error naming lines and keys.
func RunLocal(ctx context.Context, src []byte, opts LocalOptions) (*pb.Run, error) {
	p, err := pipelinefile.Parse(src)
	if err != nil {
		return nil, err
	}
	if opts.Workspace == "" {
		if opts.Workspace, err = os.Getwd(); err != nil {
			return nil, fmt.Errorf("workspace: %w", err)
		}
	}
	if opts.ArtifactDir == "" {
		opts.ArtifactDir = filepath.Join(opts.Workspace, ".opsuite-artifacts")
	}
	if opts.MaxParallelSteps <= 0 {
		opts.MaxParallelSteps = 4
	}
	variables, err := effectiveVariables(p, opts.Variables)
	if err != nil {
		return nil, err
	}
	execs := map[string]executor.Executor{"shell": &shell.Executor{}}
	if opts.Docker != "off" {
		d, err := docker.New(ctx, opts.DockerHost)
		switch {
		case err == nil:
			defer d.Close()
			execs["docker"] = d
		case opts.Docker == "on":
			return nil, fmt.Errorf("docker executor: %w", err)
		}
	}
	remote := &steps.Remote{HTTP: &http.Client{Timeout: 30 * time.Second}}
	secrets := opts.Secrets
	e := engine.New(engine.Engine{
		Executors: execs,
		Handlers: map[string]engine.StepHandler{
			pipelinefile.TypeDeploy: &steps.Deploy{Client: opts.Deployer},
			pipelinefile.TypeGate:   &steps.Gate{Health: opts.HealthChecker},
			pipelinefile.TypeGitLab: steps.GitLab{Remote: remote},
			pipelinefile.TypeGitHub: steps.GitHub{Remote: remote},
		},
		Secrets: func(_ context.Context, _ string, names []string) (map[string]string, error) {
			out := map[string]string{}
			for _, n := range names {
				if secrets != nil {
					if v, ok := secrets[n]; ok {
						out[n] = v
					}
					continue
				}
				if v, ok := os.LookupEnv("OPSUITE_SECRET_" + strings.ToUpper(strings.ReplaceAll(n, "-", "_"))); ok {
					out[n] = v
				}
			}
			return out, nil
		},
		Workspace:    func(string) string { return opts.Workspace },
		ArtifactRoot: opts.ArtifactDir,
		Runner:       "local",
	}, opts.MaxParallelSteps)
	name := p.Name
	if name == "" {
		name = "local"
	}
	trig := triggerFromRef(pb.TriggerKind_TRIGGER_KIND_CLI_LOCAL, "cli", opts.Ref, opts.Commit)
	trig.Variables = opts.Variables
	run := &pb.Run{
		Id: name + "-local", Pipeline: name, Number: 1, Trigger: trig, State: pb.RunState_RUN_STATE_QUEUED,
		Variables: variables, Steps: engine.Steps(p), SourceDigest: digestOf(string(src)), CreateTime: timestamppb.Now(),
	}
	rec := &engine.Memory{Out: opts.Out}
	x := e.Start(ctx, run, p, rec)
	<-x.Done()
	if err := x.Err(); err != nil {
		if errors.Is(err, engine.ErrAbandoned) {
			return rec.Run(), fmt.Errorf("run interrupted: %w", ctx.Err())
		}
		return rec.Run(), err
	}
	return rec.Run(), nil
}
