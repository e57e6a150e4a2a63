package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine"))
}

// newBus starts a real embedded NATS server and returns a bus on it.
func newBus(t *testing.T, source string) (*eventbus.Bus, *nats.Conn) {
	t.Helper()
	nc := natstest.Start(t, "").Conn
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: source}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return bus, nc
}

func event(name string) eventbus.Event {
	return eventbus.Event{
		Type:    "opsuite.health.target.removed",
		Subject: name,
		Data:    &eventsv1.HealthTargetRemoved{Name: name},
	}
}

func TestPublishSetsCloudEventsHeadersAndTraceContext(t *testing.T) {
	bus, nc := newBus(t, "opsuite/test")
	sub, err := nc.SubscribeSync("opsuite.health.>")
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	id, err := bus.Publish(ctx, event("web"))
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          id,
		"ce-source":      "opsuite/test",
		"ce-type":        "opsuite.health.target.removed",
		"ce-subject":     "web",
		"content-type":   "application/protobuf",
		"ce-dataschema":  "opsuite.events.v1.HealthTargetRemoved",
		"Nats-Msg-Id":    id,
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("ce-time")); err != nil {
		t.Errorf("ce-time %q: %v", m.Header.Get("ce-time"), err)
	}
	carrier := propagation.MapCarrier{"traceparent": m.Header.Get("traceparent")}
	got := propagation.TraceContext{}.Extract(context.Background(), carrier)
	if sc := trace.SpanContextFromContext(got); sc.TraceID() != span.SpanContext().TraceID() {
		t.Errorf("traceparent header %q carries trace %s, want %s", m.Header.Get("traceparent"), sc.TraceID(), span.SpanContext().TraceID())
	}
}

func TestPublishSameIDIsStoredOnce(t *testing.T) {
	bus, nc := newBus(t, "opsuite/test")
	ctx := context.Background()
	ev := event("web")
	ev.ID = "fixed-id-1"
	for range 3 {
		if _, err := bus.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, eventbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestPublishRejectsIncompleteEvents(t *testing.T) {
	bus, _ := newBus(t, "opsuite/test")
	if _, err := bus.Publish(context.Background(), eventbus.Event{Type: "opsuite.health.x"}); err == nil {
		t.Fatal("published an event without data")
	}
	if _, err := bus.Publish(context.Background(), eventbus.Event{Type: "not.captured.subject", Data: &eventsv1.HealthTargetRemoved{}}); err == nil {
		t.Fatal("published outside the stream's subjects without an error")
	}
}

func TestConsumeDeliversOnceAcrossRestartsAndRetriesFailures(t *testing.T) {
	bus, _ := newBus(t, "opsuite/test")
	ctx := context.Background()
	for i := range 5 {
		ev := event(fmt.Sprintf("t%d", i))
		ev.ID = fmt.Sprintf("ev-%d", i)
		if _, err := bus.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var failedOnce atomic.Bool
	all := make(chan struct{})
	handler := func(_ context.Context, d eventbus.Delivery) error {
		var body eventsv1.HealthTargetRemoved
		if err := d.Decode(&body); err != nil {
			return err
		}
		if d.ID == "ev-2" && failedOnce.CompareAndSwap(false, true) {
			return errors.New("transient failure")
		}
		mu.Lock()
		defer mu.Unlock()
		seen[d.ID]++
		if len(seen) == 5 {
			select {
			case <-all:
			default:
				close(all)
			}
		}
		return nil
	}
	cfg := eventbus.ConsumerConfig{Durable: "test-consumer", FilterSubjects: []string{"opsuite.health.>"}, AckWait: 2 * time.Second}
	runConsumer(t, bus, cfg, handler, all)

	// A second run of the same durable gets nothing new.
	again := make(chan struct{})
	runConsumerFor(t, bus, cfg, handler, again, 500*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i := range 5 {
		if n := seen[fmt.Sprintf("ev-%d", i)]; n != 1 {
			t.Errorf("ev-%d handled %d times, want 1", i, n)
		}
	}
}

func TestConsumeTerminatesPermanentFailures(t *testing.T) {
	bus, _ := newBus(t, "opsuite/test")
	ctx := context.Background()
	ev := event("bad")
	ev.ID = "poison"
	if _, err := bus.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	done := make(chan struct{})
	handler := func(context.Context, eventbus.Delivery) error {
		if calls.Add(1) == 1 {
			close(done)
		}
		return fmt.Errorf("cannot apply: %w", eventbus.ErrPermanent)
	}
	cfg := eventbus.ConsumerConfig{Durable: "poison-consumer", AckWait: time.Second}
	runConsumer(t, bus, cfg, handler, done)
	runConsumerFor(t, bus, cfg, handler, make(chan struct{}), 1500*time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("permanent failure handled %d times, want 1", n)
	}
}

func runConsumer(t *testing.T, bus *eventbus.Bus, cfg eventbus.ConsumerConfig, h eventbus.Handler, until chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- bus.Consume(ctx, cfg, h) }()
	select {
	case <-until:
	case <-time.After(15 * time.Second):
		t.Error("consumer did not finish within 15s")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func runConsumerFor(t *testing.T, bus *eventbus.Bus, cfg eventbus.ConsumerConfig, h eventbus.Handler, _ chan struct{}, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := bus.Consume(ctx, cfg, h); err != nil {
		t.Fatal(err)
	}
}
