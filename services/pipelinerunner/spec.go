package pipelinerunner

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/engine"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/protobuf/types/known/durationpb"
)

func digestOf(src string) string {
	h := sha256.Sum256([]byte(src))
	return "sha256:" + hex.EncodeToString(h[:])
}

// specOf summarises a parsed file for the API.
func specOf(p *pipelinefile.Pipeline, name string) *pb.PipelineSpec {
	spec := &pb.PipelineSpec{
		Name: p.Name, Description: p.Description, Stages: slices.Clone(p.Stages),
		Secrets:         p.SecretNames(),
		Concurrency:     &pb.Concurrency{Limit: uint32(p.Concurrency.Limit), Policy: policyEnum(p.Concurrency.Policy)},
		DefaultExecutor: executorEnum(p.Executor),
	}
	if p.Timeout > 0 {
		spec.Timeout = durationpb.New(p.Timeout)
	}
	for _, v := range p.Variables {
		spec.Variables = append(spec.Variables, &pb.VariableDefinition{Name: v.Name, Description: v.Description, DefaultValue: v.Default, Required: v.Required})
	}
	for _, c := range p.Cron {
		spec.Schedules = append(spec.Schedules, &pb.CronSchedule{Name: c.Name, Spec: c.Spec, TimeZone: c.TimeZone, Ref: c.Ref, Variables: maps.Clone(c.Variables)})
	}
	for _, w := range p.Webhooks {
		prov := pb.WebhookProvider_WEBHOOK_PROVIDER_GITHUB
		if w.Provider == "gitlab" {
			prov = pb.WebhookProvider_WEBHOOK_PROVIDER_GITLAB
		}
		spec.Webhooks = append(spec.Webhooks, &pb.WebhookTrigger{
			Provider: prov, Secret: w.Secret, Repository: w.Repository, Events: slices.Clone(w.Events),
			Branches: slices.Clone(w.Branches), Path: "/v1/webhooks/" + w.Provider + "/" + name,
		})
	}
	for _, s := range p.Steps {
		sd := &pb.StepDefinition{
			Name: s.Name, Type: engine.StepType(s.Type), Stage: s.Stage, Needs: slices.Clone(s.Needs), When: s.When,
			Image: s.Image, Artifacts: slices.Clone(s.Artifacts), WorkingDir: s.WorkingDir,
		}
		if s.Type == pipelinefile.TypeCommand {
			sd.Executor = executorEnum(s.Executor)
		}
		if s.Timeout > 0 {
			sd.Timeout = durationpb.New(s.Timeout)
		}
		if s.Retry.MaxAttempts > 1 {
			rp := &pb.RetryPolicy{
				MaxAttempts: uint32(s.Retry.MaxAttempts), InitialBackoff: durationpb.New(s.Retry.InitialBackoff),
				MaxBackoff: durationpb.New(s.Retry.MaxBackoff), Multiplier: s.Retry.Multiplier,
			}
			for _, w := range s.Retry.When {
				rp.When = append(rp.When, map[string]pb.AttemptResult{
					pipelinefile.RetryOnCommandFailed: pb.AttemptResult_ATTEMPT_RESULT_COMMAND_FAILED,
					pipelinefile.RetryOnInfraError:    pb.AttemptResult_ATTEMPT_RESULT_INFRA_ERROR,
					pipelinefile.RetryOnTimedOut:      pb.AttemptResult_ATTEMPT_RESULT_TIMED_OUT,
				}[w])
			}
			for _, c := range s.Retry.ExitCodes {
				rp.ExitCodes = append(rp.ExitCodes, int32(c))
			}
			sd.Retry = rp
		}
		for _, a := range s.Matrix {
			sd.Matrix = append(sd.Matrix, &pb.MatrixAxis{Name: a.Name, Values: slices.Clone(a.Values)})
		}
		for _, r := range s.Secrets {
			sd.Secrets = append(sd.Secrets, r.Name)
		}
		spec.Steps = append(spec.Steps, sd)
	}
	return spec
}

func executorEnum(e string) pb.Executor {
	if e == pipelinefile.ExecutorDocker {
		return pb.Executor_EXECUTOR_DOCKER
	}
	return pb.Executor_EXECUTOR_SHELL
}

func policyEnum(p string) pb.ConcurrencyPolicy {
	switch p {
	case "skip":
		return pb.ConcurrencyPolicy_CONCURRENCY_POLICY_SKIP
	case "cancel_oldest":
		return pb.ConcurrencyPolicy_CONCURRENCY_POLICY_CANCEL_OLDEST
	}
	return pb.ConcurrencyPolicy_CONCURRENCY_POLICY_QUEUE
}
