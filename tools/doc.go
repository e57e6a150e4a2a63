// Package tools pins the code generators and linters the project uses.
// Install them with scripts/install-tools.sh; the versions live in go.mod.
package tools
