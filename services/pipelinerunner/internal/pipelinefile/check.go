package pipelinefile

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

func pathMatch(pattern, name string) (bool, error) { return path.Match(pattern, name) }

// BranchMatches reports whether branch matches one of the globs (all when empty).
func BranchMatches(globs []string, branch string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, branch); ok {
			return true
		}
	}
	return false
}

// check validates what spans several keys: names, step kinds, needs and
// their cycles, stages, conditions.
func (d *decoder) check(p *Pipeline) {
	if p.Name != "" && !pipelineName.MatchString(p.Name) {
		d.addf(nil, "name", "%q is not a valid pipeline name (lower case letters, digits, '-', at most 63)", p.Name)
	}
	if p.Executor != ExecutorShell && p.Executor != ExecutorDocker {
		d.addf(nil, "executor", "must be shell or docker, not %q", p.Executor)
	}
	for k := range p.Env {
		if !envName.MatchString(k) {
			d.addf(nil, "env."+k, "%q is not a valid environment variable name", k)
		}
	}
	byName := map[string]*Step{}
	for i, s := range p.Steps {
		key := fmt.Sprintf("steps[%d]", i)
		if stepName.MatchString(s.Name) {
			key = "steps." + s.Name
		}
		switch {
		case s.Name == "":
			d.addLine(s.Line, key+".name", "is required")
		case !stepName.MatchString(s.Name):
			d.addLine(s.Line, key+".name", "%q is not a valid step name (lower case letters, digits, '-', '_')", s.Name)
		case byName[s.Name] != nil:
			d.addLine(s.Line, key+".name", "step %q defined twice (first on line %d)", s.Name, byName[s.Name].Line)
		default:
			byName[s.Name] = s
		}
		d.checkStep(p, s, key)
	}
	// Resolve implicit needs: previous stage's steps, or the previous step.
	for i, s := range p.Steps {
		if s.Needs != nil {
			continue
		}
		switch {
		case len(p.Stages) > 0:
			idx := slices.Index(p.Stages, s.Stage)
			s.Needs = []string{}
			if idx > 0 {
				for _, o := range p.Steps {
					if o.Stage == p.Stages[idx-1] {
						s.Needs = append(s.Needs, o.Name)
					}
				}
			}
		case i > 0:
			s.Needs = []string{p.Steps[i-1].Name}
		default:
			s.Needs = []string{}
		}
	}
	for _, s := range p.Steps {
		key := "steps." + s.Name
		for j, n := range s.Needs {
			switch {
			case n == s.Name:
				d.addLine(s.Line, fmt.Sprintf("%s.needs[%d]", key, j), "a step cannot need itself")
			case byName[n] == nil:
				d.addLine(s.Line, fmt.Sprintf("%s.needs[%d]", key, j), "needs %q: no such step", n)
			}
		}
	}
	if len(d.problems) == 0 {
		if cycle := findCycle(p.Steps); cycle != nil {
			d.addLine(byName[cycle[0]].Line, "steps."+cycle[0]+".needs", "cycle in needs: %s", strings.Join(cycle, " → "))
		}
	}
}

