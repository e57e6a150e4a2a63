// Package openapi holds the suite's merged OpenAPI (Swagger 2.0) document,
// generated from proto/ by protoc-gen-openapiv2.
package openapi

import _ "embed"

// Document is the OpenAPI document for every REST route of the suite.
//
//go:embed opsuite.swagger.json
var Document []byte
