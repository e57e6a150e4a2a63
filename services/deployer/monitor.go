package deployer

import (
	"context"
	"fmt"
	"strings"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// monitorQuerier evaluates analysis queries with the monitor service.
type monitorQuerier struct {
	c monitorv1.MonitorServiceClient
}

// QueryValue evaluates an instant query; the value is the first series'
// latest point (a query for analysis should return one series, e.g. a sum).
func (m monitorQuerier) QueryValue(ctx context.Context, query string) (float64, bool, error) {
	resp, err := m.c.Query(ctx, &monitorv1.QueryRequest{Query: query, Timeout: nil})
	if err != nil {
		return 0, false, err
	}
	for _, s := range resp.GetResult().GetSeries() {
		if pts := s.GetPoints(); len(pts) > 0 {
			return pts[len(pts)-1].GetValue(), true, nil
		}
	}
	return 0, false, nil
}

// monitorAlerts answers the rollback policy's firing-alert trigger with the
// monitor's IsAlertFiring.
type monitorAlerts struct {
	c monitorv1.MonitorServiceClient
	// match are extra label matchers from the rollback policy.
	match func(app, env string) []string
}

func (m monitorAlerts) Firing(ctx context.Context, app, env string, since time.Time) (bool, string, error) {
	req := &monitorv1.IsAlertFiringRequest{Application: app, Environment: env, Since: timestamppb.New(since)}
	if m.match != nil {
		req.Matchers = m.match(app, env)
	}
	resp, err := m.c.IsAlertFiring(ctx, req)
	if err != nil {
		return false, "", err
	}
	if !resp.GetFiring() {
		return false, "", nil
	}
	names := make([]string, 0, len(resp.GetAlerts()))
	for _, a := range resp.GetAlerts() {
		names = append(names, alertName(a))
	}
	return true, fmt.Sprintf("alert %s fired for %s/%s since the rollout started", strings.Join(names, ", "), app, env), nil
}

func alertName(a *monitorv1.Alert) string {
	if n := a.GetLabels()["alertname"]; n != "" {
		return n
	}
	return a.GetId()
}
