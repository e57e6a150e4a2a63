package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor/internal/webhook"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Webhook notifications wait in a JetStream work-queue stream, one subject
// per receiver, until delivered: a notification queued before a restart
// (or a crash, or on another replica) is delivered after it. Each
// receiver's durable consumer hands out one notification at a time
// (MaxAckPending 1), so a receiver gets its notifications in order and a
// failing one holds back only its own. A failed attempt is negatively
// acknowledged with the backoff delay; the server keeps the delivery count,
// so attempts are bounded across restarts. A delivered notification's id is
// recorded before the acknowledgement, so one redelivered after a lost
// acknowledgement is dropped, not posted twice.
const (
	// StreamWebhooks holds notifications not yet delivered.
	StreamWebhooks = "OPSUITE_MONITOR_WEBHOOKS"
	// BucketWebhookSent records delivered notifications (24 h).
	BucketWebhookSent = "opsuite_monitor_webhook_sent"

	webhookSubjectPrefix = "opsuite.internal.monitor.webhook."
	// hdrNotification is the notification's id (also its Nats-Msg-Id).
	hdrNotification = "Opsuite-Notification-Id"
	// hdrRetryUntil is when retrying stops (RFC 3339).
	hdrRetryUntil = "Opsuite-Retry-Until"
	// webhookDuplicates is the window in which the stream drops a
	// notification queued again with the same id (a restart announcing a
	// transition once more).
	webhookDuplicates = 30 * time.Minute
)

func webhookSubject(receiver string) string { return webhookSubjectPrefix + receiver }

func webhookDurable(receiver string) string { return "monitor-webhook-" + receiver }

// openWebhookQueue ensures the stream and the delivered-notifications bucket.
func (s *Service) openWebhookQueue(ctx context.Context) error {
	var err error
	s.webhooks, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamWebhooks,
		Description: "monitor webhook notifications waiting for delivery",
		Subjects:    []string{webhookSubjectPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.cfg.StoreReplicas, 1),
		Duplicates:  webhookDuplicates,
		// As the in-memory queue did: a receiver holds at most
		// receiverQueue notifications; more are refused, not dropped old.
		MaxMsgsPerSubject:    receiverQueue,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
	})
	if err != nil {
		return fmt.Errorf("open stream %s: %w", StreamWebhooks, err)
	}
	s.webhookSent, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketWebhookSent,
		Description: "monitor webhook notifications delivered, against redelivery",
		TTL:         24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.cfg.StoreReplicas, 1),
	})
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", BucketWebhookSent, err)
	}
	return nil
}

// notification is one payload for one receiver.
type notification struct {
	receiver string
	id       string
	payload  *webhook.Payload
	retryFor time.Duration
}

// enqueue stores notifications durably; a receiver whose queue is full or
// a store that fails is noted in the receiver's status.
func (s *Service) enqueue(ctx context.Context, ns []notification) {
	for _, n := range ns {
		err := s.publishNotification(ctx, n)
		s.mu.Lock()
		if rc := s.receivers[n.receiver]; rc != nil {
			if err != nil {
				rc.status.LastError = "notification not queued: " + err.Error()
			} else {
				rc.queued.Add(1)
			}
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("queue webhook notification", "receiver", n.receiver, "notification", n.id, "err", err)
		}
	}
}

func (s *Service) publishNotification(ctx context.Context, n notification) error {
	body, err := webhook.Encode(n.payload)
	if err != nil {
		return err
	}
	m := nats.NewMsg(webhookSubject(n.receiver))
	m.Data = body
	m.Header.Set(hdrNotification, n.id)
	m.Header.Set(hdrRetryUntil, time.Now().Add(n.retryFor).UTC().Format(time.RFC3339Nano))
	if _, err := s.js.PublishMsg(ctx, m, jetstream.WithMsgID(n.id)); err != nil {
		return fmt.Errorf("publish to %s: %w", StreamWebhooks, err)
	}
	return nil
}

// deliverLoop delivers rc's notifications one at a time until ctx ends.
func (s *Service) deliverLoop(ctx context.Context, rc *receiver) {
	defer close(rc.done)
	cons, err := s.webhookConsumer(ctx, rc)
	if err != nil {
		return // ctx ended
	}
	if info := cons.CachedInfo(); info != nil {
		rc.queued.Store(int64(info.NumPending) + int64(info.NumAckPending))
	}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err == nil {
			s.deliverOne(ctx, rc, m)
		} else if ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn("fetch webhook notification", "receiver", rc.spec.GetName(), "err", err)
			sleepCtx(ctx, time.Second)
		}
		if info, err := cons.Info(ctx); err == nil {
			rc.queued.Store(int64(info.NumPending) + int64(info.NumAckPending))
		}
	}
}

