package healthchecker

import (
	"encoding/json"
	"fmt"

	"cel.dev/cel-go/cel"
)

// conditionEnv declares the variables an HTTP condition may use.
func conditionEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("status", cel.IntType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("body", cel.StringType),
		cel.Variable("json", cel.DynType),
	)
}

// compileCondition parses and type-checks a CEL expression that must yield a bool.
func compileCondition(expr string) (cel.Program, error) {
	env, err := conditionEnv()
	if err != nil {
		return nil, fmt.Errorf("condition environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("invalid CEL expression: %w", iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("condition must be a boolean expression, it yields %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(10_000_000), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, fmt.Errorf("invalid CEL expression: %w", err)
	}
	return prg, nil
}

// evalCondition evaluates a compiled condition against a response.
func evalCondition(prg cel.Program, status int, headers map[string]string, body []byte) (bool, error) {
	var doc any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &doc); err != nil {
			doc = nil
		}
	}
	out, _, err := prg.Eval(map[string]any{
		"status":  int64(status),
		"headers": headers,
		"body":    string(body),
		"json":    doc,
	})
	if err != nil {
		return false, fmt.Errorf("condition: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition yielded %v, not a boolean", out.Value())
	}
	return b, nil
}
