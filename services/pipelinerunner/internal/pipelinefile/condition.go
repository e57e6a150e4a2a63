package pipelinefile

import (
	"fmt"

	"cel.dev/cel-go/cel"
)

// Facts are what a `when` condition can read.
type Facts struct {
	Branch, Tag, Ref, Event, Commit, Repository, Pipeline string
	Variables                                             map[string]string
	// Status of earlier steps by step name: success, failed, cancelled,
	// skipped (a matrix step: failed when any combination failed).
	Status map[string]string
	Matrix map[string]string
}

func conditionEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("branch", cel.StringType),
		cel.Variable("tag", cel.StringType),
		cel.Variable("ref", cel.StringType),
		cel.Variable("event", cel.StringType),
		cel.Variable("commit", cel.StringType),
		cel.Variable("repository", cel.StringType),
		cel.Variable("pipeline", cel.StringType),
		cel.Variable("vars", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("status", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("matrix", cel.MapType(cel.StringType, cel.StringType)),
	)
}

// Condition is a compiled `when` expression.
type Condition struct {
	prg cel.Program
}

// CompileCondition compiles a `when` expression that must yield a bool.
func CompileCondition(expr string) (*Condition, bool, error) {
	env, err := conditionEnv()
	if err != nil {
		return nil, false, fmt.Errorf("condition environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, false, fmt.Errorf("bad expression %q: %w", expr, iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, false, fmt.Errorf("expression %q yields %s, not bool", expr, ast.OutputType())
	}
	readsStatus := false
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if ref.Name == "status" {
			readsStatus = true
		}
	}
	prg, err := env.Program(ast, cel.CostLimit(1_000_000), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, false, fmt.Errorf("bad expression %q: %w", expr, err)
	}
	return &Condition{prg: prg}, readsStatus, nil
}

func checkCondition(expr string, _ []Axis) (bool, error) {
	_, reads, err := CompileCondition(expr)
	return reads, err
}

// Eval evaluates the condition against facts.
func (c *Condition) Eval(f Facts) (bool, error) {
	nz := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	out, _, err := c.prg.Eval(map[string]any{
		"branch": f.Branch, "tag": f.Tag, "ref": f.Ref, "event": f.Event, "commit": f.Commit,
		"repository": f.Repository, "pipeline": f.Pipeline,
		"vars": nz(f.Variables), "status": nz(f.Status), "matrix": nz(f.Matrix),
	})
	if err != nil {
		return false, fmt.Errorf("evaluate condition: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition yielded %v, not a boolean", out.Value())
	}
	return b, nil
}
