package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/protojsonerr"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// maxFileBytes bounds a file given with -f.
const maxFileBytes = 1 << 20

// readInput reads the file at path, or standard input for "-".
func readInput(path string, stdin io.Reader) ([]byte, error) {
	var rd io.Reader
	if path == "-" {
		rd = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		defer f.Close()
		rd = f
	}
	data, err := io.ReadAll(io.LimitReader(rd, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("read %s: over the limit of %d bytes", path, maxFileBytes)
	}
	return data, nil
}

// DecodeApplication reads an application file, YAML or JSON in the shape of
// opsuite.deployer.v1.Application. Durations may be written the Go way
// ("500ms", "5m", "1h30m"); they are sent as the "<seconds>s" protojson
// needs. Unknown keys are errors naming the key.
func DecodeApplication(data []byte) (*deployerv1.Application, error) {
	app := &deployerv1.Application{}
	if err := DecodeMessage(data, app); err != nil {
		return nil, err
	}
	return app, nil
}

// DecodeMessage decodes YAML or JSON into m, accepting Go-style durations.
func DecodeMessage(data []byte, m proto.Message) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("the file is empty")
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("not YAML or JSON: %w", err)
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("not YAML or JSON: %w", err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return fmt.Errorf("the document must be a mapping with the fields of %s", m.ProtoReflect().Descriptor().Name())
	}
	doc = protoDurations(doc, m.ProtoReflect().Descriptor())
	js, err = json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("re-encode: %w", err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, m); err != nil {
		return errors.New(strings.Replace(protojsonerr.Describe(js, err), "invalid JSON body", "invalid document", 1))
	}
	return nil
}

const durationType protoreflect.FullName = "google.protobuf.Duration"

// protoDurations returns v with every string in a Duration position that
// parses as a Go duration rewritten to protojson's form. Other values are
// left for protojson to accept or to reject by name.
func protoDurations(v any, md protoreflect.MessageDescriptor) any {
	obj, ok := v.(map[string]any)
	if !ok {
		return v
	}
	fields := md.Fields()
	for key, val := range obj {
		fd := fields.ByName(protoreflect.Name(key))
		if fd == nil {
			fd = fields.ByJSONName(key)
		}
		if fd == nil {
			continue
		}
		switch {
		case fd.IsMap():
			vd := fd.MapValue()
			if m, ok := val.(map[string]any); ok && vd.Kind() == protoreflect.MessageKind {
				for k, item := range m {
					m[k] = convertValue(item, vd.Message())
				}
			}
		case fd.IsList():
			if list, ok := val.([]any); ok && fd.Kind() == protoreflect.MessageKind {
				for i, item := range list {
					list[i] = convertValue(item, fd.Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			obj[key] = convertValue(val, fd.Message())
		}
	}
	return obj
}

func convertValue(v any, md protoreflect.MessageDescriptor) any {
	if md.FullName() != durationType {
		return protoDurations(v, md)
	}
	s, ok := v.(string)
	if !ok {
		return v
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return v
	}
	return ProtoDuration(d)
}

// ProtoDuration is d in protojson's Duration form: seconds with up to nine
// decimals and an "s", e.g. "0.300s", "90s", "-1.5s".
func ProtoDuration(d time.Duration) string {
	sign := ""
	secs, nanos := int64(d/time.Second), int64(d%time.Second)
	if d < 0 {
		// Negate the parts, not d: -math.MinInt64 does not fit.
		sign, secs, nanos = "-", -secs, -nanos
	}
	if nanos == 0 {
		return fmt.Sprintf("%s%ds", sign, secs)
	}
	frac := strings.TrimRight(fmt.Sprintf("%09d", nanos), "0")
	return fmt.Sprintf("%s%d.%ss", sign, secs, frac)
}
