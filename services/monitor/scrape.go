package monitor

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/prometheus/common/model"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/scrape"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// scrapeTarget is a target with its scrape loop.
type scrapeTarget struct {
	spec   *monitorv1.ScrapeTarget
	status *monitorv1.ScrapeTargetStatus
	// loop scrapes the target; nil unless this replica holds its shard.
	loop *loopHandle
}

func (s *Service) validateScrapeTarget(t *monitorv1.ScrapeTarget) error {
	verr := validation.New("scrape target")
	if !validName(t.GetName()) {
		verr.Add("scrape_target.name", "%q must be a DNS-1123 label", t.GetName())
	}
	u, err := url.Parse(t.GetUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		verr.Add("scrape_target.url", "an absolute http:// or https:// URL is required")
	}
	if t.GetInterval() != nil && t.GetInterval().AsDuration() < time.Second {
		verr.Add("scrape_target.interval", "must be at least 1s")
	}
	if t.GetTimeout() != nil && t.GetTimeout().AsDuration() <= 0 {
		verr.Add("scrape_target.timeout", "must be positive")
	}
	for k := range t.GetLabels() {
		if !ingest.ValidLabelName(k) || strings.HasPrefix(k, "__") {
			verr.Add(fmt.Sprintf("scrape_target.labels[%q]", k), "label name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")
		}
	}
	return verr.Err()
}

func scrapeView(st *scrapeTarget) *monitorv1.ScrapeTarget {
	out := proto.CloneOf(st.spec)
	out.BearerToken = ""
	out.Status = proto.CloneOf(st.status)
	return out
}

// startScrape registers t and (unless disabled) starts its loop when this
// replica holds its shard.
func (s *Service) startScrape(t *monitorv1.ScrapeTarget) {
	st := &scrapeTarget{spec: t, status: &monitorv1.ScrapeTargetStatus{Health: monitorv1.ScrapeHealth_SCRAPE_HEALTH_UNKNOWN}}
	s.mu.Lock()
	old := s.targets[t.GetName()]
	s.targets[t.GetName()] = st
	var oldLoop *loopHandle
	if old != nil {
		oldLoop, old.loop = old.loop, nil
	}
	s.mu.Unlock()
	oldLoop.stop()
	s.mu.Lock()
	if ctx, ok := s.ownsLocked(t.GetName()); ok && s.targets[t.GetName()] == st && st.loop == nil && !t.GetDisabled() {
		s.startScrapeLocked(ctx, st)
	}
	s.mu.Unlock()
}

// startScrapeLocked starts st's loop under ctx; s.mu must be held.
func (s *Service) startScrapeLocked(ctx context.Context, st *scrapeTarget) {
	st.loop = s.startLoop(ctx, func(ctx context.Context) { s.scrapeLoop(ctx, st) })
}

func (s *Service) stopScrape(name string) {
	s.mu.Lock()
	st := s.targets[name]
	delete(s.targets, name)
	var loop *loopHandle
	if st != nil {
		loop, st.loop = st.loop, nil
	}
	s.mu.Unlock()
	loop.stop()
}

