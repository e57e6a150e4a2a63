package appspec

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// friendlyDurations rewrites Go-style durations ("500ms", "5m", "1h30m") in
// a JSON document into the "<seconds>s" form protojson accepts, for every
// field whose type is google.protobuf.Duration. People write the former in
// application files; the rest of the document is left as it is.
func friendlyDurations(js []byte, md protoreflect.MessageDescriptor) []byte {
	var doc any
	dec := json.NewDecoder(strings.NewReader(string(js)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return js // protojson will report the problem with its position
	}
	if !rewrite(doc, md) {
		return js
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return js
	}
	return out
}

const durationName = "google.protobuf.Duration"

// rewrite converts durations within v, described by md; it reports whether
// anything changed.
func rewrite(v any, md protoreflect.MessageDescriptor) bool {
	obj, ok := v.(map[string]any)
	if !ok {
		return false
	}
	changed := false
	for key, val := range obj {
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key))
		}
		if fd == nil || fd.Message() == nil {
			continue
		}
		switch {
		case fd.IsMap():
			if m, ok := val.(map[string]any); ok && fd.MapValue().Message() != nil {
				for _, mv := range m {
					changed = rewrite(mv, fd.MapValue().Message()) || changed
				}
			}
		case fd.IsList():
			if list, ok := val.([]any); ok {
				for i, item := range list {
					if fd.Message().FullName() == durationName {
						if s, ok := convert(item); ok {
							list[i], changed = s, true
						}
						continue
					}
					changed = rewrite(item, fd.Message()) || changed
				}
			}
		case fd.Message().FullName() == durationName:
			if s, ok := convert(val); ok {
				obj[key], changed = s, true
			}
		default:
			changed = rewrite(val, fd.Message()) || changed
		}
	}
	return changed
}

// convert turns "1m30s" into "90s"; values protojson already accepts, and
// values that are not durations, are left for protojson to judge.
func convert(v any) (string, bool) {
	s, ok := v.(string)
	if !ok || s == "" {
		return "", false
	}
	if strings.HasSuffix(s, "s") {
		if _, err := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64); err == nil {
			return "", false
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s", true
}
