// Package report builds the deployment report (the seed's
// generate_deployment_report, grown): overall health with its counts, each
// metric's current/average/min/max, the last alerts, the error summary, and
// recent rollouts and pipeline runs — gathered from whichever services run,
// with a section that could not be filled named in `unavailable` rather than
// left silently empty. It renders as JSON (the message), Markdown or HTML.
package report

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits of the report's sections.
const (
	DefaultWindow = 24 * time.Hour
	MaxWindow     = 90 * 24 * time.Hour
	recentAlerts  = 5
	recentItems   = 10
	maxSeries     = 50
	callTimeout   = 10 * time.Second
)

// Clients are the services the report reads; a nil one makes its sections
// unavailable.
type Clients struct {
	HealthChecker  hcv1.HealthCheckerServiceClient
	Monitor        monitorv1.MonitorServiceClient
	LogAggregator  lav1.LogAggregatorServiceClient
	Deployer       deployerv1.DeployerServiceClient
	PipelineRunner prv1.PipelineRunnerServiceClient
}

// Service implements opsuite.gateway.v1.ReportService.
type Service struct {
	gatewayv1.UnimplementedReportServiceServer
	c   Clients
	now func() time.Time
}

// New returns the report service reading from c.
func New(c Clients) *Service { return &Service{c: c, now: time.Now} }

// GetReport gathers the report now and renders it as asked.
func (s *Service) GetReport(ctx context.Context, req *gatewayv1.GetReportRequest) (*gatewayv1.GetReportResponse, error) {
	v := validation.New("request")
	window := DefaultWindow
	if w := req.GetWindow(); w != nil {
		if err := w.CheckValid(); err != nil || w.AsDuration() <= 0 || w.AsDuration() > MaxWindow {
			v.Add("window", "must be a positive duration of at most %s", MaxWindow)
		} else {
			window = w.AsDuration()
		}
	}
	if _, ok := gatewayv1.ReportFormat_name[int32(req.GetFormat())]; !ok {
		v.Add("format", "unknown format %d", req.GetFormat())
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	// The sections are read with the caller's own token.
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if a := md.Get("authorization"); len(a) == 1 {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a[0])
		}
	}
	r := s.Build(ctx, req.GetApplication(), window)
	resp := &gatewayv1.GetReportResponse{Report: r}
	switch req.GetFormat() {
	case gatewayv1.ReportFormat_REPORT_FORMAT_MARKDOWN:
		resp.Rendered, resp.ContentType = Markdown(r), "text/markdown; charset=utf-8"
	case gatewayv1.ReportFormat_REPORT_FORMAT_HTML:
		html, err := HTML(r)
		if err != nil {
			return nil, fmt.Errorf("render report: %w", err)
		}
		resp.Rendered, resp.ContentType = html, "text/html; charset=utf-8"
	}
	return resp, nil
}

