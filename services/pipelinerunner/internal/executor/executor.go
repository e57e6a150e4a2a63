// Package executor is the contract between the engine and what runs a
// command step: a local process group (shell) or a container (docker).
package executor

import (
	"context"
	"errors"
	"io"
)

// Spec is one attempt of a command step.
type Spec struct {
	// Command is argv, run without a shell; Script is shell text run with
	// `sh -e -c`. Exactly one is set.
	Command []string
	Script  string
	// Env is KEY=VALUE pairs on top of a minimal base environment.
	Env []string
	// Workspace is the run's workspace directory on the host; Dir is the
	// working directory relative to it.
	Workspace string
	Dir       string
	// Image of a docker step.
	Image string
	// Services are containers started next to a docker step.
	Services []Service
	// Labels identify the attempt's resources (containers) for cleanup.
	Labels map[string]string
	// Stdout and Stderr receive the output as it is produced.
	Stdout, Stderr io.Writer
	// Started is called with an identifier of what runs (process group id,
	// container id) once it started; may be nil.
	Started func(id string)
}

// Service is a service container of a docker step.
type Service struct {
	Name    string
	Image   string
	Env     []string
	Command []string
}

// Result is how an attempt's process ended.
type Result struct {
	ExitCode int
}

// ErrInfra wraps errors that mean the work could not be carried out
// (process or container did not start, daemon unreachable).
var ErrInfra = errors.New("infrastructure error")

// Executor runs command steps. Run returns when the work has ended and
// nothing of it is left running. A context that ends (cancel or timeout)
// stops the work; Run then returns ctx.Err() wrapped.
type Executor interface {
	Run(ctx context.Context, spec Spec) (Result, error)
}
