// Package eventbus publishes and consumes the suite's domain events on NATS
// JetStream. Events carry CloudEvents 1.0 attributes as ce-* headers, a
// protobuf body, Nats-Msg-Id set to the event id for broker-side
// de-duplication, and W3C trace context.
package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
)

// StreamName is the JetStream stream holding suite events.
const StreamName = "OPSUITE_EVENTS"

// Subjects are the event domains the stream captures. Log ingestion
// (opsuite.logs.>) has a stream of its own.
var Subjects = []string{
	"opsuite.health.>",
	"opsuite.deploy.>",
	"opsuite.pipeline.>",
	"opsuite.monitor.>",
	"opsuite.logaggregator.>",
	"opsuite.audit.>",
}

// CloudEvents header names.
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderTime        = "ce-time"
	HeaderSubject     = "ce-subject"
	HeaderDataSchema  = "ce-dataschema"
	HeaderContentType = "content-type"
	contentType       = "application/protobuf"
)

// Config tunes the events stream.
type Config struct {
	// Source is the CloudEvents source of events this bus publishes, e.g.
	// "opsuite/healthchecker".
	Source string
	// Replicas of the stream; 1 for a single server, 3 in a cluster.
	Replicas int
	// MaxAge of kept events; default 7 days.
	MaxAge time.Duration
	// MaxBytes kept; default 1 GiB.
	MaxBytes int64
	// DuplicateWindow for Nats-Msg-Id de-duplication; default 2 minutes.
	DuplicateWindow time.Duration
}

// Bus publishes events and runs durable consumers.
type Bus struct {
	js     jetstream.JetStream
	source string
	prop   propagation.TextMapPropagator
	log    *slog.Logger
	dedupe jetstream.KeyValue
}

// New ensures the events stream exists (creating or updating it) and returns
// a Bus publishing with cfg.Source.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Bus, error) {
	if cfg.Source == "" {
		return nil, errors.New("eventbus: source is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventbus: jetstream: %w", err)
	}
	sc := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Opsuite domain events",
		Subjects:    Subjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.Replicas, 1),
		MaxAge:      cmp(cfg.MaxAge, 7*24*time.Hour),
		MaxBytes:    cmp(cfg.MaxBytes, 1<<30),
		Duplicates:  cmp(cfg.DuplicateWindow, 2*time.Minute),
		Discard:     jetstream.DiscardOld,
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return nil, fmt.Errorf("eventbus: ensure stream %s: %w", StreamName, err)
	}
	dedupe, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      "opsuite_event_dedupe",
		Description: "event ids already handled, per durable consumer",
		TTL:         24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("eventbus: ensure dedupe bucket: %w", err)
	}
	return &Bus{
		js:     js,
		source: cfg.Source,
		prop:   propagation.TraceContext{},
		log:    log,
		dedupe: dedupe,
	}, nil
}

func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Event is one event to publish.
type Event struct {
	// Type is the CloudEvents type and the NATS subject, e.g.
	// "opsuite.health.target.changed".
	Type string
	// Subject names the entity the event is about (ce-subject), e.g. a target name.
	Subject string
	// ID is the event id; generated when empty. Publishing the same id twice
	// within the duplicate window stores it once.
	ID string
	// Time of the event; now when zero.
	Time time.Time
	// Data is the protobuf payload.
	Data proto.Message
}

// Publish stores the event in the stream and returns its id once JetStream
// has acknowledged it.
func (b *Bus) Publish(ctx context.Context, ev Event) (string, error) {
	if ev.Type == "" || ev.Data == nil {
		return "", errors.New("eventbus: event type and data are required")
	}
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	body, err := proto.Marshal(ev.Data)
	if err != nil {
		return "", fmt.Errorf("eventbus: marshal %s: %w", ev.Type, err)
	}
	msg := &nats.Msg{Subject: ev.Type, Data: body, Header: nats.Header{}}
	msg.Header.Set(HeaderSpecVersion, "1.0")
	msg.Header.Set(HeaderID, ev.ID)
	msg.Header.Set(HeaderSource, b.source)
	msg.Header.Set(HeaderType, ev.Type)
	msg.Header.Set(HeaderTime, ev.Time.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(HeaderContentType, contentType)
	msg.Header.Set(HeaderDataSchema, string(ev.Data.ProtoReflect().Descriptor().FullName()))
	if ev.Subject != "" {
		msg.Header.Set(HeaderSubject, ev.Subject)
	}
	b.prop.Inject(ctx, headerCarrier(msg.Header))
	if _, err := b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
		return "", fmt.Errorf("eventbus: publish %s %s: %w", ev.Type, ev.ID, err)
	}
	return ev.ID, nil
}

// headerCarrier adapts nats.Header for OpenTelemetry propagation, keeping
// header names exactly as given.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = []string{value} }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
