// Package filter parses the log-aggregator's query filters (label matchers,
// levels, sources, text and regex) and evaluates them on storage blocks and
// records.
package filter

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
)

// Op is a label matcher's operator.
type Op int

// Matcher operators, as written: =, !=, =~, !~.
const (
	OpEqual Op = iota
	OpNotEqual
	OpRegex
	OpNotRegex
)

func (o Op) String() string {
	return [...]string{"=", "!=", "=~", "!~"}[o]
}

// Matcher is one parsed label matcher.
type Matcher struct {
	Name  string
	Op    Op
	Value string
	re    *regexp.Regexp
}

// MaxMatcherBytes bounds one matcher's text.
const MaxMatcherBytes = 1024

// ParseMatcher parses `name="value"`, `name!="value"`, `name=~"re"` or
// `name!~"re"`; the value is a Go-style double-quoted string (or
// back-quoted). Regexes are RE2, anchored at both ends as in Prometheus.
func ParseMatcher(s string) (*Matcher, error) {
	if len(s) > MaxMatcherBytes {
		return nil, fmt.Errorf("matcher longer than %d bytes", MaxMatcherBytes)
	}
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (isNameByte(s[i], i)) {
		i++
	}
	name := s[:i]
	if !record.ValidLabelName(name) {
		return nil, fmt.Errorf("matcher %q: label name must match [a-zA-Z_][a-zA-Z0-9_.]*", s)
	}
	rest := strings.TrimLeft(s[i:], " ")
	var op Op
	switch {
	case strings.HasPrefix(rest, "=~"):
		op, rest = OpRegex, rest[2:]
	case strings.HasPrefix(rest, "!~"):
		op, rest = OpNotRegex, rest[2:]
	case strings.HasPrefix(rest, "!="):
		op, rest = OpNotEqual, rest[2:]
	case strings.HasPrefix(rest, "="):
		op, rest = OpEqual, rest[1:]
	default:
		return nil, fmt.Errorf("matcher %q: want an operator =, !=, =~ or !~ after the label name", s)
	}
	rest = strings.TrimSpace(rest)
	if len(rest) < 2 || (rest[0] != '"' && rest[0] != '`') {
		return nil, fmt.Errorf("matcher %q: value must be a double-quoted string", s)
	}
	val, err := strconv.Unquote(rest)
	if err != nil {
		return nil, fmt.Errorf("matcher %q: bad quoted value: %w", s, err)
	}
	m := &Matcher{Name: name, Op: op, Value: val}
	if op == OpRegex || op == OpNotRegex {
		re, err := regexp.Compile("^(?:" + val + ")$")
		if err != nil {
			return nil, fmt.Errorf("matcher %q: invalid regex: %w", s, err)
		}
		m.re = re
	}
	return m, nil
}

func isNameByte(c byte, i int) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '.')
}

// String writes the matcher back in its parsed syntax.
func (m *Matcher) String() string { return m.Name + m.Op.String() + strconv.Quote(m.Value) }

// Matches evaluates m on labels; a missing label has the empty value.
func (m *Matcher) Matches(ls record.Labels) bool {
	v, _ := ls.Get(m.Name)
	switch m.Op {
	case OpEqual:
		return v == m.Value
	case OpNotEqual:
		return v != m.Value
	case OpRegex:
		return m.re.MatchString(v)
	default:
		return !m.re.MatchString(v)
	}
}

// Spec is a filter as requested, before compilation.
type Spec struct {
	Levels     []lav1.LogLevel
	MinLevel   lav1.LogLevel
	Sources    []string
	Matchers   []string
	Contains   string
	IgnoreCase bool
	Regex      string
	TraceID    string
	// Start (inclusive) and End (exclusive) in Unix nanoseconds; 0 means
	// unbounded.
	Start, End int64
}

// FieldError names the request field a filter problem is about.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Filter is a compiled Spec.
type Filter struct {
	// LevelMask has bit l set for each wanted level l.
	LevelMask  uint8
	Sources    []string
	Matchers   []*Matcher
	contains   []byte
	containsCI *regexp.Regexp
	re         *regexp.Regexp
	TraceID    string
	Start, End int64
	key        string
}

// MaxTextBytes bounds contains and regex.
const MaxTextBytes = 4096

