package logship

import (
	"context"
	"log/slog"
	"strings"
	"unicode/utf8"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"go.opentelemetry.io/otel/trace"
)

// Handler returns a slog.Handler that ships records at or above the
// configured level and passes every record to next (nil: ship only).
func (s *Shipper) Handler(next slog.Handler) slog.Handler {
	return &handler{s: s, next: next}
}

type handler struct {
	s      *Shipper
	next   slog.Handler
	prefix string      // open groups, "a.b."
	attrs  [][2]string // flattened WithAttrs, keys with their prefix
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.s.level.Level() || h.next != nil && h.next.Enabled(ctx, l)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		err = h.next.Handle(ctx, r)
	}
	if r.Level < h.s.level.Level() {
		return err
	}
	e := &lav1.LogEntry{Level: Level(r.Level), Message: r.Message}
	if !r.Time.IsZero() {
		e.TimeUnixNano = r.Time.UnixNano()
	}
	if limit := h.s.cfg.MaxMessageBytes; len(e.Message) > limit {
		e.OriginalSize = uint32(min(len(e.Message), 1<<31))
		e.Truncated = true
		n := limit
		for n > 0 && !utf8.RuneStart(e.Message[n]) {
			n--
		}
		e.Message = e.Message[:n]
	}
	e.Message = strings.ToValidUTF8(e.Message, "\uFFFD")
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		e.TraceId, e.SpanId = sc.TraceID().String(), sc.SpanID().String()
	}
	if len(h.attrs) > 0 || r.NumAttrs() > 0 {
		md := make(map[string]string, len(h.attrs)+r.NumAttrs())
		for _, kv := range h.attrs {
			md[kv[0]] = kv[1]
		}
		r.Attrs(func(a slog.Attr) bool {
			flatten(md, h.prefix, a)
			return true
		})
		e.Metadata = md
	}
	h.s.enqueue(e)
	return err
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &handler{s: h.s, prefix: h.prefix, attrs: h.attrs[:len(h.attrs):len(h.attrs)]}
	if h.next != nil {
		n.next = h.next.WithAttrs(as)
	}
	md := map[string]string{}
	for _, a := range as {
		flatten(md, h.prefix, a)
	}
	for k, v := range md {
		n.attrs = append(n.attrs, [2]string{k, v})
	}
	return n
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := &handler{s: h.s, prefix: h.prefix + name + ".", attrs: h.attrs}
	if h.next != nil {
		n.next = h.next.WithGroup(name)
	}
	return n
}

// flatten writes a into md, nested groups joined with ".".
func flatten(md map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range v.Group() {
			flatten(md, p, ga)
		}
		return
	}
	if a.Key == "" {
		return
	}
	const maxValue = 8 << 10
	s := v.String()
	if len(s) > maxValue {
		s = s[:maxValue]
	}
	md[strings.ToValidUTF8(prefix+a.Key, "\uFFFD")] = strings.ToValidUTF8(s, "\uFFFD")
}

// Level maps a slog level to the aggregator's: below Debug is TRACE, Error+4
// and above is FATAL.
func Level(l slog.Level) lav1.LogLevel {
	switch {
	case l < slog.LevelDebug:
		return lav1.LogLevel_LOG_LEVEL_TRACE
	case l < slog.LevelInfo:
		return lav1.LogLevel_LOG_LEVEL_DEBUG
	case l < slog.LevelWarn:
		return lav1.LogLevel_LOG_LEVEL_INFO
	case l < slog.LevelError:
		return lav1.LogLevel_LOG_LEVEL_WARN
	case l < slog.LevelError+4:
		return lav1.LogLevel_LOG_LEVEL_ERROR
	}
	return lav1.LogLevel_LOG_LEVEL_FATAL
}
