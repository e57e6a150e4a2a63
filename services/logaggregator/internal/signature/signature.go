// Package signature turns error messages into templates by masking their
// variable parts (numbers, hex ids, UUIDs, IP addresses, paths, URLs), so
// messages that differ only in those parts share one signature.
package signature

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// MaxTemplateBytes bounds a template; longer messages are cut first.
const MaxTemplateBytes = 512

// Placeholders used in templates.
const (
	Num  = "<num>"
	Hex  = "<hex>"
	UUID = "<uuid>"
	IP   = "<ip>"
	Path = "<path>"
	URL  = "<url>"
)

// Template returns msg with variable parts masked. Whitespace runs become
// one space.
func Template(msg string) string {
	if len(msg) > 4*MaxTemplateBytes {
		msg = msg[:4*MaxTemplateBytes]
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	var b strings.Builder
	b.Grow(len(msg))
	first := true
	for field := range strings.FieldsSeq(msg) {
		if !first {
			b.WriteByte(' ')
		}
		first = false
		maskField(&b, field)
		if b.Len() >= MaxTemplateBytes {
			break
		}
	}
	out := b.String()
	if len(out) > MaxTemplateBytes {
		n := MaxTemplateBytes
		for n > 0 && !utf8.RuneStart(out[n]) {
			n--
		}
		out = out[:n]
	}
	return out
}

const leadPunct = "\"'([{<`"
const trailPunct = "\"')]}>,;:.!?`"

func maskField(b *strings.Builder, field string) {
	start, end := 0, len(field)
	for start < end && strings.IndexByte(leadPunct, field[start]) >= 0 {
		start++
	}
	for end > start && strings.IndexByte(trailPunct, field[end-1]) >= 0 {
		end--
	}
	b.WriteString(field[:start])
	maskCore(b, field[start:end])
	b.WriteString(field[end:])
}

func maskCore(b *strings.Builder, core string) {
	if core == "" {
		return
	}
	if isPlaceholder(core) {
		b.WriteString(core)
		return
	}
	if i := strings.Index(core, "://"); i > 0 && isAlpha(core[:i]) {
		b.WriteString(URL)
		return
	}
	if isPath(core) {
		b.WriteString(Path)
		return
	}
	if isUUID(core) {
		b.WriteString(UUID)
		return
	}
	if host, port, ok := strings.Cut(core, ":"); ok && isIPv4(host) {
		b.WriteString(IP)
		b.WriteByte(':')
		maskWords(b, port)
		return
	}
	if isIPv4(core) {
		b.WriteString(IP)
		return
	}
	if k, v, ok := strings.Cut(core, "="); ok && k != "" {
		maskWords(b, k)
		b.WriteByte('=')
		maskField(b, v)
		return
	}
	maskWords(b, core)
}

func isPlaceholder(s string) bool {
	switch s {
	case Num, Hex, UUID, IP, Path, URL:
		return true
	}
	return false
}

func isAlpha(s string) bool {
	for i := 0; i < len(s); i++ {
		if !(s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z') {
			return false
		}
	}
	return s != ""
}

func isPath(s string) bool {
	switch {
	case strings.HasPrefix(s, "/") && len(s) > 1 && s[1] != '/':
		return true
	case strings.HasPrefix(s, "./"), strings.HasPrefix(s, "../"), strings.HasPrefix(s, "~/"):
		return true
	case len(s) > 3 && s[1] == ':' && s[2] == '\\' && isAlpha(s[:1]):
		return true
	}
	return false
}

func isHexByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHexByte(s[i]) {
				return false
			}
		}
	}
	return true
}

func isIPv4(s string) bool {
	parts := 0
	for p := range strings.SplitSeq(s, ".") {
		parts++
		if p == "" || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return parts == 4
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// maskWords masks alphanumeric runs of s, keeping separators.
func maskWords(b *strings.Builder, s string) {
	for i := 0; i < len(s); {
		if !isWordByte(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isWordByte(s[j]) {
			j++
		}
		// A decimal number: digits '.' digits.
		if j < len(s)-1 && s[j] == '.' && allDigits(s[i:j]) && s[j+1] >= '0' && s[j+1] <= '9' {
			k := j + 1
			for k < len(s) && isWordByte(s[k]) {
				k++
			}
			if allDigits(s[j+1:k]) || unitSuffix(s[j+1:k]) {
				j = k
			}
		}
		b.WriteString(maskWord(s[i:j]))
		i = j
	}
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// unitSuffix reports whether s is digits followed by a short unit.
func unitSuffix(s string) bool {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i > 0 && len(s)-i <= 3 && isAlpha(s[i:]) || i == len(s) && i > 0
}

func maskWord(w string) string {
	if strings.HasPrefix(w, "0x") || strings.HasPrefix(w, "0X") {
		if len(w) > 2 && allHex(w[2:]) {
			return Hex
		}
	}
	hasDigit, hasLetter := false, false
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= '0' && c <= '9':
			hasDigit = true
		case c >= 0x80:
			return w
		default:
			hasLetter = true
		}
	}
	if !hasDigit {
		return w
	}
	if w[0] >= '0' && w[0] <= '9' {
		// Digits with an optional decimal part and a unit: 12, 1.5s, 300ms.
		i := 0
		for i < len(w) && (w[i] >= '0' && w[i] <= '9' || w[i] == '.') {
			i++
		}
		if i == len(w) || units[strings.ToLower(w[i:])] {
			if len(w) >= 16 && allHex(w) {
				return Hex
			}
			return Num + w[i:]
		}
	}
	// Hex ids: digits and a-f letters, at least one of each (or long).
	if allHex(w) && (hasLetter && len(w) >= 3 || len(w) >= 16) {
		return Hex
	}
	return w
}

// units are suffixes kept after a masked number.
var units = map[string]bool{
	"ns": true, "us": true, "ms": true, "s": true, "m": true, "h": true, "d": true,
	"b": true, "k": true, "kb": true, "mb": true, "gb": true, "kib": true, "mib": true, "gib": true,
	"x": true, "xx": true, "st": true, "nd": true, "rd": true, "th": true, "min": true,
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

// ID is the stable signature id of template within scope (application and
// environment, or source).
func ID(scope, template string) string {
	h := sha256.Sum256([]byte(scope + "\x00" + template))
	return hex.EncodeToString(h[:8])
}
