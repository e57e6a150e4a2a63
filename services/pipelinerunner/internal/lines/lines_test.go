package lines_test

import (
	"strings"
	"testing"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/lines"
)

type line struct {
	text    string
	partial bool
}

func TestSplitter(t *testing.T) {
	long := strings.Repeat("x", lines.MaxLine+10)
	tests := []struct {
		name   string
		pieces []string
		want   []line
	}{
		{"whole lines", []string{"a\nb\n"}, []line{{"a", false}, {"b", false}}},
		{"split across writes", []string{"he", "llo\nwor", "ld\n"}, []line{{"hello", false}, {"world", false}}},
		{"crlf", []string{"a\r\n"}, []line{{"a", false}}},
		{"unterminated end", []string{"a\nrest"}, []line{{"a", false}, {"rest", true}}},
		{"empty lines", []string{"\n\n"}, []line{{"", false}, {"", false}}},
		{"long line", []string{long + "\n"}, []line{{long[:lines.MaxLine], true}, {"xxxxxxxxxx", false}}},
		{"long line in pieces", []string{long[:100], long[100:], "\n"}, []line{{long[:lines.MaxLine], true}, {"xxxxxxxxxx", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []line
			s := lines.New(func(text string, partial bool) { got = append(got, line{text, partial}) })
			for _, p := range tt.pieces {
				_, _ = s.Write([]byte(p))
			}
			_ = s.Close()
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d: %q %v, want %q %v", i, trunc(got[i].text), got[i].partial, trunc(tt.want[i].text), tt.want[i].partial)
				}
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}
