package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/opsuite/opsuite/services/gateway/dashboard"
)

// TestDashboardInBrowser drives the web dashboard in headless Chromium
// against the real suite: log in with a token, watch a canary rollout
// progress and promote it, open a pipeline run and read its live log,
// search and tail logs, then check that a viewer token gets a read-only
// page and the overview shows health and a metrics chart. Screenshots of
// each stage are kept as artifacts.
func TestDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary and a browser")
	}
	chromium := chromiumPath(t)
	start := time.Now()

	httpAddr := freeAddr(t)
	startOpsuite(t, httpAddr, "up", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "off")
	api := "http://" + httpAddr
	t.Cleanup(func() {
		// Stop the demo processes before the suite goes away.
		restJSON(t, "DELETE", api+"/v1/applications/shop?force=true", "", nil)
	})
	ui := dashboardURL(t, api)

	operator := createToken(t, api, "ui-operator", "ROLE_OPERATOR")
	viewer := createToken(t, api, "ui-viewer", "ROLE_VIEWER")
	// The monitor scrapes the suite itself, so the overview has metrics to chart.
	if code := restJSON(t, "POST", api+"/v1/scrapeTargets", fmt.Sprintf(`{"name":"suite","url":%q,"interval":"1s"}`, api+"/metrics"), nil); code != http.StatusOK {
		t.Fatalf("create scrape target: HTTP %d", code)
	}
	// v1 of the demo app, rolled out before the browser looks.
	if code := restJSON(t, "POST", api+"/v1/applications", `{"name":"shop","spec":`+appJSON("v1", "")+`}`, nil); code != http.StatusOK {
		t.Fatalf("create application: HTTP %d", code)
	}
	if r := waitRolloutREST(t, api, deployREST(t, api, appJSON("v1", ""))); r.Phase != "ROLLOUT_PHASE_SUCCEEDED" {
		t.Fatalf("v1: %+v", r)
	}
	pipeline := "name: dash-demo\nsteps:\n  - name: build\n    script: |\n      for i in 1 2 3 4 5 6; do echo \"dash-line-$i\"; sleep 0.5; done\n"
	if code := restJSON(t, "POST", api+"/v1/pipelines", mustJSON(t, map[string]string{"name": "dash-demo", "source": pipeline}), nil); code != http.StatusOK {
		t.Fatalf("create pipeline: HTTP %d", code)
	}

	b := newBrowser(t, chromium)

	// Log in with the operator's token.
	b.do("open the login page", 20*time.Second, chromedp.Navigate(ui), chromedp.WaitVisible(chromedp.ID("token")))
	b.screenshot("login")
	b.do("refuse a bad token", 15*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), "ops_not-a-real-token-at-all"),
		chromedp.Click(chromedp.ID("login-submit")))
	b.waitJS("bad token refused", `document.getElementById('login-error').textContent.includes('not accepted') && !document.getElementById('login').hidden`, 10*time.Second)
	b.do("log in", 15*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), operator),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="health-state"]`)))
	if who := evalJS[string](b, `document.querySelector('[data-testid="who"]').textContent`); !strings.Contains(who, "ui-operator") || !strings.Contains(who, "Operator") {
		t.Fatalf("logged in as %q, want the ui-operator token with the operator role", who)
	}
	if stored := evalJS[string](b, `sessionStorage.getItem('opsuite.token')`); stored != operator {
		t.Fatalf("sessionStorage holds %q, want the token", stored)
	}

	// Watch a canary rollout progress: open the application, then deploy v2
	// with a 20% step, a timed pause, a 50% step and a pause for a person.
	b.do("open the application", 15*time.Second, chromedp.Navigate(ui+"#/apps/shop"))
	b.waitJS("v1 rollout shown", `document.querySelector('[data-testid="rollout-phase"]')?.dataset.phase === 'ROLLOUT_PHASE_SUCCEEDED'`, 15*time.Second)
	evalJS[bool](b, `(() => {
		window.__seen = [];
		const record = () => {
			const ph = document.querySelector('[data-testid="rollout-phase"]');
			const pr = document.querySelector('[data-testid="rollout-progress"]');
			if (!ph || !pr) return;
			const k = ph.dataset.phase + '@' + pr.dataset.weight;
			if (window.__seen[window.__seen.length - 1] !== k) window.__seen.push(k);
		};
		new MutationObserver(record).observe(document.getElementById('view'), {childList: true, subtree: true, attributes: true});
		return true;
	})()`)
	canary := strings.Replace(appJSON("v2", ""), `[{"set_weight": {"weight": 50}}, {"pause": {"duration": "0.3s"}}]`,
		`[{"set_weight": {"weight": 20}}, {"pause": {"duration": "4s"}}, {"set_weight": {"weight": 50}}, {"pause": {}}]`, 1)
	if canary == appJSON("v2", "") {
		t.Fatal("the demo app's canary steps changed; update this test")
	}
	rolloutID := deployREST(t, api, canary)
	b.waitJS("canary at 20%", `window.__seen.some((k) => k.endsWith('@20'))`, 15*time.Second)
	b.screenshot("rollout-20")
	b.waitJS("canary paused at 50% for a person", `window.__seen.includes('ROLLOUT_PHASE_PAUSED@50') &&
		document.querySelector('[data-testid="rollout-phase"]').dataset.phase === 'ROLLOUT_PHASE_PAUSED'`, 20*time.Second)
	t.Logf("rollout states the page showed: %s", evalJS[string](b, `window.__seen.join(' → ')`))
	if !evalJS[bool](b, `document.querySelector('[data-testid="rollout"]').textContent.includes(`+jsString(rolloutID)+`)`) {
		t.Fatalf("the page does not show rollout %s", rolloutID)
	}
	b.screenshot("rollout-paused")

	// Promote: the rollout finishes and the router serves v2.
	b.do("click promote", 10*time.Second, chromedp.Click(chromedp.CSS(`[data-testid="promote"]:not([disabled])`)))
	b.waitJS("rollout succeeded", `document.querySelector('[data-testid="rollout-phase"]')?.dataset.phase === 'ROLLOUT_PHASE_SUCCEEDED'`, 30*time.Second)
	b.screenshot("rollout-promoted")
	var got struct {
		Rollout rolloutView `json:"rollout"`
	}
	restJSON(t, "GET", api+"/v1/applications/shop/rollouts/"+rolloutID, "", &got)
	if got.Rollout.Phase != "ROLLOUT_PHASE_SUCCEEDED" || got.Rollout.ToRevision != 2 {
		t.Fatalf("after promote: %+v", got.Rollout)
	}
	// Traffic through the router: v2 serves, and the chart has requests to show.
	endpoint := envStatusREST(t, api, "shop").Endpoint
	for i := 0; i < 30; i++ {
		if body := getBody(t, endpoint); body != "v2" {
			t.Fatalf("after promote the router serves %q, want v2", body)
		}
	}

	// Roll back from the page (a second click confirms): r1 serves again.
	b.do("roll back", 10*time.Second, chromedp.Click(chromedp.CSS(`[data-testid="rollback"]:not([disabled])`)),
		chromedp.Click(chromedp.CSS(`[data-testid="rollback"].confirm`)))
	b.waitJS("rollback rollout shown", `document.querySelector('[data-testid="rollout"]').textContent.includes('Rollback') &&
		document.querySelector('[data-testid="rollout-phase"]')?.dataset.phase === 'ROLLOUT_PHASE_SUCCEEDED' &&
		document.querySelector('[data-testid="current-revision"]')?.textContent === 'r1'`, 30*time.Second)
	b.screenshot("rolled-back")
	if body := getBody(t, endpoint); body != "v1" {
		t.Fatalf("after the rollback the router serves %q, want v1", body)
	}

	// Run the pipeline from its page and follow the run's live log.
	b.do("open pipelines", 15*time.Second, chromedp.Navigate(ui+"#/pipelines"),
		chromedp.Click(chromedp.CSS(`[data-testid="run-dash-demo"]:not([disabled])`)))
	b.waitJS("first log line", `(document.querySelector('[data-testid="run-log"]')?.textContent || '').includes('dash-line-1')`, 20*time.Second)
	if evalJS[bool](b, `document.querySelector('[data-testid="run-log"]').textContent.includes('dash-line-6')`) {
		t.Fatal("the whole log arrived at once: the run was over before the page showed its first line")
	}
	b.screenshot("run-live")
	b.waitJS("run finished with its whole log", `document.querySelector('[data-testid="run-state"]')?.dataset.state === 'RUN_STATE_SUCCESS' &&
		document.querySelector('[data-testid="run-log"]').textContent.includes('dash-line-6')`, 20*time.Second)
	if n := evalJS[int](b, `document.querySelector('[data-testid="run-log"]').textContent.split('dash-line-').length - 1`); n != 6 {
		t.Fatalf("the log shows %d lines of the step, want 6", n)
	}
	b.screenshot("run-done")

	// Search logs, including markup that must stay text.
	ingest(t, api, "dashboard needle 7f3a9 <b>not bold</b>")
	b.do("search logs", 15*time.Second, chromedp.Navigate(ui+"#/logs"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="log-query"]`), "needle 7f3a9"),
		chromedp.Click(chromedp.CSS(`[data-testid="log-search"]`)))
	b.waitJS("search result", `(document.querySelector('[data-testid="log-results"]')?.textContent || '').includes('dashboard needle 7f3a9 <b>not bold</b>')`, 15*time.Second)
	if n := evalJS[int](b, `document.querySelectorAll('[data-testid="log-results"] b').length`); n != 0 {
		t.Fatalf("a log message became %d <b> elements: server strings must be text", n)
	}
	b.screenshot("log-search")
	// Live tail: a record stored after the tail opens appears.
	b.do("start the tail", 10*time.Second, chromedp.Click(chromedp.CSS(`[data-testid="log-tail"]`)))
	b.waitJS("tail backfill", `(document.querySelector('[data-testid="log-results"]')?.textContent || '').includes('dashboard needle 7f3a9')`, 15*time.Second)
	ingest(t, api, "tailed needle 7f3a9 arrives live")
	b.waitJS("tailed record", `(document.querySelector('[data-testid="log-results"]')?.textContent || '').includes('tailed needle 7f3a9 arrives live')`, 15*time.Second)
	b.screenshot("log-tail")

	// Alerts: a firing alert (labelled for an application that does not
	// exist, so no rollout reacts) is listed and acknowledged.
	rule := `{"name":"dash-always","alert":"DashboardCheck","expr":"vector(1) > 0","labels":{"app":"billing"},"annotations":{"summary":"<i>always</i> firing"}}`
	if code := restJSON(t, "POST", api+"/v1/rules", rule, nil); code != http.StatusOK {
		t.Fatalf("create rule: HTTP %d", code)
	}
	b.do("open alerts", 10*time.Second, chromedp.Navigate(ui+"#/alerts"))
	b.waitJS("firing alert listed", `[...document.querySelectorAll('[data-testid="alert-row"]')].some((r) => r.textContent.includes('DashboardCheck') && r.textContent.includes('<i>always</i> firing'))`, 20*time.Second)
	b.do("acknowledge", 10*time.Second, chromedp.Click(chromedp.CSS(`[data-testid="ack"]:not([disabled])`)))
	b.waitJS("acknowledged", `(document.querySelector('[data-testid="acked"]')?.textContent || '').startsWith('acked by')`, 10*time.Second)
	b.screenshot("alerts")

	// A viewer sees everything and can change nothing.
	b.do("log out", 10*time.Second, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	if stored := evalJS[string](b, `sessionStorage.getItem('opsuite.token') || ''`); stored != "" {
		t.Fatal("the token is still stored after logging out")
	}
	b.do("log in as viewer", 15*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), viewer),
		chromedp.Click(chromedp.ID("login-submit")))
	b.waitJS("logged in as viewer", `document.querySelector('[data-testid="who"]').textContent.includes('ui-viewer')`, 15*time.Second)
	b.do("viewer opens the application", 15*time.Second, chromedp.Navigate(ui+"#/apps/shop"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="promote"]`)))
	for _, sel := range []string{"promote", "promote-full", "abort", "rollback"} {
		if !evalJS[bool](b, `document.querySelector('[data-testid="`+sel+`"]').disabled`) {
			t.Errorf("viewer: the %s button is enabled", sel)
		}
	}
	if !evalJS[bool](b, `!!document.querySelector('[data-testid="read-only"]')`) {
		t.Error("viewer: no read-only note")
	}
	b.screenshot("viewer-app")
	b.do("viewer opens pipelines", 15*time.Second, chromedp.Navigate(ui+"#/pipelines"), chromedp.WaitVisible(chromedp.CSS(`[data-testid="run-dash-demo"]`)))
	if !evalJS[bool](b, `document.querySelector('[data-testid="run-dash-demo"]').disabled`) {
		t.Error("viewer: the pipeline's Run button is enabled")
	}

	// The overview: health in one of its three states and a chart of a key metric.
	b.do("viewer opens the overview", 15*time.Second, chromedp.Navigate(ui+"#/"))
	b.waitJS("health state", `['OVERALL_HEALTH_HEALTHY','OVERALL_HEALTH_DEGRADED','OVERALL_HEALTH_UNHEALTHY'].includes(document.querySelector('[data-testid="health-state"]')?.dataset.state)`, 15*time.Second)
	b.waitJS("metrics chart with a line", `(document.querySelector('[data-testid="chart"] polyline')?.points.numberOfItems || 0) >= 2`, 30*time.Second)
	b.screenshot("overview")
	// The other two states: one failing critical target of three degrades
	// the suite, half of them failing makes it unhealthy.
	for i, want := range []string{"OVERALL_HEALTH_DEGRADED", "OVERALL_HEALTH_UNHEALTHY"} {
		target := fmt.Sprintf(`{"name":"dash-down-%d","group":"dash","interval":"0.2s","failure_threshold":1,"tcp":{"address":%q}}`, i, freeAddr(t))
		if code := restJSON(t, "POST", api+"/v1/targets", target, nil); code != http.StatusOK {
			t.Fatalf("create failing target: HTTP %d", code)
		}
		b.waitJS("health "+want, `document.querySelector('[data-testid="health-state"]')?.dataset.state === '`+want+`'`, 15*time.Second)
		b.screenshot(strings.ToLower(strings.TrimPrefix(want, "OVERALL_HEALTH_")))
	}
	t.Logf("health shown: %s; chart of %s", evalJS[string](b, `document.querySelector('[data-testid="health-state"]').textContent`),
		evalJS[string](b, `document.querySelector('[data-testid="metric-select"]').value`))

	b.checkConsole()
	t.Logf("dashboard test took %s", time.Since(start).Round(time.Millisecond))
}

// chromiumPath finds Debian's chromium, or skips the test without it unless
// OPSUITE_REQUIRE_CHROMIUM=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("OPSUITE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("chromium is not installed and OPSUITE_REQUIRE_CHROMIUM=1: run scripts/install-chromium.sh")
	}
	t.Skip("chromium is not installed: run scripts/install-chromium.sh (set OPSUITE_REQUIRE_CHROMIUM=1 to fail instead of skipping)")
	return ""
}

// dashboardURL is the dashboard of the suite at api: the binary's own /ui/
// when its gateway mounts it, otherwise the same embedded handler served by
// the test in front of the suite's REST API.
func dashboardURL(t *testing.T, api string) string {
	t.Helper()
	resp, err := http.Get(api + "/ui/")
	if err == nil {
		page, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(page), "/ui/assets/") {
			t.Logf("dashboard served by the binary at %s/ui/", api)
			return api + "/ui/"
		}
	}
	target, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // streams reach the browser line by line
	mux := http.NewServeMux()
	mux.Handle("/ui/", dashboard.Handler())
	mux.Handle("/v1/", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	t.Logf("the binary does not serve /ui/ yet: dashboard served by the test at %s/ui/, API proxied to %s", srv.URL, api)
	return srv.URL + "/ui/"
}

func createToken(t *testing.T, api, name, role string) string {
	t.Helper()
	var resp struct {
		Secret string `json:"secret"`
	}
	if code := restJSON(t, "POST", api+"/v1/tokens", fmt.Sprintf(`{"name":%q,"role":%q}`, name, role), &resp); code != http.StatusOK || resp.Secret == "" {
		t.Fatalf("create %s token: HTTP %d", role, code)
	}
	return resp.Secret
}

func ingest(t *testing.T, api, message string) {
	t.Helper()
	body := mustJSON(t, map[string]any{"records": []map[string]any{{"message": message, "level": "LOG_LEVEL_WARN", "source": "dashboard-test"}}})
	var resp struct {
		Accepted string `json:"accepted"`
	}
	if code := restJSON(t, "POST", api+"/v1/logs:ingest", body, &resp); code != http.StatusOK || resp.Accepted != "1" {
		t.Fatalf("ingest: HTTP %d, accepted %q", code, resp.Accepted)
	}
	// Ingestion is acknowledged when durable and indexed just after: wait
	// until a query finds the record, so the page's search is not a race.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var found struct {
			Records []struct {
				Message string `json:"message"`
			} `json:"records"`
		}
		restJSON(t, "GET", api+"/v1/logs?since=600s&contains="+url.QueryEscape(message), "", &found)
		if len(found.Records) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingested %q is not found by a query within 15s", message)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// browser is one headless Chromium tab with the test's helpers.
type browser struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	shots int

	mu       sync.Mutex
	problems []string // uncaught exceptions, console errors, CSP violations
}

func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	dir := os.Getenv("OPSUITE_ARTIFACTS")
	if dir != "" {
		dir = filepath.Join(dir, "dashboard")
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "opsuite-dashboard-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)

	var chromeOut syncBuffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(&chromeOut),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx, dir: dir}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", chromeOut.String())
		}
	})
	// The first action starts the browser; it runs without a deadline, as
	// chromedp requires, but a browser that does not start fails the test.
	started := make(chan error, 1)
	go func() {
		started <- chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{}); err != nil {
				return fmt.Errorf("enable the log domain: %w", err)
			}
			_, err := cdp.Call(ctx, tg, runtime.Enable, cdp.Empty{})
			return err
		}))
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium %s: %v\n%s", path, err, chromeOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("chromium %s did not start within 30s\n%s", path, chromeOut.String())
	}
	if err := chromedp.Listen(ctx, b.event); err != nil {
		t.Fatal(err)
	}
	return b
}

// event records what the page reports as wrong; it runs on chromedp's
// reader goroutine, so it only appends.
func (b *browser) event(ev any) {
	var problem string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		problem = "uncaught exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			problem += " " + e.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			problem = "console.error: " + strings.Join(parts, " ")
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError && e.Entry.Source != cdplog.EntrySourceNetwork {
			problem = fmt.Sprintf("%s error: %s", e.Entry.Source, e.Entry.Text)
		}
	}
	if problem != "" {
		b.mu.Lock()
		b.problems = append(b.problems, problem)
		b.mu.Unlock()
	}
}

// checkConsole fails the test for any exception, console error or CSP
// violation the page reported.
func (b *browser) checkConsole() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("page: %s", p)
	}
}

// do runs actions within timeout; on failure it keeps a screenshot.
func (b *browser) do(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// waitJS waits until a JavaScript expression is true.
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.fail(what, err)
	}
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	b.screenshot("failed")
	text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById('view')?.innerText + '\n' + document.getElementById('flash')?.innerText`))
	b.mu.Lock()
	problems := strings.Join(b.problems, "\n")
	b.mu.Unlock()
	b.t.Fatalf("%s: %v\npage text:\n%s\npage problems:\n%s", what, err, text, problems)
}

// screenshot saves the viewport as NN-name.png in the artifacts directory.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.shots++
	file := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.shots, name))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Errorf("save screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot %s", file)
}

func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		var zero T
		b.fail("evaluate "+expr, err)
		return zero
	}
	return v
}
