package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
)

// namingMarshaler is the JSON marshaler of the gateway. Its decoder turns
// protojson errors, which give only a line and column, into errors that
// name the field at fault.
type namingMarshaler struct {
	*runtime.JSONPb
}

func (m *namingMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return err // the error handler maps a too-large body to 413
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		msg, ok := protoTarget(v)
		if !ok {
			if err := m.JSONPb.Unmarshal(data, v); err != nil {
				return errors.New(describeJSONError(data, err))
			}
			return nil
		}
		if err := m.UnmarshalOptions.Unmarshal(data, msg); err != nil {
			// grpc-gateway reports decode errors as InvalidArgument.
			return errors.New(describeJSONError(data, err))
		}
		return nil
	})
}

// protoTarget finds the message to decode into: v itself, or the message a
// pointer-to-pointer (how generated code passes a body field) points to,
// allocated when nil.
func protoTarget(v any) (proto.Message, bool) {
	if m, ok := v.(proto.Message); ok {
		return m, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Pointer {
		return nil, false
	}
	if _, ok := reflect.Zero(rv.Elem().Type()).Interface().(proto.Message); !ok {
		return nil, false
	}
	if rv.Elem().IsNil() {
		rv.Elem().Set(reflect.New(rv.Elem().Type().Elem()))
	}
	m, ok := rv.Elem().Interface().(proto.Message)
	return m, ok
}

// StreamContentType names the content type of server-streamed responses.
func (m *namingMarshaler) StreamContentType(any) string { return ndjson }

var posRe = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// describeJSONError rewrites a protojson error to name the JSON field where
// decoding failed, e.g. `field "interval": invalid google.protobuf.Duration value "soon"`.
func describeJSONError(data []byte, err error) string {
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
	if path := jsonPathAt(data, off); path != "" {
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

// jsonPathAt returns the dotted path of the JSON member being read at byte
// offset off, e.g. "http.url", "labels.app" or "exec.argv[2]".
func jsonPathAt(data []byte, off int) string {
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