// Build gathers every section concurrently; each section's failure is
// recorded in Unavailable with the reason.
func (s *Service) Build(ctx context.Context, app string, window time.Duration) *gatewayv1.Report {
	now := s.now()
	r := &gatewayv1.Report{GenerateTime: timestamppb.New(now), Window: durationpb.New(window), Unavailable: map[string]string{}}
	since := now.Add(-window)
	var mu sync.Mutex
	unavailable := func(section string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if st, ok := status.FromError(err); ok {
			r.Unavailable[section] = st.Code().String() + ": " + st.Message()
			return
		}
		r.Unavailable[section] = err.Error()
	}
	var wg sync.WaitGroup
	run := func(section string, ok bool, f func(ctx context.Context) error) {
		if !ok {
			unavailable(section, fmt.Errorf("the %s service does not run in this deployment", serviceOf(section)))
			return
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			if err := f(cctx); err != nil {
				unavailable(section, err)
			}
		})
	}
	run("health", s.c.HealthChecker != nil, func(ctx context.Context) error {
		h, err := s.c.HealthChecker.GetHealth(ctx, &hcv1.GetHealthRequest{})
		if err == nil {
			mu.Lock()
			r.Health = h
			mu.Unlock()
		}
		return err
	})
	run("metrics", s.c.Monitor != nil, func(ctx context.Context) error {
		m, err := s.metrics(ctx, window)
		mu.Lock()
		r.Metrics = m
		mu.Unlock()
		return err
	})
	run("recent_alerts", s.c.Monitor != nil, func(ctx context.Context) error {
		a, err := s.c.Monitor.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Since: timestamppb.New(since), Application: app, PageSize: recentAlerts, IncludeSilenced: true})
		if err == nil {
			mu.Lock()
			r.RecentAlerts = a.GetAlerts()
			mu.Unlock()
		}
		return err
	})
	run("errors", s.c.LogAggregator != nil, func(ctx context.Context) error {
		e, err := s.c.LogAggregator.GetErrorSummary(ctx, &lav1.GetErrorSummaryRequest{Window: durationpb.New(window), Application: app, SignatureLimit: recentItems})
		if err == nil {
			mu.Lock()
			r.Errors = e
			mu.Unlock()
		}
		return err
	})
	run("recent_rollouts", s.c.Deployer != nil, func(ctx context.Context) error {
		ro, err := s.rollouts(ctx, app, since)
		mu.Lock()
		r.RecentRollouts = ro
		mu.Unlock()
		return err
	})
	run("recent_runs", s.c.PipelineRunner != nil, func(ctx context.Context) error {
		runs, err := s.c.PipelineRunner.ListRuns(ctx, &prv1.ListRunsRequest{PageSize: recentItems})
		if err == nil {
			var kept []*prv1.Run
			for _, run := range runs.GetRuns() {
				if run.GetCreateTime().AsTime().After(since) {
					kept = append(kept, run)
				}
			}
			mu.Lock()
			r.RecentRuns = kept
			mu.Unlock()
		}
		return err
	})
	wg.Wait()
	if len(r.Unavailable) == 0 {
		r.Unavailable = nil
	}
	return r
}

func serviceOf(section string) string {
	switch section {
	case "health":
		return "health-checker"
	case "metrics", "recent_alerts":
		return "monitor"
	case "errors":
		return "log-aggregator"
	case "recent_rollouts":
		return "deployer"
	}
	return "pipeline-runner"
}

// metrics summarises every metric over the window, at most maxSeries
// series in all, by metric name.
func (s *Service) metrics(ctx context.Context, window time.Duration) ([]*monitorv1.SeriesSummary, error) {
	var names []string
	token := ""
	for {
		resp, err := s.c.Monitor.ListMetrics(ctx, &monitorv1.ListMetricsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, m := range resp.GetMetrics() {
			names = append(names, m.GetName())
		}
		if token = resp.GetNextPageToken(); token == "" || len(names) >= maxSeries {
			break
		}
	}
	sort.Strings(names)
	var out []*monitorv1.SeriesSummary
	for _, n := range names {
		if len(out) >= maxSeries {
			break
		}
		resp, err := s.c.Monitor.GetMetricSummary(ctx, &monitorv1.GetMetricSummaryRequest{Name: n, Window: durationpb.New(window), PageSize: int32(maxSeries - len(out))})
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetSeries()...)
	}
	return out, nil
}

// rollouts are the newest rollouts since a time over every application
// (or one), newest first.
func (s *Service) rollouts(ctx context.Context, app string, since time.Time) ([]*deployerv1.Rollout, error) {
	apps := []string{app}
	if app == "" {
		resp, err := s.c.Deployer.ListApplications(ctx, &deployerv1.ListApplicationsRequest{PageSize: 1000})
		if err != nil {
			return nil, err
		}
		apps = apps[:0]
		for _, a := range resp.GetApplications() {
			apps = append(apps, a.GetName())
		}
	}
	var out []*deployerv1.Rollout
	for _, a := range apps {
		resp, err := s.c.Deployer.ListRollouts(ctx, &deployerv1.ListRolloutsRequest{Application: a, PageSize: recentItems})
		if err != nil {
			return out, err
		}
		for _, ro := range resp.GetRollouts() {
			if ro.GetCreateTime().AsTime().After(since) {
				out = append(out, ro)
			}
		}
	}
	slices.SortFunc(out, func(a, b *deployerv1.Rollout) int {
		return b.GetCreateTime().AsTime().Compare(a.GetCreateTime().AsTime())
	})
	if len(out) > recentItems {
		out = out[:recentItems]
	}
	return out, nil
}

// labelString renders labels as {a="b", c="d"} in name order.
func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
