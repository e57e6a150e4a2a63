package cli

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
)

func (e *env) alertsCmd() *cobra.Command {
	var (
		out, app, environment string
		firing, silenced      bool
		window                time.Duration
		matchers              []string
	)
	c := &cobra.Command{
		Use:   "alerts",
		Short: "List the monitor's alerts (pending and firing by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if firing {
				q.Set("states", monitorv1.AlertState_ALERT_STATE_FIRING.String())
			}
			if window > 0 {
				q.Set("window", ProtoDuration(window))
			}
			setIf(q, "application", app)
			setIf(q, "environment", environment)
			for _, m := range matchers {
				q.Add("matchers", m)
			}
			if silenced {
				q.Set("include_silenced", "true")
			}
			resp := &monitorv1.ListAlertsResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/alerts", q, nil, resp); err != nil {
				return fmt.Errorf("list alerts: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table { return AlertsTable(resp.GetAlerts(), time.Now()) })
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().BoolVar(&firing, "firing", false, "only firing alerts")
	c.Flags().DurationVar(&window, "since", 0, "every alert active in this last period, resolved ones included, e.g. 1h")
	c.Flags().StringVar(&app, "app", "", "only alerts of this application")
	c.Flags().StringVar(&environment, "env", "", "only alerts of this environment")
	c.Flags().StringArrayVar(&matchers, "match", nil, `label matcher, e.g. severity="critical" (repeatable)`)
	c.Flags().BoolVar(&silenced, "silenced", false, "include silenced alerts")
	return c
}

// AlertsTable is one row per alert.
func AlertsTable(as []*monitorv1.Alert, now time.Time) *table {
	t := newTable("ID", "ALERT", "STATE", "SEVERITY", "APP", "VALUE", "ACTIVE", "SUMMARY")
	for _, a := range as {
		name := a.GetLabels()["alertname"]
		if name == "" {
			name = a.GetRule()
		}
		state := EnumName(a.GetState())
		if a.GetAcknowledgement() != nil {
			state += ",acked"
		}
		if len(a.GetSilencedBy()) > 0 {
			state += ",silenced"
		}
		summary := a.GetAnnotations()["summary"]
		if summary == "" {
			summary = a.GetAnnotations()["description"]
		}
		t.add(a.GetId(), name, state, a.GetLabels()["severity"], a.GetLabels()["app"], numberText(a.GetValue()),
			Age(a.GetActiveAt(), now), ellipsis(summary, 70))
	}
	return t
}

func numberText(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func (e *env) logsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "logs",
		Short: "Logs of the log-aggregator: query, tail",
	}
	c.AddCommand(e.logsQueryCmd(), e.logsTailCmd())
	return c
}

// logFilter is what query and tail share.
type logFilter struct {
	sources  []string
	level    string
	contains string
	regex    string
	matchers []string
	icase    bool
	trace    string
}

func (f *logFilter) bind(c *cobra.Command) {
	c.Flags().StringArrayVar(&f.sources, "source", nil, "only records of this source or below it (repeatable)")
	c.Flags().StringVar(&f.level, "level", "", "only records of this level or higher: "+strings.Join(EnumChoices(lav1.LogLevel(0).Descriptor()), ", "))
	c.Flags().StringVar(&f.contains, "contains", "", "only records whose message contains this text")
	c.Flags().BoolVarP(&f.icase, "ignore-case", "i", false, "--contains ignores case")
	c.Flags().StringVar(&f.regex, "regex", "", "only records whose message matches this RE2 expression")
	c.Flags().StringArrayVar(&f.matchers, "match", nil, `label matcher, e.g. app="shop" (repeatable)`)
	c.Flags().StringVar(&f.trace, "trace", "", "only records of this trace id")
	_ = c.RegisterFlagCompletionFunc("level", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return EnumChoices(lav1.LogLevel(0).Descriptor()), cobra.ShellCompDirectiveNoFileComp
	})
}

func (f *logFilter) query() (url.Values, error) {
	q := url.Values{}
	for _, s := range f.sources {
		q.Add("sources", s)
	}
	if f.level != "" {
		n, ok := ParseEnum(lav1.LogLevel(0).Descriptor(), f.level)
		if !ok {
			return nil, usagef("--level %q: use %s", f.level, strings.Join(EnumChoices(lav1.LogLevel(0).Descriptor()), ", "))
		}
		q.Set("min_level", lav1.LogLevel(n).String())
	}
	setIf(q, "contains", f.contains)
	setIf(q, "regex", f.regex)
	setIf(q, "trace_id", f.trace)
	for _, m := range f.matchers {
		q.Add("matchers", m)
	}
	if f.icase {
		q.Set("ignore_case", "true")
	}
	return q, nil
}

