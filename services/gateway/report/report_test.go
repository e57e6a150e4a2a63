package report_test

import (
	"context"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/gateway/report"
	"github.com/opsuite/opsuite/services/healthchecker/checkertest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func sample() *gatewayv1.Report {
	now := timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	return &gatewayv1.Report{
		GenerateTime: now, Window: durationpb.New(24 * time.Hour),
		Health:       &hcv1.GetHealthResponse{Health: hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED, Total: 3, Passing: 2, Critical: 1},
		Metrics:      []*monitorv1.SeriesSummary{{Labels: map[string]string{"__name__": "cpu_usage", "host": "a"}, Current: 0.5, Avg: 0.4, Min: 0.1, Max: 0.9, Count: 12}},
		RecentAlerts: []*monitorv1.Alert{{Labels: map[string]string{"alertname": "HighCPU", "app": "shop"}, State: monitorv1.AlertState_ALERT_STATE_FIRING, Value: 0.95, FiredAt: now}},
		Errors: &lav1.GetErrorSummaryResponse{TotalCount: 7,
			Sources:    []*lav1.SourceErrorCount{{Source: "apps/shop/prod", Count: 7}},
			Signatures: []*lav1.ErrorSignature{{Template: "db timeout after <num>ms | retry <num>", Count: 7, FirstSeenRevision: "3"}}},
		RecentRollouts: []*deployerv1.Rollout{{Application: "shop", Environment: "prod", FromRevision: 2, ToRevision: 3,
			Strategy: &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{}}},
			Phase:    deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, Message: "rolled back to revision 2: <script>alert(1)</script>",
			Duration: durationpb.New(3 * time.Second), FailedRequests: 4, TotalRequests: 900}},
		Unavailable: map[string]string{"recent_runs": "the pipeline-runner service does not run in this deployment"},
	}
}

func TestMarkdownHasEverySection(t *testing.T) {
	md := report.Markdown(sample())
	for _, want := range []string{
		"Overall health: DEGRADED", "Health checks: 3, healthy: 2",
		`| cpu_usage{host="a"} | 0.5 | 0.4 | 0.1 | 0.9 | 12 |`,
		"| HighCPU | FIRING | 0.95 |", "Errors in the window: 7",
		`db timeout after <num>ms \| retry <num>`, // a pipe in a cell is escaped
		"| shop | prod | 2 → 3 | canary | ROLLED_BACK | 3s | 4 of 900 |",
		"## Recent pipeline runs\n\n_unavailable: the pipeline-runner service does not run in this deployment_",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestHTMLEscapes(t *testing.T) {
	html, err := report.HTML(sample())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, "<script>alert(1)</script>") || !strings.Contains(html, "&lt;script&gt;") {
		t.Fatal("a rollout message must be escaped in the HTML report")
	}
	if !strings.Contains(html, "<h2>Recent rollouts</h2>") {
		t.Fatal("missing section")
	}
}

// TestBuildNamesWhatIsUnavailable: with only the health-checker, every
// other section says which service is missing; the health section is real.
func TestBuildNamesWhatIsUnavailable(t *testing.T) {
	hc := checkertest.Start(t)
	svc := report.New(report.Clients{HealthChecker: hc})
	resp, err := svc.GetReport(context.Background(), &gatewayv1.GetReportRequest{Format: gatewayv1.ReportFormat_REPORT_FORMAT_MARKDOWN})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetReport()
	if r.GetHealth() == nil || r.GetUnavailable()["health"] != "" {
		t.Fatalf("health section: %v (unavailable %q)", r.GetHealth(), r.GetUnavailable()["health"])
	}
	for _, section := range []string{"metrics", "recent_alerts", "errors", "recent_rollouts", "recent_runs"} {
		if !strings.Contains(r.GetUnavailable()[section], "does not run in this deployment") {
			t.Errorf("section %s: unavailable = %q", section, r.GetUnavailable()[section])
		}
	}
	if resp.GetContentType() != "text/markdown; charset=utf-8" || !strings.Contains(resp.GetRendered(), "# Deployment report") {
		t.Fatalf("rendered %q as %q", resp.GetRendered(), resp.GetContentType())
	}
}

func TestBadRequest(t *testing.T) {
	svc := report.New(report.Clients{})
	for _, req := range []*gatewayv1.GetReportRequest{
		{Window: durationpb.New(-time.Hour)},
		{Window: durationpb.New(365 * 24 * time.Hour)},
		{Format: 42},
	} {
		if _, err := svc.GetReport(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: err = %v, want InvalidArgument", req, err)
		}
	}
}
