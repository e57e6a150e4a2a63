package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// table is rows of cells printed aligned in columns.
type table struct {
	header []string
	rows   [][]string
}

func newTable(header ...string) *table { return &table{header: header} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(cells []string) {
		for i, c := range cells {
			c = strings.ReplaceAll(strings.ReplaceAll(c, "\t", " "), "\n", " ")
			if c == "" {
				c = "-"
			}
			if i > 0 {
				_, _ = io.WriteString(tw, "\t")
			}
			_, _ = io.WriteString(tw, c)
		}
		_, _ = io.WriteString(tw, "\n")
	}
	line(t.header)
	for _, r := range t.rows {
		line(r)
	}
	return tw.Flush()
}

// JSON renders m as protojson with proto field names, indented, ending in
// a newline.
func JSON(m proto.Message) ([]byte, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	// Re-indent with encoding/json: protojson's own spacing is randomised.
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// YAML renders m as YAML with the same keys and values as JSON.
func YAML(m proto.Message) ([]byte, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return yaml.JSONToYAML(data)
}

// printObject prints m in format; the table form comes from tbl.
func printObject(w io.Writer, format string, m proto.Message, tbl func() *table) error {
	var data []byte
	var err error
	switch format {
	case "json":
		data, err = JSON(m)
	case "yaml":
		data, err = YAML(m)
	default:
		return tbl().write(w)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// EnumName is an enum value's name without its type prefix, in lower
// case: ROLLOUT_PHASE_ROLLED_BACK is "rolled_back".
func EnumName(e protoreflect.Enum) string {
	d := e.Descriptor()
	v := d.Values().ByNumber(e.Number())
	if v == nil {
		return fmt.Sprint(int32(e.Number()))
	}
	name := string(v.Name())
	if zero := d.Values().ByNumber(0); zero != nil {
		prefix := strings.TrimSuffix(string(zero.Name()), "UNSPECIFIED")
		name = strings.TrimPrefix(name, prefix)
	}
	if name == "UNSPECIFIED" {
		return ""
	}
	return strings.ToLower(name)
}

// ParseEnum finds the value of an enum from its short name ("firing",
// "ROLLED_BACK") or full name (ALERT_STATE_FIRING).
func ParseEnum(d protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, bool) {
	want := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	prefix := ""
	if zero := d.Values().ByNumber(0); zero != nil {
		prefix = strings.TrimSuffix(string(zero.Name()), "UNSPECIFIED")
	}
	for i := 0; i < d.Values().Len(); i++ {
		v := d.Values().Get(i)
		if v.Number() == 0 {
			continue
		}
		if string(v.Name()) == want || string(v.Name()) == prefix+want {
			return v.Number(), true
		}
	}
	return 0, false
}

// EnumChoices lists an enum's short names, for messages and completion.
func EnumChoices(d protoreflect.EnumDescriptor) []string {
	var out []string
	for i := 0; i < d.Values().Len(); i++ {
		v := d.Values().Get(i)
		if v.Number() != 0 {
			out = append(out, strings.ToLower(strings.TrimPrefix(string(v.Name()), strings.TrimSuffix(string(d.Values().ByNumber(0).Name()), "UNSPECIFIED"))))
		}
	}
	return out
}

// Age is how long ago ts was, in the largest unit or two: "45s", "3m",
// "2h5m", "3d". Empty for an unset time.
func Age(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil || !ts.IsValid() || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return ""
	}
	return ShortDuration(now.Sub(ts.AsTime()))
}

// ShortDuration prints d the way tables want it: "850ms", "45s", "3m20s",
// "2h5m", "3d4h".
func ShortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		m, s := int(d/time.Minute), int(d%time.Minute/time.Second)
		if s == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	d = d.Round(time.Hour)
	days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if h == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, h)
}

// durationText prints a proto duration, empty when unset.
func durationText(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return ShortDuration(d.AsDuration())
}

// clock prints a timestamp as local wall-clock time with milliseconds.
func clock(ts *timestamppb.Timestamp) string {
	if ts == nil || !ts.IsValid() {
		return ""
	}
	return ts.AsTime().Local().Format("2006-01-02 15:04:05.000")
}

// labelsText prints a map as sorted k=v pairs.
func labelsText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// ellipsis shortens s to n runes.
func ellipsis(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n <= 1 {
		return string(r[:n])
	}
	return string(r[:n-1]) + "…"
}