func (e *env) logsQueryCmd() *cobra.Command {
	var (
		out   string
		f     logFilter
		since time.Duration
		limit int32
	)
	c := &cobra.Command{
		Use:   "query",
		Short: "Search stored log records, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			q, err := f.query()
			if err != nil {
				return err
			}
			if since > 0 {
				q.Set("since", ProtoDuration(since))
			}
			if limit > 0 {
				q.Set("page_size", strconv.Itoa(int(limit)))
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp := &lav1.QueryLogsResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/logs", q, nil, resp); err != nil {
				return fmt.Errorf("query logs: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table { return LogsTable(resp.GetRecords()) })
		},
	}
	outputFlag(c.Flags(), &out)
	f.bind(c)
	c.Flags().DurationVar(&since, "since", 0, "records of this last period, e.g. 15m (server default: the last hour)")
	c.Flags().Int32Var(&limit, "limit", 0, "at most this many records (server default 100)")
	return c
}

// LogsTable is one row per log record.
func LogsTable(rs []*lav1.LogRecord) *table {
	t := newTable("TIME", "LEVEL", "SOURCE", "MESSAGE")
	for _, r := range rs {
		t.add(clock(r.GetTime()), EnumName(r.GetLevel()), r.GetSource(), ellipsis(r.GetMessage(), 200))
	}
	return t
}

// LogText is one record as a line: time, level, source, message, labels.
func LogText(r *lav1.LogRecord) string {
	lvl := EnumName(r.GetLevel())
	if lvl == "" {
		lvl = "-"
	}
	s := fmt.Sprintf("%s %-5s %s: %s", clock(r.GetTime()), strings.ToUpper(lvl), r.GetSource(), r.GetMessage())
	if len(r.GetLabels()) > 0 {
		s += " {" + labelsText(r.GetLabels()) + "}"
	}
	return s
}

func (e *env) logsTailCmd() *cobra.Command {
	var (
		out    string
		f      logFilter
		since  time.Duration
		lines  int32
		follow bool
	)
	c := &cobra.Command{
		Use:   "tail",
		Short: "Print the latest matching records, oldest first (-f: then follow new ones)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "text" && out != "json" {
				return usagef("-o %q: use text or json (one record a line)", out)
			}
			q, err := f.query()
			if err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			print := func(r *lav1.LogRecord) error {
				if out == "json" {
					data, err := marshal.Marshal(r)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(e.stdout, "%s\n", data)
					return err
				}
				_, err := fmt.Fprintln(e.stdout, LogText(r))
				return err
			}
			if !follow {
				if since > 0 {
					q.Set("since", ProtoDuration(since))
				}
				q.Set("page_size", strconv.Itoa(int(lines)))
				resp := &lav1.QueryLogsResponse{}
				if err := cl.do(cmd.Context(), http.MethodGet, "/v1/logs", q, nil, resp); err != nil {
					return fmt.Errorf("query logs: %w", err)
				}
				recs := resp.GetRecords()
				for i := len(recs) - 1; i >= 0; i-- {
					if err := print(recs[i]); err != nil {
						return err
					}
				}
				return nil
			}
			if since <= 0 {
				since = time.Minute
			}
			q.Set("since", ProtoDuration(since))
			q.Set("backfill_limit", strconv.Itoa(int(lines)))
			err = cl.stream(cmd.Context(), "/v1/logs:tail", q, func() proto.Message { return &lav1.TailLogsResponse{} }, func(m proto.Message) error {
				resp := m.(*lav1.TailLogsResponse)
				if resp.GetDropped() > 0 {
					fmt.Fprintf(e.stderr, "(%d records dropped: reading too slowly)\n", resp.GetDropped())
				}
				for _, r := range resp.GetRecords() {
					if err := print(r); err != nil {
						return err
					}
				}
				return nil
			})
			if errors.Is(err, io.EOF) || (err != nil && cmd.Context().Err() != nil) {
				return nil // the server ended the tail, or the person did
			}
			if err != nil {
				return fmt.Errorf("tail logs: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "text", "text, or json (one LogRecord a line)")
	f.bind(c)
	c.Flags().DurationVar(&since, "since", 0, "start with the records of this last period (default: the last hour; with -f the last minute)")
	c.Flags().Int32VarP(&lines, "lines", "n", 20, "start with at most this many records")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records until interrupted")
	return c
}

func (e *env) healthCmd() *cobra.Command {
	var out, group string
	c := &cobra.Command{
		Use:   "health",
		Short: "Overall health (healthy, degraded, unhealthy) with each target's state; exit 1 when unhealthy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			setIf(q, "group", group)
			resp := &hcv1.GetHealthResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/health", q, nil, resp); err != nil {
				return fmt.Errorf("get health: %w", err)
			}
			if out != "table" {
				if err := printObject(e.stdout, out, resp, nil); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(e.stdout, HealthSummary(resp))
				if len(resp.GetTargets()) > 0 {
					fmt.Fprintln(e.stdout)
					if err := HealthTable(resp, time.Now()).write(e.stdout); err != nil {
						return err
					}
				}
			}
			if resp.GetHealth() == hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY {
				return errors.New("overall health is unhealthy")
			}
			return nil
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVar(&group, "group", "", "only targets of this group (an application's is APP-ENV)")
	return c
}

// HealthSummary is the one-line overall verdict with its counts.
func HealthSummary(h *hcv1.GetHealthResponse) string {
	state := EnumName(h.GetHealth())
	if state == "" {
		state = "unknown"
	}
	return fmt.Sprintf("health: %s (%d targets: %d passing, %d warning, %d critical, %d pending)",
		state, h.GetTotal(), h.GetPassing(), h.GetWarning(), h.GetCritical(), h.GetPending())
}

// HealthTable is one row per target.
func HealthTable(h *hcv1.GetHealthResponse, now time.Time) *table {
	t := newTable("TARGET", "GROUP", "STATE", "SINCE", "LAST RESULT")
	for _, tg := range h.GetTargets() {
		st := tg.GetStatus()
		last := ""
		if r := st.GetLastResult(); r != nil {
			last = EnumName(r.GetOutcome())
			if m := r.GetMessage(); m != "" {
				last += ": " + ellipsis(m, 80)
			}
		}
		t.add(tg.GetName(), tg.GetGroup(), EnumName(st.GetState()), Age(st.GetLastTransitionTime(), now), last)
	}
	return t
}