// Compile checks s and returns the filter; errors are *FieldError naming
// the request field (levels, min_level, sources, matchers[i], contains,
// regex, trace_id, end_time).
func Compile(s Spec) (*Filter, error) {
	f := &Filter{TraceID: strings.ToLower(s.TraceID), Start: s.Start, End: s.End}
	if s.MinLevel < 0 || s.MinLevel > lav1.LogLevel_LOG_LEVEL_FATAL {
		return nil, &FieldError{"min_level", "unknown level"}
	}
	var mask uint8 = 0x7f
	if len(s.Levels) > 0 {
		mask = 0
		for i, l := range s.Levels {
			if l < 0 || l > lav1.LogLevel_LOG_LEVEL_FATAL {
				return nil, &FieldError{fmt.Sprintf("levels[%d]", i), "unknown level"}
			}
			mask |= 1 << l
		}
	}
	if s.MinLevel > 0 {
		var min uint8
		for l := s.MinLevel; l <= lav1.LogLevel_LOG_LEVEL_FATAL; l++ {
			min |= 1 << l
		}
		mask &= min
	}
	f.LevelMask = mask
	for i, src := range s.Sources {
		src = strings.TrimSuffix(src, "/")
		if reason := record.CheckSource(src); reason != "" {
			return nil, &FieldError{fmt.Sprintf("sources[%d]", i), reason}
		}
		f.Sources = append(f.Sources, src)
	}
	for i, ms := range s.Matchers {
		m, err := ParseMatcher(ms)
		if err != nil {
			return nil, &FieldError{fmt.Sprintf("matchers[%d]", i), err.Error()}
		}
		f.Matchers = append(f.Matchers, m)
	}
	if len(s.Contains) > MaxTextBytes {
		return nil, &FieldError{"contains", fmt.Sprintf("longer than %d bytes", MaxTextBytes)}
	}
	if !utf8.ValidString(s.Contains) {
		return nil, &FieldError{"contains", "not valid UTF-8"}
	}
	if s.Contains != "" {
		if s.IgnoreCase {
			re, err := regexp.Compile("(?i)" + regexp.QuoteMeta(s.Contains))
			if err != nil {
				return nil, &FieldError{"contains", err.Error()}
			}
			f.containsCI = re
		} else {
			f.contains = []byte(s.Contains)
		}
	}
	if len(s.Regex) > MaxTextBytes {
		return nil, &FieldError{"regex", fmt.Sprintf("longer than %d bytes", MaxTextBytes)}
	}
	if s.Regex != "" {
		re, err := regexp.Compile(s.Regex)
		if err != nil {
			return nil, &FieldError{"regex", "invalid RE2 regular expression: " + err.Error()}
		}
		f.re = re
	}
	if f.TraceID != "" {
		if len(f.TraceID) != 32 || strings.Trim(f.TraceID, "0123456789abcdef") != "" {
			return nil, &FieldError{"trace_id", "must be 32 hex digits"}
		}
	}
	if s.Start != 0 && s.End != 0 && s.End < s.Start {
		return nil, &FieldError{"end_time", "before start_time"}
	}
	f.key = fmt.Sprintf("%x|%q|%q|%q|%v|%q|%q|%d|%d", mask, f.Sources, s.Matchers, s.Contains, s.IgnoreCase, s.Regex, f.TraceID, s.Start, s.End)
	return f, nil
}

// Key identifies the filter, for checking page tokens.
func (f *Filter) Key() string { return f.key }

// Needle returns the case-sensitive contains text, nil when there is none:
// a record can match only if its message (or metadata) contains it.
func (f *Filter) Needle() []byte { return f.contains }

// HasText reports whether the filter looks at message text.
func (f *Filter) HasText() bool { return f.contains != nil || f.containsCI != nil || f.re != nil }

// MatchSource reports whether src is one of the sources or below one.
func (f *Filter) MatchSource(src string) bool {
	if len(f.Sources) == 0 {
		return true
	}
	for _, s := range f.Sources {
		if Under(src, s) {
			return true
		}
	}
	return false
}

// Under reports whether src is parent or below it.
func Under(src, parent string) bool {
	return src == parent || len(src) > len(parent) && src[len(parent)] == '/' && src[:len(parent)] == parent
}

// MatchStream reports whether records of this source and labels can match.
func (f *Filter) MatchStream(src string, ls record.Labels) bool {
	if !f.MatchSource(src) {
		return false
	}
	for _, m := range f.Matchers {
		if !m.Matches(ls) {
			return false
		}
	}
	return true
}

// MatchTime reports whether t (Unix ns) is within the range.
func (f *Filter) MatchTime(t int64) bool {
	return (f.Start == 0 || t >= f.Start) && (f.End == 0 || t < f.End)
}

// OverlapsTime reports whether [minT, maxT] meets the range.
func (f *Filter) OverlapsTime(minT, maxT int64) bool {
	return (f.Start == 0 || maxT >= f.Start) && (f.End == 0 || minT < f.End)
}

// MatchLevel reports whether level l is wanted.
func (f *Filter) MatchLevel(l lav1.LogLevel) bool { return l >= 0 && l < 8 && f.LevelMask&(1<<l) != 0 }

// MatchText evaluates contains and regex on a message and, when the message
// does not match, on the metadata written as "key=value" lines.
func (f *Filter) MatchText(msg []byte, metadata record.Labels) bool {
	if f.matchText(msg) {
		return true
	}
	for _, kv := range metadata {
		line := kv.Name + "=" + kv.Value
		if f.matchText([]byte(line)) {
			return true
		}
	}
	return false
}

func (f *Filter) matchText(b []byte) bool {
	if f.contains != nil && !bytes.Contains(b, f.contains) {
		return false
	}
	if f.containsCI != nil && !f.containsCI.Match(b) {
		return false
	}
	if f.re != nil && !f.re.Match(b) {
		return false
	}
	return true
}

// MatchMessageOnly evaluates contains and regex on the message alone.
func (f *Filter) MatchMessageOnly(msg []byte) bool { return f.matchText(msg) }

// Match evaluates every part of the filter on a whole record.
func (f *Filter) Match(r *record.Record) bool {
	return f.MatchLevel(r.Level) && f.MatchTime(r.Time) && f.MatchStream(r.Source, r.Labels) &&
		(f.TraceID == "" || r.TraceID == f.TraceID) &&
		(!f.HasText() || f.MatchText([]byte(r.Message), r.Metadata))
}
