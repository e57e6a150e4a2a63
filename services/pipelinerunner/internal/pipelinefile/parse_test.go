package pipelinefile_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
)

func TestParseExamples(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	ex, _ := filepath.Glob("../../../../examples/pipelines/*.yaml")
	files = append(files, ex...)
	if len(ex) == 0 {
		t.Fatal("no bundled examples found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pipelinefile.Parse(src); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseDAG(t *testing.T) {
	src, _ := os.ReadFile("testdata/valid/dag.yaml")
	p, err := pipelinefile.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*pipelinefile.Step{}
	for _, s := range p.Steps {
		byName[s.Name] = s
	}
	if got := byName["lint"].Needs; !slices.Equal(got, []string{"compile"}) {
		t.Errorf("lint needs %v, want previous stage [compile]", got)
	}
	if !byName["report"].WhenReadsStatus {
		t.Error("report's condition reads status")
	}
	r := byName["unit"].Retry
	if r.MaxAttempts != 3 || r.InitialBackoff != 100*time.Millisecond || !slices.Equal(r.ExitCodes, []int{2}) || !slices.Equal(r.When, []string{"command_failed", "infra_error"}) {
		t.Errorf("retry %+v", r)
	}
	if got := []time.Duration{r.Backoff(1), r.Backoff(2), r.Backoff(3), r.Backoff(10)}; !slices.Equal(got, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, time.Second}) {
		t.Errorf("backoff %v", got)
	}
	if byName["remote"].Type != pipelinefile.TypeGitLab || byName["dispatch"].Type != pipelinefile.TypeGitHub {
		t.Error("step types not inferred")
	}
	if got := p.SecretNames(); !slices.Equal(got, []string{"gh-token", "gl-token", "other", "slack-token"}) {
		t.Errorf("secrets %v", got)
	}
	inst := pipelinefile.Expand(p)
	var ids []string
	for _, in := range inst {
		ids = append(ids, in.ID)
	}
	want := []string{"compile", "lint", "unit[go=1.22,os=linux]", "unit[go=1.23,os=linux]", "report", "remote", "dispatch"}
	if !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	if got := inst[4].Needs; !slices.Equal(got, []string{"lint", "unit[go=1.22,os=linux]", "unit[go=1.23,os=linux]"}) {
		t.Errorf("report needs %v", got)
	}
}

func TestSequentialByDefault(t *testing.T) {
	p, err := pipelinefile.Parse([]byte("steps:\n- {name: a, script: 'true'}\n- {name: b, script: 'true'}\n- {name: c, needs: [], script: 'true'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Steps[1].Needs, []string{"a"}) || len(p.Steps[2].Needs) != 0 || len(p.Steps[0].Needs) != 0 {
		t.Fatalf("needs %v %v %v", p.Steps[0].Needs, p.Steps[1].Needs, p.Steps[2].Needs)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
		key, msg  string
	}{
		{"malformed yaml", "steps:\n  - name: a\n    script: [\n", 3, "", "malformed YAML"},
		{"mapping in value", "a: b\nc: d: e\n", 2, "", "malformed YAML: mapping values"},
		{"tab", "steps:\n\t- name: a\n", 2, "", "malformed YAML"},
		{"unknown top key", "nmae: x\nsteps:\n  - {name: a, script: x}\n", 1, "nmae", `unknown key "nmae"`},
		{"unknown step key", "steps:\n  - name: a\n    scirpt: x\n", 3, "steps.a.scirpt", "unknown key"},
		{"cycle", "steps:\n  - {name: a, needs: [c], script: x}\n  - {name: b, needs: [a], script: x}\n  - {name: c, needs: [b], script: x}\n", 2, "steps.a.needs", "cycle in needs: a → c → b → a"},
		{"self need", "steps:\n  - {name: a, needs: [a], script: x}\n", 2, "steps.a.needs[0]", "cannot need itself"},
		{"unknown need", "steps:\n  - {name: a, script: x}\n  - name: b\n    needs: [biuld]\n    script: x\n", 3, "steps.b.needs[0]", `needs "biuld": no such step`},
		{"bad cron", "triggers:\n  cron:\n    - spec: '61 * * * *'\nsteps:\n  - {name: a, script: x}\n", 3, "triggers.cron[0].spec", "bad cron spec"},
		{"bad time zone", "triggers:\n  cron:\n    - {spec: '@hourly', time_zone: Mars/Base}\nsteps:\n  - {name: a, script: x}\n", 3, "triggers.cron[0].spec", "time zone"},
		{"bad expression", "steps:\n  - name: a\n    when: 'branch == '\n    script: x\n", 2, "steps.a.when", "bad expression"},
		{"non-bool expression", "steps:\n  - name: a\n    when: 'branch'\n    script: x\n", 2, "steps.a.when", "not bool"},
		{"unknown variable", "steps:\n  - name: a\n    when: 'brnch == \"x\"'\n    script: x\n", 2, "steps.a.when", "undeclared reference"},
		{"command as string", "steps:\n  - name: a\n    command: echo hi\n", 3, "steps.a.command", "must be a list"},
		{"no command", "steps:\n  - name: a\n", 2, "steps.a.command", "needs command"},
		{"bad duration", "steps:\n  - name: a\n    timeout: 5 minutes\n    script: x\n", 3, "steps.a.timeout", "positive duration"},
		{"retry when", "steps:\n  - name: a\n    retry: {when: [flaky]}\n    script: x\n", 3, "steps.a.retry.when[0]", "command_failed"},
		{"docker without image", "steps:\n  - {name: a, executor: docker, script: x}\n", 2, "steps.a.image", "needs an image"},
		{"duplicate step", "steps:\n  - {name: a, script: x}\n  - {name: a, script: x}\n", 3, "steps.a.name", "defined twice"},
		{"repeated key", "steps:\n  - {name: a, script: x, script: y}\n", 2, "steps.a.script", "repeated"},
		{"no steps", "name: x\n", 1, "steps", "is required"},
		{"escape workspace", "steps:\n  - {name: a, script: x, working_dir: ../up}\n", 2, "steps.a.working_dir", "inside the workspace"},
		{"unknown stage", "stages: [b]\nsteps:\n  - {name: a, stage: c, script: x}\n", 3, "steps.a.stage", "not in the file's stages"},
		{"gate needs one", "steps:\n  - name: g\n    gate: {}\n", 3, "steps.g.gate", "exactly one"},
		{"webhook provider", "triggers:\n  webhook:\n    - {provider: bitbucket, secret: s}\nsteps:\n  - {name: a, script: x}\n", 3, "triggers.webhook[0].provider", "github or gitlab"},
		{"empty", "", 0, "", "empty"},
		{"not a mapping", "- a\n- b\n", 1, "", "must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pipelinefile.Parse([]byte(tt.src))
			var pe *pipelinefile.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err %v, want *Error", err)
			}
			for _, p := range pe.Problems {
				if p.Line == tt.line && p.Key == tt.key && strings.Contains(p.Message, tt.msg) {
					return
				}
			}
			t.Fatalf("no problem at line %d key %q with %q in %v", tt.line, tt.key, tt.msg, pe.Problems)
		})
	}
}

func TestConditionEval(t *testing.T) {
	c, reads, err := pipelinefile.CompileCondition(`branch == "main" && status.deploy == "success" && vars.X == "1" && matrix.go != ""`)
	if err != nil || !reads {
		t.Fatal(err, reads)
	}
	ok, err := c.Eval(pipelinefile.Facts{Branch: "main", Status: map[string]string{"deploy": "success"}, Variables: map[string]string{"X": "1"}, Matrix: map[string]string{"go": "1"}})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	ok, err = c.Eval(pipelinefile.Facts{Branch: "dev"})
	if err != nil || ok {
		t.Fatal(ok, err)
	}
	// a missing key is an evaluation error, reported (the engine skips the step with it)
	if _, err := c.Eval(pipelinefile.Facts{Branch: "main"}); err == nil {
		t.Fatal("missing status key should fail")
	}
}