func (s *Service) scrapeLoop(ctx context.Context, st *scrapeTarget) {
	interval := 15 * time.Second
	if st.spec.GetInterval() != nil {
		interval = st.spec.GetInterval().AsDuration()
	}
	client := s.http
	if st.spec.GetTlsSkipVerify() {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // asked for by the target
	}
	u, _ := url.Parse(st.spec.GetUrl())
	lbls := map[string]string{"job": st.spec.GetName(), "instance": u.Host}
	for k, v := range st.spec.GetLabels() {
		lbls[k] = v
	}
	target := scrape.Target{URL: st.spec.GetUrl(), BearerToken: st.spec.GetBearerToken(), Labels: lbls,
		HonorLabels: st.spec.GetHonorLabels(), SampleLimit: int(st.spec.GetSampleLimit())}
	timeout := scrape.Timeout(interval, st.spec.GetTimeout().AsDuration())
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s.scrapeOnce(ctx, client, st, target, timeout)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// scrapeOnce fetches, stores and records the `up` and
// `scrape_duration_seconds` series, as Prometheus does.
func (s *Service) scrapeOnce(ctx context.Context, client *http.Client, st *scrapeTarget, target scrape.Target, timeout time.Duration) {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	res, err := scrape.Fetch(sctx, client, target, start.UnixMilli())
	cancel()
	if ctx.Err() != nil {
		return
	}
	dur := time.Since(start)
	var stored uint64
	var shared []ingest.Series
	if err == nil {
		app := s.db.Appender(ctx)
		described := map[string]bool{}
		for _, smp := range res.Samples {
			if _, aerr := app.Append(0, smp.Labels, smp.T, smp.V); aerr == nil {
				stored++
				ser := seriesOf(smp.Labels, smp.T, smp.V)
				if name := smp.Labels.Get(model.MetricNameLabel); !described[name] {
					described[name] = true
					m := res.Meta[name]
					ser.Type, ser.Help, ser.Unit = m.Type, m.Help, m.Unit
				}
				shared = append(shared, ser)
			}
		}
		if cerr := app.Commit(); cerr != nil {
			err = fmt.Errorf("store samples: %w", cerr)
			shared = nil
		}
		for name, m := range res.Meta {
			s.db.SetMetadata(name, tsstore.Metadata(m))
		}
	}
	up := 1.0
	if err != nil {
		up = 0
	}
	b := labels.NewBuilder(labels.EmptyLabels())
	for k, v := range target.Labels {
		b.Set(k, v)
	}
	app := s.db.Appender(ctx)
	b.Set(model.MetricNameLabel, "up")
	upLabels := b.Labels()
	_, _ = app.Append(0, upLabels, start.UnixMilli(), up)
	b.Set(model.MetricNameLabel, "scrape_duration_seconds")
	durLabels := b.Labels()
	_, _ = app.Append(0, durLabels, start.UnixMilli(), dur.Seconds())
	if app.Commit() == nil {
		shared = append(shared, seriesOf(upLabels, start.UnixMilli(), up), seriesOf(durLabels, start.UnixMilli(), dur.Seconds()))
	}
	s.share(ctx, shared)

	s.mu.Lock()
	defer s.mu.Unlock()
	st.status.LastScrapeTime = timestamppb.New(start)
	st.status.LastScrapeDuration = durationpb.New(dur)
	st.status.LastSampleCount = stored
	if err != nil {
		st.status.Health, st.status.LastError = monitorv1.ScrapeHealth_SCRAPE_HEALTH_DOWN, err.Error()
		return
	}
	st.status.Health, st.status.LastError = monitorv1.ScrapeHealth_SCRAPE_HEALTH_UP, ""
}

// CreateScrapeTarget registers an endpoint to scrape.
func (s *Service) CreateScrapeTarget(ctx context.Context, req *monitorv1.CreateScrapeTargetRequest) (*monitorv1.CreateScrapeTargetResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	t := proto.CloneOf(req.GetScrapeTarget())
	if t == nil {
		t = &monitorv1.ScrapeTarget{}
	}
	if err := s.validateScrapeTarget(t); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	_, exists := s.targets[t.GetName()]
	s.mu.Unlock()
	if exists {
		return nil, toStatus(fmt.Errorf("%w: scrape target %q", ErrAlreadyExists, t.GetName()))
	}
	now := timestamppb.Now()
	t.CreateTime, t.UpdateTime, t.Status = now, now, nil
	if err := s.targetsKV.put(ctx, t.GetName(), t); err != nil {
		return nil, toStatus(err)
	}
	s.startScrape(t)
	v, _ := s.getScrapeTarget(t.GetName())
	return &monitorv1.CreateScrapeTargetResponse{ScrapeTarget: v}, nil
}

func (s *Service) getScrapeTarget(name string) (*monitorv1.ScrapeTarget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.targets[name]
	if !ok {
		return nil, fmt.Errorf("%w: scrape target %q", ErrNotFound, name)
	}
	return scrapeView(st), nil
}

// GetScrapeTarget returns a target with its last scrape.
func (s *Service) GetScrapeTarget(_ context.Context, req *monitorv1.GetScrapeTargetRequest) (*monitorv1.GetScrapeTargetResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	t, err := s.getScrapeTarget(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.GetScrapeTargetResponse{ScrapeTarget: t}, nil
}

// ListScrapeTargets lists targets by name.
func (s *Service) ListScrapeTargets(_ context.Context, req *monitorv1.ListScrapeTargetsRequest) (*monitorv1.ListScrapeTargetsResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	var all []*monitorv1.ScrapeTarget
	for _, st := range s.targets {
		all = append(all, scrapeView(st))
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *monitorv1.ScrapeTarget) int { return strings.Compare(a.GetName(), b.GetName()) })
	start, end, next, err := page(len(all), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListScrapeTargetsResponse{ScrapeTargets: all[start:end], NextPageToken: next}, nil
}

// UpdateScrapeTarget changes the masked fields and restarts the loop.
func (s *Service) UpdateScrapeTarget(ctx context.Context, req *monitorv1.UpdateScrapeTargetRequest) (*monitorv1.UpdateScrapeTargetResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	in := req.GetScrapeTarget()
	s.mu.Lock()
	st, ok := s.targets[in.GetName()]
	var cur *monitorv1.ScrapeTarget
	if ok {
		cur = proto.CloneOf(st.spec)
	}
	s.mu.Unlock()
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: scrape target %q", ErrNotFound, in.GetName()))
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"url", "interval", "timeout", "labels", "honor_labels", "sample_limit", "bearer_token", "tls_skip_verify", "disabled"}
	}
	for _, p := range paths {
		switch p {
		case "url":
			cur.Url = in.GetUrl()
		case "interval":
			cur.Interval = in.GetInterval()
		case "timeout":
			cur.Timeout = in.GetTimeout()
		case "labels":
			cur.Labels = in.GetLabels()
		case "honor_labels":
			cur.HonorLabels = in.GetHonorLabels()
		case "sample_limit":
			cur.SampleLimit = in.GetSampleLimit()
		case "bearer_token":
			if in.GetBearerToken() != "" {
				cur.BearerToken = in.GetBearerToken()
			}
		case "tls_skip_verify":
			cur.TlsSkipVerify = in.GetTlsSkipVerify()
		case "disabled":
			cur.Disabled = in.GetDisabled()
		default:
			return nil, toStatus(invalid("scrape target", "update_mask", "%q cannot be updated", p))
		}
	}
	if err := s.validateScrapeTarget(cur); err != nil {
		return nil, toStatus(err)
	}
	cur.UpdateTime = timestamppb.Now()
	if err := s.targetsKV.put(ctx, cur.GetName(), cur); err != nil {
		return nil, toStatus(err)
	}
	s.startScrape(cur)
	v, _ := s.getScrapeTarget(cur.GetName())
	return &monitorv1.UpdateScrapeTargetResponse{ScrapeTarget: v}, nil
}

