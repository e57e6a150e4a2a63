// Package pipelinefile reads pipeline files: YAML decoded through its node
// tree so that every problem names its line and key, unknown keys rejected,
// `needs` checked for unknown steps and cycles, `when` conditions compiled
// with CEL and cron specs parsed. It also expands matrix steps into the
// concrete steps of a run.
package pipelinefile

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Step types.
const (
	TypeCommand = "command"
	TypeDeploy  = "deploy"
	TypeGate    = "gate"
	TypeGitLab  = "gitlab"
	TypeGitHub  = "github"
)

// Executors of command steps.
const (
	ExecutorShell  = "shell"
	ExecutorDocker = "docker"
)

// Attempt results a retry policy may name in `retry.when`.
const (
	RetryOnCommandFailed = "command_failed"
	RetryOnInfraError    = "infra_error"
	RetryOnTimedOut      = "timed_out"
)

// Pipeline is a parsed and checked pipeline file.
type Pipeline struct {
	Name        string
	Description string
	Timeout     time.Duration
	Executor    string
	Image       string
	Env         map[string]string
	Variables   []Variable
	Stages      []string
	Concurrency Concurrency
	Cron        []Cron
	Webhooks    []Webhook
	Steps       []*Step
}

// Variable is a declared run variable.
type Variable struct {
	Name        string
	Description string
	Default     string
	Required    bool
}

// Concurrency limits active runs of the pipeline.
type Concurrency struct {
	Limit  int
	Policy string // queue, skip, cancel_oldest
}

// Cron is a schedule from triggers.cron.
type Cron struct {
	Name      string
	Spec      string
	TimeZone  string
	Ref       string
	Variables map[string]string
}

// Webhook is a trigger from triggers.webhook.
type Webhook struct {
	Provider   string // github, gitlab
	Secret     string
	Repository string
	Events     []string
	Branches   []string
}

// Step is one step as written in the file.
type Step struct {
	Name       string
	Type       string
	Stage      string
	Needs      []string // resolved: explicit needs, previous stage or previous step
	When       string
	Executor   string
	Image      string
	Command    []string
	Script     string
	Env        map[string]string
	Secrets    []SecretRef
	Timeout    time.Duration
	Retry      Retry
	Matrix     []Axis
	WorkingDir string
	Artifacts  []string
	Services   []Service
	Deploy     *Deploy
	Gate       *Gate
	GitLab     *GitLab
	GitHub     *GitHub
	Line       int
	// WhenReadsStatus: the condition looks at other steps' status, so it
	// decides even when a needed step did not succeed.
	WhenReadsStatus bool
}

// SecretRef gives a step a secret as an environment variable.
type SecretRef struct {
	Name string
	Env  string
}

// Retry is a step's retry policy; MaxAttempts 1 means no retry.
type Retry struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	When           []string
	ExitCodes      []int
}

// Backoff is the wait before attempt n+1 after attempt n (n from 1).
func (r Retry) Backoff(n int) time.Duration {
	b := float64(r.InitialBackoff)
	for i := 1; i < n; i++ {
		b *= r.Multiplier
		if r.MaxBackoff > 0 && b >= float64(r.MaxBackoff) {
			return r.MaxBackoff
		}
	}
	if r.MaxBackoff > 0 && b > float64(r.MaxBackoff) {
		return r.MaxBackoff
	}
	return time.Duration(b)
}

// Axis is one matrix dimension.
type Axis struct {
	Name   string
	Values []string
}

// Service is a service container next to a docker-executor step.
type Service struct {
	Name    string
	Image   string
	Env     map[string]string
	Command []string
}

// Deploy is a deploy step: deploy an application with the deployer.
type Deploy struct {
	Application string
	Environment string
	Image       string
	// Env overrides environment variables of the application's spec.
	Env  map[string]string
	Wait time.Duration
}

// Gate is a gate step: wait until a target is healthy or no alert fires.
type Gate struct {
	Health   string // health-checker group
	Alerts   string // application for no-firing-alerts
	Interval time.Duration
}

// GitLab triggers a GitLab pipeline and polls it.
type GitLab struct {
	URL          string
	Project      string
	Ref          string
	Token        string // secret name
	Variables    map[string]string
	PollInterval time.Duration
}

// GitHub dispatches a GitHub Actions workflow and follows its run.
type GitHub struct {
	URL          string
	Repository   string
	Workflow     string
	Ref          string
	Token        string // secret name
	Inputs       map[string]string
	PollInterval time.Duration
}

// SecretNames lists every secret the file references, sorted.
func (p *Pipeline) SecretNames() []string {
	set := map[string]bool{}
	for _, w := range p.Webhooks {
		set[w.Secret] = true
	}
	for _, s := range p.Steps {
		for _, r := range s.Secrets {
			set[r.Name] = true
		}
		if s.GitLab != nil {
			set[s.GitLab.Token] = true
		}
		if s.GitHub != nil {
			set[s.GitHub.Token] = true
		}
	}
	delete(set, "")
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Problem is one thing wrong with a file.
type Problem struct {
	Line, Column int
	Key          string
	Message      string
}

func (p Problem) String() string {
	key := p.Key
	if key == "" {
		key = "(file)"
	}
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, key, p.Message)
	}
	return key + ": " + p.Message
}

// Error is every problem of a file, in source order.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid pipeline file: " + strings.Join(parts, "; ")
}
