package filter

import (
	"errors"
	"testing"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
)

func TestParseMatcher(t *testing.T) {
	labels := record.Labels{{Name: "app", Value: "shop"}, {Name: "env", Value: "prod"}, {Name: "replica", Value: "shop-7"}}
	cases := []struct {
		in      string
		matches bool
		err     bool
	}{
		{`app="shop"`, true, false},
		{`app = "shop"`, true, false},
		{`app!="shop"`, false, false},
		{`replica=~"shop-.*"`, true, false},
		{`replica=~"hop"`, false, false}, // anchored
		{`replica!~"cart-.*"`, true, false},
		{`missing=""`, true, false},
		{`missing!=""`, false, false},
		{"env=`prod`", true, false},
		{`env="pr\"od"`, false, false},
		{`app=shop`, false, true},
		{`1app="x"`, false, true},
		{`app~"x"`, false, true},
		{`app=~"("`, false, true},
		{`app="unterminated`, false, true},
		{``, false, true},
	}
	for _, tc := range cases {
		m, err := ParseMatcher(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseMatcher(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && m.Matches(labels) != tc.matches {
			t.Errorf("%q matches = %v, want %v", tc.in, !tc.matches, tc.matches)
		}
	}
}

func TestCompileFieldErrors(t *testing.T) {
	cases := []struct {
		spec  Spec
		field string
	}{
		{Spec{Regex: "(a"}, "regex"},
		{Spec{Matchers: []string{`a="b"`, "bad"}}, "matchers[1]"},
		{Spec{Levels: []lav1.LogLevel{lav1.LogLevel_LOG_LEVEL_INFO, 12}}, "levels[1]"},
		{Spec{MinLevel: -1}, "min_level"},
		{Spec{Sources: []string{"ok", "a b"}}, "sources[1]"},
		{Spec{TraceID: "abc"}, "trace_id"},
		{Spec{Start: 10, End: 5}, "end_time"},
	}
	for _, tc := range cases {
		_, err := Compile(tc.spec)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Compile(%+v) = %v, want an error on %s", tc.spec, err, tc.field)
		}
	}
}

func TestMatch(t *testing.T) {
	rec := &record.Record{Time: 100, Level: lav1.LogLevel_LOG_LEVEL_WARN, Source: "app/shop/shop-1",
		Labels: record.Labels{{Name: "app", Value: "shop"}}, Message: "Disk Almost Full",
		Metadata: record.Labels{{Name: "path", Value: "/var/data"}}, TraceID: "0123456789abcdef0123456789abcdef"}
	cases := []struct {
		name string
		spec Spec
		want bool
	}{
		{"empty", Spec{}, true},
		{"min level below", Spec{MinLevel: lav1.LogLevel_LOG_LEVEL_INFO}, true},
		{"min level above", Spec{MinLevel: lav1.LogLevel_LOG_LEVEL_ERROR}, false},
		{"levels and min level", Spec{Levels: []lav1.LogLevel{lav1.LogLevel_LOG_LEVEL_WARN}, MinLevel: lav1.LogLevel_LOG_LEVEL_ERROR}, false},
		{"source parent", Spec{Sources: []string{"app/shop"}}, true},
		{"source parent with slash", Spec{Sources: []string{"app/shop/"}}, true},
		{"source prefix is not parent", Spec{Sources: []string{"app/sh"}}, false},
		{"contains case", Spec{Contains: "disk"}, false},
		{"contains ignore case", Spec{Contains: "disk", IgnoreCase: true}, true},
		{"metadata text", Spec{Contains: "path=/var"}, true},
		{"regex", Spec{Regex: `^Disk\s+\w+`}, true},
		{"time start", Spec{Start: 101}, false},
		{"time end exclusive", Spec{End: 100}, false},
		{"trace upper", Spec{TraceID: "0123456789ABCDEF0123456789ABCDEF"}, true},
		{"matcher", Spec{Matchers: []string{`app!="shop"`}}, false},
	}
	for _, tc := range cases {
		f, err := Compile(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := f.Match(rec); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzParseMatcher: any text parses or fails cleanly, and what parses
// prints back to an equivalent matcher.
func FuzzParseMatcher(f *testing.F) {
	for _, s := range []string{`app="shop"`, `a!~"x.*"`, "b=`c`", `x=~"("`, `=""`, `a.b_c="\u00e9"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMatcher(s)
		if err != nil {
			return
		}
		m2, err := ParseMatcher(m.String())
		if err != nil {
			t.Fatalf("reparse of %q (%q): %v", s, m.String(), err)
		}
		if m2.Name != m.Name || m2.Op != m.Op || m2.Value != m.Value {
			t.Fatalf("round trip %q -> %q", s, m.String())
		}
	})
}

// FuzzCompile: any filter compiles or names a field, and a compiled filter
// evaluates any record without panicking.
func FuzzCompile(f *testing.F) {
	f.Add("app=\"x\"", "a", "b+", "svc", int32(3), int32(2), false, int64(0), int64(0), "msg")
	f.Add("bad", "", "(", "a//b", int32(9), int32(-1), true, int64(5), int64(1), "")
	f.Fuzz(func(t *testing.T, matcher, contains, regex, source string, level, minLevel int32, ci bool, start, end int64, msg string) {
		fl, err := Compile(Spec{Levels: []lav1.LogLevel{lav1.LogLevel(level)}, MinLevel: lav1.LogLevel(minLevel), Sources: []string{source},
			Matchers: []string{matcher}, Contains: contains, IgnoreCase: ci, Regex: regex, Start: start, End: end})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("error without a field: %v", err)
			}
			return
		}
		fl.Match(&record.Record{Message: msg, Source: source, Level: lav1.LogLevel(level), Time: start})
	})
}
