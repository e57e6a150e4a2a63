package pipelinefile

import (
	"sort"
	"strings"
)

// Instance is one concrete step of a run: a step, or one matrix
// combination of a matrix step.
type Instance struct {
	ID     string
	Step   *Step
	Matrix map[string]string
	Needs  []string // instance ids
}

// Expand turns the file's steps into run steps in file order, a matrix step
// expanded in place; needs on a matrix step wait for all its combinations.
func Expand(p *Pipeline) []*Instance {
	ids := map[string][]string{}
	var out []*Instance
	for _, s := range p.Steps {
		combos := combinations(s.Matrix)
		for _, m := range combos {
			id := s.Name
			if len(m) > 0 {
				parts := make([]string, 0, len(s.Matrix))
				for _, a := range s.Matrix {
					parts = append(parts, a.Name+"="+m[a.Name])
				}
				id += "[" + strings.Join(parts, ",") + "]"
			}
			ids[s.Name] = append(ids[s.Name], id)
			out = append(out, &Instance{ID: id, Step: s, Matrix: m})
		}
	}
	for _, in := range out {
		in.Needs = []string{}
		for _, n := range in.Step.Needs {
			in.Needs = append(in.Needs, ids[n]...)
		}
		sort.Strings(in.Needs)
	}
	return out
}

func combinations(axes []Axis) []map[string]string {
	out := []map[string]string{nil}
	for _, a := range axes {
		var next []map[string]string
		for _, base := range out {
			for _, v := range a.Values {
				m := map[string]string{}
				for k, bv := range base {
					m[k] = bv
				}
				m[a.Name] = v
				next = append(next, m)
			}
		}
		out = next
	}
	return out
}
