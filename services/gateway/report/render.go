package report

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"sort"
	"strconv"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// table is one section's rows, shared by the Markdown and HTML renderings.
type table struct {
	Title string
	Note  string // shown instead of rows when there are none, or as a lead
	Head  []string
	Rows  [][]string
}

// view is the report as the renderings show it.
type view struct {
	Generated string
	Window    string
	Summary   []string
	Tables    []table
}

func build(r *gatewayv1.Report) view {
	v := view{Generated: ts(r.GetGenerateTime()), Window: r.GetWindow().AsDuration().String()}
	una := r.GetUnavailable()
	missing := func(section string) string {
		if why, ok := una[section]; ok {
			return "unavailable: " + why
		}
		return ""
	}

	h := r.GetHealth()
	health := table{Title: "Health", Head: []string{"target", "group", "state", "last check"}}
	if m := missing("health"); m != "" {
		health.Note = m
	} else {
		v.Summary = append(v.Summary,
			fmt.Sprintf("Overall health: %s", strings.TrimPrefix(h.GetHealth().String(), "OVERALL_HEALTH_")),
			fmt.Sprintf("Health checks: %d, healthy: %d (warning %d, critical %d, pending %d)", h.GetTotal(), h.GetPassing(), h.GetWarning(), h.GetCritical(), h.GetPending()))
		for _, t := range h.GetTargets() {
			health.Rows = append(health.Rows, []string{t.GetName(), t.GetGroup(),
				strings.TrimPrefix(t.GetStatus().GetState().String(), "CHECK_STATE_"), t.GetStatus().GetLastResult().GetMessage()})
		}
		if len(health.Rows) == 0 {
			health.Note = "no health checks are configured"
		}
	}

	metrics := table{Title: "Metrics", Head: []string{"series", "current", "average", "min", "max", "samples"}}
	if m := missing("metrics"); m != "" {
		metrics.Note = m
	}
	for _, s := range r.GetMetrics() {
		labels := map[string]string{}
		name := ""
		for k, val := range s.GetLabels() {
			if k == "__name__" {
				name = val
				continue
			}
			labels[k] = val
		}
		if len(labels) > 0 {
			name += labelString(labels)
		}
		metrics.Rows = append(metrics.Rows, []string{name, num(s.GetCurrent()), num(s.GetAvg()), num(s.GetMin()), num(s.GetMax()), strconv.FormatUint(s.GetCount(), 10)})
	}
	if metrics.Note == "" && len(metrics.Rows) == 0 {
		metrics.Note = "no metrics in the window"
	}

	alerts := table{Title: "Recent alerts", Head: []string{"alert", "state", "value", "since", "labels"}}
	if m := missing("recent_alerts"); m != "" {
		alerts.Note = m
	}
	for _, a := range r.GetRecentAlerts() {
		since := a.GetFiredAt()
		if since == nil {
			since = a.GetActiveAt()
		}
		alerts.Rows = append(alerts.Rows, []string{a.GetLabels()["alertname"], strings.TrimPrefix(a.GetState().String(), "ALERT_STATE_"),
			num(a.GetValue()), ts(since), labelString(a.GetLabels())})
	}
	if alerts.Note == "" && len(alerts.Rows) == 0 {
		alerts.Note = "no alerts in the window"
	}

	errs := table{Title: "Errors by source", Head: []string{"source", "errors", "fatal", "signatures", "last seen"}}
	sigs := table{Title: "Error signatures", Head: []string{"template", "count", "first seen", "revision then", "last seen"}}
	if m := missing("errors"); m != "" {
		errs.Note, sigs.Note = m, m
	} else {
		e := r.GetErrors()
		v.Summary = append(v.Summary, fmt.Sprintf("Errors in the window: %d", e.GetTotalCount()))
		for _, s := range e.GetSources() {
			errs.Rows = append(errs.Rows, []string{s.GetSource(), strconv.FormatUint(s.GetCount(), 10), strconv.FormatUint(s.GetFatalCount(), 10),
				strconv.FormatUint(uint64(s.GetSignatureCount()), 10), ts(s.GetLastSeen())})
		}
		for _, s := range e.GetSignatures() {
			sigs.Rows = append(sigs.Rows, []string{s.GetTemplate(), strconv.FormatUint(s.GetCount(), 10), ts(s.GetFirstSeen()), s.GetFirstSeenRevision(), ts(s.GetLastSeen())})
		}
		if len(errs.Rows) == 0 {
			errs.Note = "no errors in the window"
		}
		if len(sigs.Rows) == 0 {
			sigs.Note = "no error signatures in the window"
		}
	}

	rollouts := table{Title: "Recent rollouts", Head: []string{"application", "environment", "revisions", "strategy", "phase", "duration", "failed requests", "message"}}
	if m := missing("recent_rollouts"); m != "" {
		rollouts.Note = m
	}
	for _, ro := range r.GetRecentRollouts() {
		rollouts.Rows = append(rollouts.Rows, []string{ro.GetApplication(), ro.GetEnvironment(),
			fmt.Sprintf("%d → %d", ro.GetFromRevision(), ro.GetToRevision()), strategyName(ro),
			strings.TrimPrefix(ro.GetPhase().String(), "ROLLOUT_PHASE_"), ro.GetDuration().AsDuration().Round(time.Millisecond).String(),
			fmt.Sprintf("%d of %d", ro.GetFailedRequests(), ro.GetTotalRequests()), ro.GetMessage()})
	}
	if rollouts.Note == "" && len(rollouts.Rows) == 0 {
		rollouts.Note = "no rollouts in the window"
	}

	runs := table{Title: "Recent pipeline runs", Head: []string{"pipeline", "run", "state", "started", "duration", "message"}}
	if m := missing("recent_runs"); m != "" {
		runs.Note = m
	}
	for _, run := range r.GetRecentRuns() {
		d := ""
		if run.GetStartTime() != nil && run.GetEndTime() != nil {
			d = run.GetEndTime().AsTime().Sub(run.GetStartTime().AsTime()).Round(time.Millisecond).String()
		}
		runs.Rows = append(runs.Rows, []string{run.GetPipeline(), "#" + strconv.FormatInt(run.GetNumber(), 10),
			strings.TrimPrefix(run.GetState().String(), "RUN_STATE_"), ts(run.GetStartTime()), d, run.GetMessage()})
	}
	if runs.Note == "" && len(runs.Rows) == 0 {
		runs.Note = "no pipeline runs in the window"
	}
	v.Tables = []table{health, metrics, alerts, errs, sigs, rollouts, runs}
	if len(una) > 0 {
		keys := make([]string, 0, len(una))
		for k := range una {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v.Summary = append(v.Summary, fmt.Sprintf("Section %s unavailable: %s", k, una[k]))
		}
	}
	return v
}

