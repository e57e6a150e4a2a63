package monitor

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/monitor/internal/webhook"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// receiver is a webhook receiver with its delivery loop; its queue is its
// subject of the webhook stream (notify.go).
type receiver struct {
	spec   *monitorv1.Receiver // secrets included; never returned as is
	status *monitorv1.ReceiverStatus
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}
	// queued is about how many notifications wait (in the stream).
	queued atomic.Int64
	// sent is when each firing alert was last queued for this receiver.
	sent map[string]time.Time
}

// receiverQueue bounds the notifications waiting for one receiver.
const receiverQueue = 1024

// matches reports whether the receiver takes alerts with lbls.
func (rc *receiver) matches(lbls map[string]string) bool {
	for _, m := range rc.spec.GetMatchers() {
		lm, err := toMatcher(m)
		if err != nil || !lm.Matches(lbls[m.GetName()]) {
			return false
		}
	}
	return true
}

// repeatLoop resends still-firing, unacknowledged, unsilenced alerts to
// each receiver every repeat_interval (default 4h).
func (s *Service) repeatLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var due []notification
		s.mu.Lock()
		for _, rc := range s.receivers {
			if rc.spec.GetDisabled() {
				continue
			}
			every := 4 * time.Hour
			if d := rc.spec.GetRepeatInterval(); d != nil {
				every = d.AsDuration()
			}
			live := map[string]bool{}
			for _, id := range s.active {
				a := s.alerts[id]
				if _, here := s.ownsLocked(a.GetRuleGroup()); !here {
					continue // another replica evaluates it and repeats it
				}
				if a.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING || a.GetAcknowledgement() != nil ||
					len(s.silencedByLocked(a.GetLabels(), now)) > 0 || !rc.matches(a.GetLabels()) {
					continue
				}
				live[id] = true
				last, ok := rc.sent[id]
				if !ok {
					last = a.GetFiredAt().AsTime()
					if a.GetLastNotificationTime() != nil {
						last = a.GetLastNotificationTime().AsTime()
					}
					rc.sent[id] = last
				}
				if now.Sub(last) < every {
					continue
				}
				due = append(due, notification{receiver: rc.spec.GetName(), id: repeatID(a, rc.spec.GetName(), now),
					payload: s.payload(rc.spec, []*monitorv1.Alert{a}), retryFor: retryFor(rc.spec)})
				rc.sent[id] = now
			}
			for id := range rc.sent {
				if !live[id] {
					delete(rc.sent, id)
				}
			}
		}
		s.mu.Unlock()
		s.enqueue(ctx, due)
	}
}

// retryFor is how long a notification to r is retried; default 1h.
func retryFor(r *monitorv1.Receiver) time.Duration {
	if d := r.GetWebhook().GetRetryFor(); d != nil {
		return d.AsDuration()
	}
	return time.Hour
}

func validateReceiver(r *monitorv1.Receiver) error {
	verr := validation.New("receiver")
	if !validName(r.GetName()) {
		verr.Add("receiver.name", "%q must be a DNS-1123 label", r.GetName())
	}
	u, err := url.Parse(r.GetWebhook().GetUrl())
	if r.GetWebhook() == nil || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		verr.Add("receiver.webhook.url", "an absolute http:// or https:// URL is required")
	}
	for i, m := range r.GetMatchers() {
		if _, err := toMatcher(m); err != nil {
			verr.Add(fmt.Sprintf("receiver.matchers[%d]", i), "%v", err)
		}
	}
	if r.GetRepeatInterval() != nil && r.GetRepeatInterval().AsDuration() <= 0 {
		verr.Add("receiver.repeat_interval", "must be positive")
	}
	return verr.Err()
}

func receiverView(rc *receiver) *monitorv1.Receiver {
	out := proto.CloneOf(rc.spec)
	if out.Webhook != nil {
		out.Webhook.BearerToken, out.Webhook.HmacSecret = "", ""
	}
	out.Status = proto.CloneOf(rc.status)
	out.Status.Queued = uint32(max(rc.queued.Load(), 0))
	return out
}

// startReceiver registers r and starts its delivery loop (replacing the
// loop of an earlier version of r).
func (s *Service) startReceiver(r *monitorv1.Receiver) {
	client := s.http
	if r.GetWebhook().GetTlsSkipVerify() {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // asked for by the receiver
	}
	ctx, cancel := context.WithCancel(s.runCtx)
	rc := &receiver{spec: r, status: &monitorv1.ReceiverStatus{}, client: client, cancel: cancel, done: make(chan struct{}), sent: map[string]time.Time{}}
	s.mu.Lock()
	old := s.receivers[r.GetName()]
	s.receivers[r.GetName()] = rc
	s.mu.Unlock()
	if old != nil {
		old.cancel()
		<-old.done
		rc.queued.Store(old.queued.Load()) // the queue stays
	}
	s.goLoop(func() { s.deliverLoop(ctx, rc) })
}

// stopReceiver stops a deleted receiver's loop and drops its queue.
func (s *Service) stopReceiver(ctx context.Context, name string) error {
	s.stopReceiverLoop(name)
	return s.purgeWebhooks(ctx, name)
}

// stopReceiverLoop stops a receiver's delivery loop here (another replica
// deleted it, and drops its queue).
func (s *Service) stopReceiverLoop(name string) {
	s.mu.Lock()
	rc := s.receivers[name]
	delete(s.receivers, name)
	s.mu.Unlock()
	if rc != nil {
		rc.cancel()
		<-rc.done
	}
}

func webhookTarget(r *monitorv1.Receiver) webhook.Target {
	w := r.GetWebhook()
	return webhook.Target{URL: w.GetUrl(), Headers: w.GetHeaders(), BearerToken: w.GetBearerToken(), HMACSecret: w.GetHmacSecret(), Timeout: w.GetTimeout().AsDuration()}
}

// notifyReceivers queues a notification of tr of a for every matching
// receiver; it returns once they are stored.
func (s *Service) notifyReceivers(ctx context.Context, a *monitorv1.Alert, tr transition) {
	var ns []notification
	s.mu.Lock()
	for _, rc := range s.receivers {
		if rc.spec.GetDisabled() || (tr == transResolved && rc.spec.GetSkipResolved()) {
			continue
		}
		if !rc.matches(a.GetLabels()) {
			continue
		}
		ns = append(ns, notification{receiver: rc.spec.GetName(), id: notificationID(a, tr, rc.spec.GetName()),
			payload: s.payload(rc.spec, []*monitorv1.Alert{a}), retryFor: retryFor(rc.spec)})
		if tr == transFiring {
			rc.sent[a.GetId()] = time.Now()
		} else {
			delete(rc.sent, a.GetId())
		}
	}
	s.mu.Unlock()
	s.enqueue(ctx, ns)
}

// payload builds an Alertmanager-compatible body for alerts of one group.
func (s *Service) payload(r *monitorv1.Receiver, alerts []*monitorv1.Alert) *webhook.Payload {
	groupBy := r.GetGroupBy()
	if len(groupBy) == 0 {
		groupBy = []string{labels.AlertName}
	}
	p := &webhook.Payload{Version: "4", Receiver: r.GetName(), Status: "resolved", ExternalURL: s.cfg.ExternalURL,
		GroupLabels: map[string]string{}, CommonLabels: map[string]string{}, CommonAnnotations: map[string]string{}}
	if maxA := int(r.GetWebhook().GetMaxAlerts()); maxA > 0 && len(alerts) > maxA {
		p.TruncatedAlerts = len(alerts) - maxA
		alerts = alerts[:maxA]
	}
	for i, a := range alerts {
		st := "resolved"
		if a.GetState() != monitorv1.AlertState_ALERT_STATE_RESOLVED {
			st, p.Status = "firing", "firing"
		}
		wa := webhook.Alert{Status: st, Labels: a.GetLabels(), Annotations: a.GetAnnotations(), StartsAt: a.GetActiveAt().AsTime(),
			GeneratorURL: a.GetGeneratorUrl(), Fingerprint: a.GetFingerprint()}
		if a.GetFiredAt() != nil {
			wa.StartsAt = a.GetFiredAt().AsTime()
		}
		if a.GetResolvedAt() != nil {
			wa.EndsAt = a.GetResolvedAt().AsTime()
		}
		p.Alerts = append(p.Alerts, wa)
		if i == 0 {
			for k, v := range a.GetLabels() {
				p.CommonLabels[k] = v
			}
			for k, v := range a.GetAnnotations() {
				p.CommonAnnotations[k] = v
			}
			for _, k := range groupBy {
				if v, ok := a.GetLabels()[k]; ok {
					p.GroupLabels[k] = v
				}
			}
			continue
		}
		for k, v := range p.CommonLabels {
			if a.GetLabels()[k] != v {
				delete(p.CommonLabels, k)
			}
		}
		for k, v := range p.CommonAnnotations {
			if a.GetAnnotations()[k] != v {
				delete(p.CommonAnnotations, k)
			}
		}
	}
	keys := make([]string, 0, len(p.GroupLabels))
	for k := range p.GroupLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, p.GroupLabels[k]))
	}
	p.GroupKey = r.GetName() + ":{" + strings.Join(parts, ",") + "}"
	return p
}

// CreateReceiver registers a webhook receiver.
func (s *Service) CreateReceiver(ctx context.Context, req *monitorv1.CreateReceiverRequest) (*monitorv1.CreateReceiverResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	r := proto.CloneOf(req.GetReceiver())
	if r == nil {
		r = &monitorv1.Receiver{}
	}
	if err := validateReceiver(r); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	_, exists := s.receivers[r.GetName()]
	s.mu.Unlock()
	if exists {
		return nil, toStatus(fmt.Errorf("%w: receiver %q", ErrAlreadyExists, r.GetName()))
	}
	now := timestamppb.Now()
	r.CreateTime, r.UpdateTime, r.Status = now, now, nil
	if err := s.receiverKV.put(ctx, r.GetName(), r); err != nil {
		return nil, toStatus(err)
	}
	s.startReceiver(r)
	rc, _ := s.getReceiver(r.GetName())
	return &monitorv1.CreateReceiverResponse{Receiver: rc}, nil
}

