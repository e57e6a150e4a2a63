package pipelinefile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
)

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	ex, _ := filepath.Glob("../../../../examples/pipelines/*.yaml")
	for _, p := range append(files, ex...) {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("steps:\n  - {name: a, needs: [b], script: x}\n  - {name: b, needs: [a], script: x}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("steps: [{name: a, matrix: {x: [1,2]}, command: [x]}]"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := pipelinefile.Parse(src)
		if err != nil {
			if p != nil {
				t.Fatal("pipeline returned with error")
			}
			return
		}
		for _, in := range pipelinefile.Expand(p) {
			if in.ID == "" || in.Step == nil {
				t.Fatalf("bad instance %+v", in)
			}
		}
		_ = p.SecretNames()
	})
}