func (d *decoder) addLine(line int, key, format string, args ...any) {
	d.problems = append(d.problems, Problem{Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) checkStep(p *Pipeline, s *Step, key string) {
	kinds := 0
	for _, set := range []bool{s.Deploy != nil, s.Gate != nil, s.GitLab != nil, s.GitHub != nil} {
		if set {
			kinds++
		}
	}
	hasCmd := len(s.Command) > 0 || s.Script != ""
	if s.Type == "" {
		switch {
		case s.Deploy != nil:
			s.Type = TypeDeploy
		case s.Gate != nil:
			s.Type = TypeGate
		case s.GitLab != nil:
			s.Type = TypeGitLab
		case s.GitHub != nil:
			s.Type = TypeGitHub
		default:
			s.Type = TypeCommand
		}
	}
	switch s.Type {
	case TypeCommand:
		if kinds > 0 {
			d.addLine(s.Line, key, "a command step cannot have deploy, gate, gitlab or github")
		}
		if len(s.Command) > 0 && s.Script != "" {
			d.addLine(s.Line, key+".script", "a step has either command (argv) or script, not both")
		} else if !hasCmd {
			d.addLine(s.Line, key+".command", "a command step needs command (argv) or script")
		}
	case TypeDeploy, TypeGate, TypeGitLab, TypeGitHub:
		want := map[string]bool{TypeDeploy: s.Deploy != nil, TypeGate: s.Gate != nil, TypeGitLab: s.GitLab != nil, TypeGitHub: s.GitHub != nil}[s.Type]
		if !want || kinds != 1 {
			d.addLine(s.Line, key+"."+s.Type, "a %s step needs exactly its %q section", s.Type, s.Type)
		}
		if hasCmd {
			d.addLine(s.Line, key+".command", "only command steps run command or script")
		}
	default:
		d.addLine(s.Line, key+".type", "must be command, deploy, gate, gitlab or github, not %q", s.Type)
	}
	if s.Type == TypeCommand {
		if s.Executor == "" {
			s.Executor = p.Executor
		}
		if s.Image == "" {
			s.Image = p.Image
		}
		switch s.Executor {
		case ExecutorShell:
			if len(s.Services) > 0 {
				d.addLine(s.Line, key+".services", "service containers need the docker executor")
			}
		case ExecutorDocker:
			if s.Image == "" {
				d.addLine(s.Line, key+".image", "the docker executor needs an image")
			}
		default:
			d.addLine(s.Line, key+".executor", "must be shell or docker, not %q", s.Executor)
		}
	}
	if s.Stage != "" && !slices.Contains(p.Stages, s.Stage) {
		d.addLine(s.Line, key+".stage", "stage %q is not in the file's stages %v", s.Stage, p.Stages)
	} else if s.Stage == "" && len(p.Stages) > 0 && s.Needs == nil {
		d.addLine(s.Line, key+".stage", "is required when the file declares stages (or give needs)")
	}
	if s.WorkingDir != "" && (path.IsAbs(s.WorkingDir) || strings.HasPrefix(path.Clean(s.WorkingDir), "..")) {
		d.addLine(s.Line, key+".working_dir", "must be a path inside the workspace, not %q", s.WorkingDir)
	}
	for i, a := range s.Artifacts {
		if a == "" || path.IsAbs(a) || strings.HasPrefix(path.Clean(a), "..") {
			d.addLine(s.Line, fmt.Sprintf("%s.artifacts[%d]", key, i), "must be a path inside the workspace, not %q", a)
		} else if _, err := path.Match(a, "x"); err != nil {
			d.addLine(s.Line, fmt.Sprintf("%s.artifacts[%d]", key, i), "bad glob %q", a)
		}
	}
	for k := range s.Env {
		if !envName.MatchString(k) {
			d.addLine(s.Line, key+".env."+k, "%q is not a valid environment variable name", k)
		}
	}
	if s.When != "" {
		reads, err := checkCondition(s.When, s.Matrix)
		if err != nil {
			d.addLine(s.Line, key+".when", "%v", err)
		}
		s.WhenReadsStatus = reads
	}
}

// findCycle returns the step names of one cycle in needs, or nil.
func findCycle(steps []*Step) []string {
	needs := map[string][]string{}
	for _, s := range steps {
		needs[s.Name] = s.Needs
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(n string) bool
	visit = func(n string) bool {
		color[n] = grey
		stack = append(stack, n)
		for _, m := range needs[n] {
			switch color[m] {
			case grey:
				i := slices.Index(stack, m)
				found = append(slices.Clone(stack[i:]), m)
				return true
			case white:
				if visit(m) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return false
	}
	for _, s := range steps {
		if color[s.Name] == white && visit(s.Name) {
			return found
		}
	}
	return nil
}
