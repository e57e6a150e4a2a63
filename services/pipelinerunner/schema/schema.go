// Package schema publishes the JSON Schema of pipeline files, for editors
// and for clients that check files before sending them.
package schema

import _ "embed"

//go:embed pipeline.schema.json
var pipelineSchema []byte

// Pipeline returns the JSON Schema (draft 2020-12) of a pipeline file.
func Pipeline() []byte { return append([]byte(nil), pipelineSchema...) }