// DeleteScrapeTarget stops scraping; stored samples stay.
func (s *Service) DeleteScrapeTarget(ctx context.Context, req *monitorv1.DeleteScrapeTargetRequest) (*monitorv1.DeleteScrapeTargetResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.getScrapeTarget(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.targetsKV.delete(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	s.stopScrape(req.GetName())
	return &monitorv1.DeleteScrapeTargetResponse{}, nil
}

// hostMetricsLoop records this host's CPU and memory usage, labelled with
// the replica, and hands them to the other replicas like any sample.
func (s *Service) hostMetricsLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HostMetricsInterval)
	defer t.Stop()
	prev, _ := readCPU()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixMilli()
		var series []ingest.Series
		if cur, err := readCPU(); err == nil {
			if total := cur.total - prev.total; total > 0 {
				usage := 1 - float64(cur.idle-prev.idle)/float64(total)
				series = append(series, seriesOf(labels.FromStrings(model.MetricNameLabel, "opsuite_host_cpu_usage_ratio", "replica", s.cfg.ReplicaID), now, math.Max(0, usage)))
			}
			prev = cur
		}
		if ratio, err := readMemUsage(); err == nil {
			series = append(series, seriesOf(labels.FromStrings(model.MetricNameLabel, "opsuite_host_memory_usage_ratio", "replica", s.cfg.ReplicaID), now, ratio))
		}
		app := s.db.Appender(ctx)
		for _, ser := range series {
			_, _ = app.Append(0, ser.Labels, ser.T[0], ser.V[0])
		}
		if err := app.Commit(); err != nil {
			s.log.Debug("host metrics", "err", err)
			continue
		}
		s.share(ctx, series)
	}
}