func (s *Service) getReceiver(name string) (*monitorv1.Receiver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc, ok := s.receivers[name]
	if !ok {
		return nil, fmt.Errorf("%w: receiver %q", ErrNotFound, name)
	}
	return receiverView(rc), nil
}

// GetReceiver returns a receiver without its secrets.
func (s *Service) GetReceiver(_ context.Context, req *monitorv1.GetReceiverRequest) (*monitorv1.GetReceiverResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.getReceiver(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.GetReceiverResponse{Receiver: r}, nil
}

// ListReceivers lists receivers by name.
func (s *Service) ListReceivers(_ context.Context, req *monitorv1.ListReceiversRequest) (*monitorv1.ListReceiversResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	var all []*monitorv1.Receiver
	for _, rc := range s.receivers {
		all = append(all, receiverView(rc))
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *monitorv1.Receiver) int { return strings.Compare(a.GetName(), b.GetName()) })
	start, end, next, err := page(len(all), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListReceiversResponse{Receivers: all[start:end], NextPageToken: next}, nil
}

// UpdateReceiver changes the masked fields; empty secrets are kept.
func (s *Service) UpdateReceiver(ctx context.Context, req *monitorv1.UpdateReceiverRequest) (*monitorv1.UpdateReceiverResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	in := req.GetReceiver()
	s.mu.Lock()
	rc, ok := s.receivers[in.GetName()]
	var cur *monitorv1.Receiver
	if ok {
		cur = proto.CloneOf(rc.spec)
	}
	s.mu.Unlock()
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: receiver %q", ErrNotFound, in.GetName()))
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"webhook", "matchers", "group_by", "repeat_interval", "skip_resolved", "disabled"}
	}
	for _, p := range paths {
		switch p {
		case "webhook":
			w := proto.CloneOf(in.GetWebhook())
			if w != nil {
				if w.BearerToken == "" {
					w.BearerToken = cur.GetWebhook().GetBearerToken()
				}
				if w.HmacSecret == "" {
					w.HmacSecret = cur.GetWebhook().GetHmacSecret()
				}
			}
			cur.Webhook = w
		case "matchers":
			cur.Matchers = in.GetMatchers()
		case "group_by":
			cur.GroupBy = in.GetGroupBy()
		case "repeat_interval":
			cur.RepeatInterval = in.GetRepeatInterval()
		case "skip_resolved":
			cur.SkipResolved = in.GetSkipResolved()
		case "disabled":
			cur.Disabled = in.GetDisabled()
		default:
			return nil, toStatus(invalid("receiver", "update_mask", "%q cannot be updated", p))
		}
	}
	if err := validateReceiver(cur); err != nil {
		return nil, toStatus(err)
	}
	cur.UpdateTime = timestamppb.Now()
	if err := s.receiverKV.put(ctx, cur.GetName(), cur); err != nil {
		return nil, toStatus(err)
	}
	s.startReceiver(cur)
	r, _ := s.getReceiver(cur.GetName())
	return &monitorv1.UpdateReceiverResponse{Receiver: r}, nil
}

// DeleteReceiver removes a receiver and drops its queue.
func (s *Service) DeleteReceiver(ctx context.Context, req *monitorv1.DeleteReceiverRequest) (*monitorv1.DeleteReceiverResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.getReceiver(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.receiverKV.delete(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.stopReceiver(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.DeleteReceiverResponse{}, nil
}

// TestReceiver sends one synthetic firing alert, without retries.
func (s *Service) TestReceiver(ctx context.Context, req *monitorv1.TestReceiverRequest) (*monitorv1.TestReceiverResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	rc, ok := s.receivers[req.GetName()]
	var spec *monitorv1.Receiver
	var client *http.Client
	if ok {
		spec, client = proto.CloneOf(rc.spec), rc.client
	}
	s.mu.Unlock()
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: receiver %q", ErrNotFound, req.GetName()))
	}
	now := timestamppb.Now()
	a := &monitorv1.Alert{Id: "test", Fingerprint: "0000000000000000", State: monitorv1.AlertState_ALERT_STATE_FIRING,
		Labels: map[string]string{labels.AlertName: "OpsuiteTestAlert", "severity": "none"}, Annotations: map[string]string{"summary": "test notification from the opsuite monitor"},
		ActiveAt: now, FiredAt: now}
	r := webhook.Send(ctx, client, webhookTarget(spec), s.payload(spec, []*monitorv1.Alert{a}))
	resp := &monitorv1.TestReceiverResponse{Delivered: r.Err == nil, HttpStatus: uint32(r.Status), ResponseTime: durationpb.New(r.Duration)}
	if r.Err != nil {
		resp.Error = r.Err.Error()
	}
	return resp, nil
}