// webhookConsumer creates (or updates) rc's durable consumer, retrying
// until it succeeds or ctx ends.
func (s *Service) webhookConsumer(ctx context.Context, rc *receiver) (jetstream.Consumer, error) {
	cc := jetstream.ConsumerConfig{
		Durable:       webhookDurable(rc.spec.GetName()),
		Description:   "webhook deliveries to receiver " + rc.spec.GetName(),
		FilterSubject: webhookSubject(rc.spec.GetName()),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.WebhookAckWait,
		MaxAckPending: 1,
		// Attempts are bounded by deliverOne, which terminates the
		// notification; the server must not drop it silently first.
		MaxDeliver: -1,
	}
	for {
		cons, err := s.webhooks.CreateOrUpdateConsumer(ctx, cc)
		if err == nil {
			return cons, nil
		}
		s.log.Warn("webhook consumer", "receiver", rc.spec.GetName(), "err", err)
		if !sleepCtx(ctx, time.Second) {
			return nil, ctx.Err()
		}
	}
}

// deliverOne makes one attempt at m and settles it: acknowledged when
// delivered (or delivered before), terminated when the answer is final, the
// attempts are used up or retry_for has passed, else handed back to be
// redelivered after the backoff.
func (s *Service) deliverOne(ctx context.Context, rc *receiver, m jetstream.Msg) {
	log := s.log.With("receiver", rc.spec.GetName(), "notification", m.Headers().Get(hdrNotification))
	id := m.Headers().Get(hdrNotification)
	attempt := uint64(1)
	if md, err := m.Metadata(); err == nil {
		attempt = md.NumDelivered
	}
	if id != "" {
		if _, err := s.webhookSent.Get(ctx, kvKey(id)); err == nil {
			settle(log, "delivered before", m.DoubleAck(ctx))
			return
		}
	}
	if attempt > uint64(s.cfg.WebhookMaxAttempts) {
		log.Warn("webhook notification dropped: attempts used up", "attempts", attempt-1)
		settle(log, "terminate", m.TermWithReason("attempts used up"))
		return
	}
	r := s.attempt(ctx, rc, m)
	s.mu.Lock()
	now := timestamppb.Now()
	rc.status.LastAttemptTime = now
	if r.Err != nil {
		rc.status.LastError = r.Err.Error()
		rc.status.ConsecutiveFailures++
	} else {
		rc.status.LastSuccessTime, rc.status.LastError, rc.status.ConsecutiveFailures = now, "", 0
	}
	s.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		// Stopping: hand it back at once, for whoever runs next.
		_ = m.Nak()
	case r.Err == nil:
		if id != "" {
			if _, err := s.webhookSent.Put(ctx, kvKey(id), nil); err != nil {
				log.Warn("record delivered webhook notification", "err", err)
			}
		}
		settle(log, "acknowledge", m.DoubleAck(ctx))
	case webhook.Permanent(r):
		log.Warn("webhook notification refused; not retried", "status", r.Status, "err", r.Err)
		settle(log, "terminate", m.TermWithReason(r.Err.Error()))
	default:
		wait := webhook.Backoff{Initial: s.cfg.WebhookBackoff, Max: s.cfg.WebhookMaxBackoff}.Delay(int(attempt) - 1)
		until, perr := time.Parse(time.RFC3339Nano, m.Headers().Get(hdrRetryUntil))
		if attempt >= uint64(s.cfg.WebhookMaxAttempts) || (perr == nil && time.Now().Add(wait).After(until)) {
			log.Warn("webhook delivery failed; giving up", "attempts", attempt, "err", r.Err)
			settle(log, "terminate", m.TermWithReason("gave up: "+r.Err.Error()))
			return
		}
		log.Debug("webhook delivery failed; will retry", "attempt", attempt, "in", wait, "err", r.Err)
		settle(log, "retry later", m.NakWithDelay(wait))
	}
}

// attempt posts m's payload once, telling the server the notification is
// in progress while the post lasts so it is not handed to anyone else.
func (s *Service) attempt(ctx context.Context, rc *receiver, m jetstream.Msg) webhook.Result {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(max(s.cfg.WebhookAckWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	r := webhook.Post(ctx, rc.client, webhookTarget(rc.spec), m.Data())
	close(done)
	wg.Wait()
	return r
}

// settle logs a failure to settle a notification with the server (it is
// then redelivered after the ack wait).
func settle(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Warn("webhook notification: "+what, "err", err)
	}
}

// purgeWebhooks drops a deleted receiver's consumer and queue.
func (s *Service) purgeWebhooks(ctx context.Context, receiver string) error {
	if err := s.webhooks.DeleteConsumer(ctx, webhookDurable(receiver)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete webhook consumer of %s: %w", receiver, err)
	}
	if err := s.webhooks.Purge(ctx, jetstream.WithPurgeSubject(webhookSubject(receiver))); err != nil {
		return fmt.Errorf("purge webhook queue of %s: %w", receiver, err)
	}
	return nil
}

// notificationID names the notification of transition tr of a for a
// receiver, the same whenever the transition is announced.
func notificationID(a *monitorv1.Alert, tr transition, receiver string) string {
	return eventID(a, tr) + "." + receiver
}

// repeatID names a repeat notification.
func repeatID(a *monitorv1.Alert, receiver string, at time.Time) string {
	return "monitor-alert-" + a.GetId() + "-repeat-" + strconv.FormatInt(at.UnixMilli(), 10) + "." + receiver
}

// sleepCtx waits d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
