package schema_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opsuite/opsuite/services/pipelinerunner/schema"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.Pipeline()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("pipeline.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("pipeline.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// yamlToJSONValue decodes YAML into the generic JSON value model.
func yamlToJSONValue(t *testing.T, src []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(src, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestExamplesMatchSchema(t *testing.T) {
	sch := compile(t)
	files, _ := filepath.Glob("../../../examples/pipelines/*.yaml")
	more, _ := filepath.Glob("../internal/pipelinefile/testdata/valid/*.yaml")
	files = append(files, more...)
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(yamlToJSONValue(t, src)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSchemaRejects(t *testing.T) {
	sch := compile(t)
	for name, src := range map[string]string{
		"unknown key":    "steps: [{name: a, scirpt: x}]",
		"no steps":       "name: a",
		"bad executor":   "executor: podman\nsteps: [{name: a, script: x}]",
		"command string": "steps: [{name: a, command: echo}]",
	} {
		if err := sch.Validate(yamlToJSONValue(t, []byte(src))); err == nil {
			t.Errorf("%s: schema accepted %q", name, src)
		}
	}
}
