package eventbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// Delivery is an event handed to a consumer's handler.
type Delivery struct {
	ID      string
	Type    string
	Source  string
	Subject string
	Time    time.Time
	// Attempt counts deliveries of this message, starting at 1.
	Attempt uint64
	Data    []byte
	Header  nats.Header
}

// Decode unmarshals the payload into m.
func (d Delivery) Decode(m proto.Message) error {
	if err := proto.Unmarshal(d.Data, m); err != nil {
		return fmt.Errorf("eventbus: decode %s %s: %w", d.Type, d.ID, err)
	}
	return nil
}

// ErrPermanent marks a handler error that redelivery cannot fix; the event is
// terminated instead of retried.
var ErrPermanent = errors.New("permanent failure")

// ConsumerConfig describes a durable, explicit-ack consumer.
type ConsumerConfig struct {
	// Durable name, unique per consuming service and purpose.
	Durable string
	// FilterSubjects limit the events delivered; empty means all.
	FilterSubjects []string
	// MaxDeliver bounds redelivery of a failing event; default 5.
	MaxDeliver int
	// AckWait before an unacknowledged event is redelivered; default 30s.
	AckWait time.Duration
	// DeliverNew starts a new consumer at new events instead of the start of the stream.
	DeliverNew bool
}

// Handler processes one event. Returning nil acknowledges it; an error
// wrapping ErrPermanent terminates it; other errors redeliver it with backoff
// until MaxDeliver.
type Handler func(ctx context.Context, d Delivery) error

// Consume runs a durable consumer until ctx ends. Events already handled by
// this durable (by event id) are acknowledged without calling h again, so a
// redelivery after a crash between handling and ack is harmless.
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	if cfg.Durable == "" {
		return errors.New("eventbus: durable name is required")
	}
	maxDeliver := cfg.MaxDeliver
	if maxDeliver <= 0 {
		maxDeliver = 5
	}
	ackWait := cmp(cfg.AckWait, 30*time.Second)
	backoff := make([]time.Duration, 0, maxDeliver)
	for i := range maxDeliver {
		backoff = append(backoff, min(ackWait, time.Duration(1<<i)*time.Second))
	}
	cc := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxDeliver:     maxDeliver,
		BackOff:        backoff,
		FilterSubjects: cfg.FilterSubjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if cfg.DeliverNew {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, StreamName, cc)
	if err != nil {
		return fmt.Errorf("eventbus: consumer %s: %w", cfg.Durable, err)
	}
	cctx, err := cons.Consume(func(m jetstream.Msg) { b.handle(ctx, cfg.Durable, m, h) })
	if err != nil {
		return fmt.Errorf("eventbus: consume %s: %w", cfg.Durable, err)
	}
	<-ctx.Done()
	cctx.Drain()
	<-cctx.Closed()
	return nil
}

func (b *Bus) handle(ctx context.Context, durable string, m jetstream.Msg, h Handler) {
	d := Delivery{Data: m.Data(), Header: m.Headers(), Type: m.Subject()}
	if hd := m.Headers(); hd != nil {
		d.ID = hd.Get(HeaderID)
		d.Source = hd.Get(HeaderSource)
		d.Subject = hd.Get(HeaderSubject)
		if t, err := time.Parse(time.RFC3339Nano, hd.Get(HeaderTime)); err == nil {
			d.Time = t
		}
	}
	if md, err := m.Metadata(); err == nil {
		d.Attempt = md.NumDelivered
	}
	log := b.log.With("consumer", durable, "event_type", d.Type, "event_id", d.ID)
	if d.ID == "" {
		log.Warn("event without ce-id terminated")
		_ = m.Term()
		return
	}
	key := dedupeKey(durable, d.ID)
	if _, err := b.dedupe.Get(ctx, key); err == nil {
		_ = m.Ack()
		return
	}
	hctx := b.prop.Extract(ctx, headerCarrier(d.Header))
	if err := h(hctx, d); err != nil {
		if errors.Is(err, ErrPermanent) {
			log.Error("event handler failed permanently", "err", err)
			_ = m.TermWithReason(err.Error())
			return
		}
		delay := min(time.Duration(d.Attempt)*time.Second, 30*time.Second)
		log.Warn("event handler failed, will redeliver", "attempt", d.Attempt, "delay", delay, "err", err)
		_ = m.NakWithDelay(delay)
		return
	}
	if _, err := b.dedupe.Put(ctx, key, nil); err != nil {
		log.Warn("record handled event", "err", err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		log.Warn("ack event", "err", err)
	}
}

// dedupeKey builds a KV key from characters KV keys allow.
func dedupeKey(durable, id string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
				return r
			}
			return '_'
		}, s)
	}
	return clean(durable) + "." + clean(id)
}
