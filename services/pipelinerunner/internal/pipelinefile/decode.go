package pipelinefile

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks a YAML node tree, recording every problem with the line and
// key path it was found at.
type decoder struct {
	problems []Problem
}

func (d *decoder) addf(n *yaml.Node, key, format string, args ...any) {
	p := Problem{Key: key, Message: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.problems = append(d.problems, p)
}

// field is one key a mapping may hold.
type field struct {
	name string
	set  func(key string, v *yaml.Node)
}

// mapping decodes n as a mapping whose keys must all be in fields; unknown
// and repeated keys are problems.
func (d *decoder) mapping(n *yaml.Node, key string, fields ...field) bool {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.addf(n, key, "must be a mapping, not %s", kindName(n))
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		sub := join(key, name)
		if seen[name] {
			d.addf(k, sub, "key %q repeated", name)
			continue
		}
		seen[name] = true
		idx := slices.IndexFunc(fields, func(f field) bool { return f.name == name })
		if idx < 0 {
			known := make([]string, len(fields))
			for j, f := range fields {
				known[j] = f.name
			}
			d.addf(k, sub, "unknown key %q (known: %s)", name, strings.Join(known, ", "))
			continue
		}
		fields[idx].set(sub, v)
	}
	return true
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return resolve(n.Content[0])
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "a scalar"
	}
	return "empty"
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func (d *decoder) scalar(n *yaml.Node, key string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.addf(n, key, "must be a scalar value, not %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) str(dst *string) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		if s, ok := d.scalar(n, key); ok {
			*dst = s
		}
	}
}

func (d *decoder) boolean(dst *bool) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		s, ok := d.scalar(n, key)
		if !ok {
			return
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			d.addf(n, key, "must be true or false, not %q", s)
			return
		}
		*dst = b
	}
}

func (d *decoder) integer(dst *int, lo, hi int) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		s, ok := d.scalar(n, key)
		if !ok {
			return
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < lo || v > hi {
			d.addf(n, key, "must be an integer from %d to %d, not %q", lo, hi, s)
			return
		}
		*dst = v
	}
}

func (d *decoder) float(dst *float64) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		s, ok := d.scalar(n, key)
		if !ok {
			return
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 1 || v > 100 {
			d.addf(n, key, "must be a number from 1 to 100, not %q", s)
			return
		}
		*dst = v
	}
}

func (d *decoder) duration(dst *time.Duration) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		s, ok := d.scalar(n, key)
		if !ok {
			return
		}
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			d.addf(n, key, "must be a positive duration such as 30s or 5m, not %q", s)
			return
		}
		*dst = v
	}
}

// list decodes a sequence, calling each for every item with its index key.
func (d *decoder) list(n *yaml.Node, key string, each func(key string, item *yaml.Node)) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.addf(n, key, "must be a list, not %s", kindName(n))
		return
	}
	for i, item := range n.Content {
		each(fmt.Sprintf("%s[%d]", key, i), item)
	}
}

func (d *decoder) strList(dst *[]string) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		out := []string{}
		d.list(n, key, func(k string, item *yaml.Node) {
			if s, ok := d.scalar(item, k); ok {
				out = append(out, s)
			}
		})
		*dst = out
	}
}

// strMap decodes a mapping of scalars, keeping the file's order in keys.
func (d *decoder) strMap(dst *map[string]string) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		n = resolve(n)
		if n.Kind != yaml.MappingNode {
			d.addf(n, key, "must be a mapping, not %s", kindName(n))
			return
		}
		out := map[string]string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if _, dup := out[k]; dup {
				d.addf(n.Content[i], join(key, k), "key %q repeated", k)
				continue
			}
			if s, ok := d.scalar(n.Content[i+1], join(key, k)); ok {
				out[k] = s
			}
		}
		*dst = out
	}
}
