package pipelinefile_test

import (
	"os"
	"testing"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
)

func BenchmarkParse(b *testing.B) {
	src, err := os.ReadFile("testdata/valid/dag.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := pipelinefile.Parse(src); err != nil {
			b.Fatal(err)
		}
	}
}
