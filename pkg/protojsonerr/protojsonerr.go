// Package protojsonerr turns protojson decode errors, which give only a line
// and column, into messages that name the JSON field at fault, e.g.
// `invalid JSON body at field "http.url" (line 1:24): ...`.
package protojsonerr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var unknownRe = regexp.MustCompile(`unknown field "([^"]+)"`)

var posRe = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// Describe rewrites a protojson error to name the JSON field where
// decoding failed, e.g. `field "interval": invalid google.protobuf.Duration value "soon"`.
func Describe(data []byte, err error) string {
	msg := strings.TrimPrefix(err.Error(), "proto: ")
	m := posRe.FindStringSubmatch(msg)
	if m == nil {
		return "invalid JSON body: " + msg
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	detail := strings.TrimSpace(strings.Replace(msg, m[0], "", 1))
	detail = strings.TrimPrefix(detail, ": ")
	detail = strings.TrimPrefix(detail, "syntax error : ")
	detail = strings.TrimPrefix(detail, "syntax error: ")
	off := offsetOf(data, line, col)
	path := PathAt(data, off)
	// An unknown key is reported at the key itself, before it is read.
	if u := unknownRe.FindStringSubmatch(detail); u != nil && !strings.HasSuffix(path, u[1]) {
		if path != "" {
			path += "."
		}
		path += u[1]
	}
	if path != "" {
		return fmt.Sprintf("invalid JSON body at field %q (line %d:%d): %s", path, line, col, detail)
	}
	return fmt.Sprintf("invalid JSON body (line %d:%d): %s", line, col, detail)
}

// offsetOf converts a 1-based line and column into a byte offset.
func offsetOf(data []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return len(data)
		}
		off += i + 1
	}
	return min(off+col-1, len(data))
}

// PathAt returns the dotted path of the JSON member being read at byte
// offset off, e.g. "http.url", "labels.app" or "exec.argv[2]".
func PathAt(data []byte, off int) string {
	type frame struct {
		object  bool
		wantKey bool
		key     string
		index   int
	}
	var stack []*frame
	path := func() string {
		var parts []string
		for _, f := range stack {
			switch {
			case f.object && f.key != "":
				parts = append(parts, f.key)
			case !f.object && f.index >= 0 && len(parts) > 0:
				parts[len(parts)-1] += "[" + strconv.Itoa(f.index) + "]"
			}
		}
		return strings.Join(parts, ".")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	result := ""
	for int(dec.InputOffset()) < off {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
			continue
		}
		if top != nil && top.object && top.wantKey {
			if k, ok := tok.(string); ok {
				top.key = k
			}
			top.wantKey = false
			result = path()
			continue
		}
		if top != nil && !top.object {
			top.index++
			result = path()
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, &frame{object: d == '{', wantKey: d == '{', index: -1})
			continue
		}
		if top != nil && top.object {
			top.wantKey = true
		}
	}
	return result
}