// strategyName names a rollout's strategy.
func strategyName(ro *deployerv1.Rollout) string {
	st := ro.GetStrategy()
	switch {
	case st.GetCanary() != nil:
		return "canary"
	case st.GetBlueGreen() != nil:
		return "blue-green"
	case st.GetRecreate() != nil:
		return "recreate"
	}
	return "rolling"
}

// Markdown renders the report as GitHub-flavoured Markdown.
func Markdown(r *gatewayv1.Report) string {
	v := build(r)
	var b strings.Builder
	fmt.Fprintf(&b, "# Deployment report\n\nGenerated %s, covering the last %s.\n\n", v.Generated, v.Window)
	for _, s := range v.Summary {
		fmt.Fprintf(&b, "- %s\n", mdEscape(s))
	}
	for _, t := range v.Tables {
		fmt.Fprintf(&b, "\n## %s\n\n", t.Title)
		if len(t.Rows) == 0 {
			fmt.Fprintf(&b, "_%s_\n", mdEscape(t.Note))
			continue
		}
		if t.Note != "" {
			fmt.Fprintf(&b, "_%s_\n\n", mdEscape(t.Note))
		}
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(t.Head, " | "), strings.Repeat("---|", len(t.Head)))
		for _, row := range t.Rows {
			cells := make([]string, len(row))
			for i, c := range row {
				cells[i] = mdEscape(c)
			}
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
	}
	return b.String()
}

// mdEscape keeps a cell on one line and its pipes from ending the cell.
func mdEscape(s string) string {
	s = strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ").Replace(s)
	return s
}

//go:embed report.html.tmpl
var htmlSource string

var htmlTemplate = template.Must(template.New("report").Parse(htmlSource))

// HTML renders the report as a standalone page (escaped by html/template).
func HTML(r *gatewayv1.Report) (string, error) {
	var b bytes.Buffer
	if err := htmlTemplate.Execute(&b, build(r)); err != nil {
		return "", err
	}
	return b.String(), nil
}

func ts(t *timestamppb.Timestamp) string {
	if t == nil || t.AsTime().IsZero() {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }
