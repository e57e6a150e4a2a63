package signature

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTemplate(t *testing.T) {
	cases := []struct{ in, want string }{
		{"dial tcp 10.0.0.7:5432: connection refused", "dial tcp <ip>:<num>: connection refused"},
		{"user 1234 not found in /var/lib/shop/users.db", "user <num> not found in <path>"},
		{"request 7f3a9b2c-1d2e-4f5a-8b9c-0d1e2f3a4b5c failed", "request <uuid> failed"},
		{"commit 9fceb02d0ae598e95dc970b74767f19372d61af8 missing", "commit <hex> missing"},
		{"pointer 0xc000123abc is nil", "pointer <hex> is nil"},
		{"took 1.5s (limit 300ms)", "took <num>s (limit <num>ms)"},
		{"GET https://example.com/a/b?x=1 returned 503", "GET <url> returned <num>"},
		{"replica shop-v2-1 exited with code=137", "replica shop-v2-<num> exited with code=<num>"},
		{"open ./config/app.yaml: no such file", "open <path>: no such file"},
		{"  spaced\t\tout  message ", "spaced out message"},
		{"plain words stay", "plain words stay"},
		{"http2 stream 5 reset", "http2 stream <num> reset"},
		{"id=\"42\"", "id=\"<num>\""},
	}
	for _, tc := range cases {
		if got := Template(tc.in); got != tc.want {
			t.Errorf("Template(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTemplateGroupsVariants(t *testing.T) {
	a := Template("user 1 not found in /a/b.db")
	b := Template("user 99999 not found in /c/d/e.db")
	if a != b || ID("app:shop", a) != ID("app:shop", b) || ID("app:shop", a) == ID("app:cart", a) {
		t.Fatalf("variants not grouped: %q %q", a, b)
	}
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"dial tcp 10.0.0.7:5432: connection refused", "a=b=c", "0x", "1.2.3.4:", "/", "é 12é", "\xff\xfe 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Template(s)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 from %q", s)
		}
		if len(got) > MaxTemplateBytes {
			t.Fatalf("template of %d bytes", len(got))
		}
		if got != Template(s) {
			t.Fatal("not deterministic")
		}
		if strings.Contains(got, "  ") {
			t.Fatalf("double space in %q", got)
		}
	})
}

func TestTemplateShortHexAndUnits(t *testing.T) {
	cases := []struct{ in, want string }{
		{"customer 1a2 in 5ms", "customer <hex> in <num>ms"},
		{"customer bb", "customer bb"},
		{"size 2kb", "size <num>kb"},
		{"status 2xx", "status <num>xx"},
		{"v2 sha256 md5", "v2 sha256 md5"},
		{"id 2d0f", "id <hex>"},
		{"count 1234567890123456789", "count <hex>"},
	}
	for _, tc := range cases {
		if got := Template(tc.in); got != tc.want {
			t.Errorf("Template(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
