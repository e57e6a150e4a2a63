package pipelinerunner

import (
	"context"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor/docker"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/steps"
)

func openDocker(ctx context.Context, host string) (*docker.Executor, error) {
	return docker.New(ctx, host)
}

// stepHandlers wires the non-command step types to other services.
func (s *Service) stepHandlers() map[string]engine.StepHandler {
	remote := &steps.Remote{HTTP: s.deps.HTTPClient}
	return map[string]engine.StepHandler{
		pipelinefile.TypeDeploy: &steps.Deploy{Client: s.deps.Deployer},
		pipelinefile.TypeGate:   &steps.Gate{Health: s.deps.HealthChecker, Monitor: s.deps.Monitor},
		pipelinefile.TypeGitLab: steps.GitLab{Remote: remote},
		pipelinefile.TypeGitHub: steps.GitHub{Remote: remote},
	}
}
