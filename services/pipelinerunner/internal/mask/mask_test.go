package mask_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/opsuite/opsuite/services/pipelinerunner/internal/mask"
)

func TestString(t *testing.T) {
	m := mask.New("hunter2", "hunter2-long", "", "multi\nline-secret")
	tests := map[string]string{
		"pw=hunter2!":            "pw=********!",
		"hunter2-long":           "********",
		"hunter2hunter2":         "****************",
		"no secret":              "no secret",
		"a multi\nline-secret z": "a ******** z",
		"line-secret on its own": "******** on its own",
		"hunter":                 "hunter",
	}
	for in, want := range tests {
		if got := m.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStreamSplitWrites writes text containing secrets in every possible
// two-way split and in random small pieces: no secret may come out.
func TestStreamSplitWrites(t *testing.T) {
	secrets := []string{"s3cr3t-value", "abc", "bcz"}
	m := mask.New(secrets...)
	text := "start s3cr3t-value mid abcz abc bcz s3cr3t-values3cr3t-value end s3cr3t-val"
	want := m.String(text)
	for cut := 0; cut <= len(text); cut++ {
		var out bytes.Buffer
		s := m.Stream(func(b []byte) { out.Write(b) })
		_, _ = s.Write([]byte(text[:cut]))
		_, _ = s.Write([]byte(text[cut:]))
		_ = s.Close()
		if out.String() != want {
			t.Fatalf("cut %d: %q, want %q", cut, out.String(), want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		var out bytes.Buffer
		s := m.Stream(func(b []byte) { out.Write(b) })
		for rest := text; rest != ""; {
			n := min(len(rest), 1+r.IntN(4))
			_, _ = s.Write([]byte(rest[:n]))
			rest = rest[n:]
		}
		_ = s.Close()
		if out.String() != want {
			t.Fatalf("random pieces: %q, want %q", out.String(), want)
		}
		for _, sec := range []string{"s3cr3t-value", "bcz"} {
			if strings.Contains(out.String(), sec) {
				t.Fatalf("secret %q leaked", sec)
			}
		}
	}
}

func TestStreamHoldsOnlyPossiblePrefix(t *testing.T) {
	m := mask.New("secret")
	var out bytes.Buffer
	s := m.Stream(func(b []byte) { out.Write(b) })
	_, _ = s.Write([]byte("line one\nse"))
	if out.String() != "line one\n" {
		t.Fatalf("emitted %q before the tail was decided", out.String())
	}
	_, _ = s.Write([]byte("quel\n"))
	if out.String() != "line one\nsequel\n" {
		t.Fatalf("got %q", out.String())
	}
}

func FuzzStream(f *testing.F) {
	f.Add("secret", "xx secret yy", 3)
	f.Add("ab", "aab", 1)
	f.Fuzz(func(t *testing.T, secret, text string, piece int) {
		if secret == "" || piece <= 0 {
			return
		}
		m := mask.New(secret)
		var out bytes.Buffer
		s := m.Stream(func(b []byte) { out.Write(b) })
		for rest := text; rest != ""; {
			n := min(len(rest), piece)
			_, _ = s.Write([]byte(rest[:n]))
			rest = rest[n:]
		}
		_ = s.Close()
		if out.String() != m.String(text) {
			t.Fatalf("stream %q != whole %q", out.String(), m.String(text))
		}
	})
}

func TestAcrossLineBreaks(t *testing.T) {
	m := mask.New("tok-9f8e7d6c5b4a")
	in := "a tok-9f\n8e7d6c\r\n5b4a b\nnext\n"
	want := "a ********\n\n b\nnext\n"
	if got := m.String(in); got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	for cut := 0; cut <= len(in); cut++ {
		var out bytes.Buffer
		s := m.Stream(func(b []byte) { out.Write(b) })
		_, _ = s.Write([]byte(in[:cut]))
		_, _ = s.Write([]byte(in[cut:]))
		_ = s.Close()
		if out.String() != want {
			t.Fatalf("cut %d: %q", cut, out.String())
		}
	}
	// A line that merely starts like the secret is not swallowed.
	if got := m.String("tok-9\nfoo\n"); got != "tok-9\nfoo\n" {
		t.Fatalf("got %q", got)
	}
}
