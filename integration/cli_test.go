package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// cliResult is what one run of the CLI printed and how it exited.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cliEnv runs the built binary as a client with a clean environment: no
// config file unless the test writes one, server and token as given.
type cliEnv struct {
	t      *testing.T
	server string
	token  string
	home   string
}

func (c *cliEnv) run(args ...string) cliResult {
	c.t.Helper()
	return c.runEnv(nil, args...)
}

func (c *cliEnv) runEnv(extra []string, args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, opsuiteBin, args...)
	env := []string{"HOME=" + c.home, "XDG_CONFIG_HOME=" + filepath.Join(c.home, ".config"), "PATH=" + os.Getenv("PATH")}
	if c.server != "" {
		env = append(env, "OPSUITE_SERVER="+c.server)
	}
	if c.token != "" {
		env = append(env, "OPSUITE_TOKEN="+c.token)
	}
	cmd.Env = append(env, extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		c.t.Fatalf("opsuite %v: %v", args, err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ok runs the CLI and requires exit status 0.
func (c *cliEnv) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("opsuite %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI and requires exit status code with every one of want
// in its standard error.
func (c *cliEnv) fails(code int, want []string, args ...string) cliResult {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code {
		c.t.Errorf("opsuite %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			c.t.Errorf("opsuite %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, r.stderr)
		}
	}
	return r
}

// decodeAs checks one answer in JSON and YAML form against the same
// message type, and returns the JSON one.
func decodeJSON(t *testing.T, out string, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("-o json output is not a %s: %v\n%s", m.ProtoReflect().Descriptor().FullName(), err, out)
	}
}

func decodeYAML(t *testing.T, out string, m proto.Message) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(out))
	if err != nil {
		t.Fatalf("-o yaml output is not YAML: %v\n%s", err, out)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("-o yaml output is not a %s: %v\n%s", m.ProtoReflect().Descriptor().FullName(), err, out)
	}
}

// cliAppYAML is the demo app as a YAML application file, with Go-style
// durations the CLI converts.
func cliAppYAML(version string, unhealthy bool) string {
	extra := ""
	if unhealthy {
		extra = "\n    - {name: UNHEALTHY, value: \"1\"}"
	}
	return fmt.Sprintf(`name: shop
description: demo app deployed by the CLI test
labels: {team: cli}
spec:
  process:
    argv: [%q]
  env:
    - {name: VERSION, value: %q}%s
  ports:
    - {name: http, container_port: 8080}
  replicas: 2
  health_check:
    http: {path: /healthz}
    interval: 100ms
    failure_threshold: 2
  strategy:
    canary:
      steps:
        - set_weight: {weight: 50}
        - pause: {duration: 300ms}
  progress_deadline: 30s
  rollback_policy:
    verification_window: 0s
`, demoBin, version, extra)
}

// TestCLI runs the built binary as a client of a running suite: each -o
// format decodes into the API's types, errors exit 1 with a hint, usage
// errors exit 2, and deploys with --wait exit by the rollout's outcome.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	start := time.Now()
	httpAddr := freeAddr(t)
	startOpsuite(t, httpAddr, "up", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--nats-listen", "", "--docker", "off")
	t.Cleanup(func() {
		// Stop the demo processes while the suite still runs.
		restJSON(t, "DELETE", "http://"+httpAddr+"/v1/applications/shop?force=true", "", nil)
	})
	dir := t.TempDir()
	cli := &cliEnv{t: t, server: "http://" + httpAddr, token: adminToken, home: dir}
	appFile := filepath.Join(dir, "app.yaml")
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("usage", func(t *testing.T) {
		c := *cli
		c.t = t
		c.fails(2, []string{"unknown flag: --bogus"}, "app", "list", "--bogus")
		c.fails(2, []string{"accepts 1 arg"}, "app", "get")
		c.fails(2, []string{"-o \"xml\""}, "app", "list", "-o", "xml")
		c.fails(2, []string{"needs a subcommand"}, "rollout")
		c.fails(2, []string{`--role "root"`}, "token", "create", "x", "--role", "root")
		if out := c.ok("completion", "bash"); !strings.Contains(out, "__start_opsuite") {
			t.Errorf("completion bash: no completion function in\n%.300s", out)
		}
	})

	t.Run("errors", func(t *testing.T) {
		c := *cli
		c.t = t
		c.token = ""
		c.fails(1, []string{"no token", "--token", "$OPSUITE_TOKEN", "config.yaml", "OPSUITE_ADMIN_TOKEN"}, "app", "list")
		c.token = "ops_not-a-real-token-at-all"
		c.fails(1, []string{"refused", "$OPSUITE_TOKEN"}, "whoami")
		c.token = adminToken
		c.fails(1, []string{"nosuchapp"}, "app", "get", "nosuchapp")
		c.server = "127.0.0.1:1"
		c.fails(1, []string{"is `opsuite up` running at http://127.0.0.1:1?"}, "health")

		bad := filepath.Join(dir, "bad.yaml")
		write(bad, "name: Bad_Name\nspec:\n  process: {argv: [/bin/true]}\n  replicas: -3\n")
		c.server = cli.server
		c.fails(1, []string{"field violations:", "name", "replicas"}, "app", "create", "-f", bad)
		write(bad, "name: shop\nspec:\n  proces: {argv: [/bin/true]}\n")
		c.fails(1, []string{`"spec.proces"`}, "app", "create", "-f", bad)
	})

	t.Run("config", func(t *testing.T) {
		c := *cli
		c.t = t
		c.server, c.token = "", ""
		cfg := filepath.Join(dir, ".config", "opsuite", "config.yaml")
		if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
			t.Fatal(err)
		}
		write(cfg, "server: "+httpAddr+"\ntoken: "+adminToken+"\n")
		defer os.Remove(cfg)
		var who gatewayv1.WhoAmIResponse
		decodeJSON(t, c.ok("whoami", "-o", "json"), &who)
		if who.GetTokenName() != "admin" || who.GetRole() != gatewayv1.Role_ROLE_ADMIN {
			t.Fatalf("whoami from the config file: %v", &who)
		}
		// The environment beats the file, the flag beats the environment.
		if r := c.runEnv([]string{"OPSUITE_SERVER=127.0.0.1:1"}, "whoami"); r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1:1") {
			t.Fatalf("$OPSUITE_SERVER did not override the file: exit %d\n%s", r.code, r.stderr)
		}
		if r := c.runEnv([]string{"OPSUITE_SERVER=127.0.0.1:1"}, "whoami", "--server", httpAddr); r.code != 0 {
			t.Fatalf("--server did not override $OPSUITE_SERVER: exit %d\n%s", r.code, r.stderr)
		}
		c.fails(1, []string{"refused"}, "whoami", "--token", "ops_wrong-token-from-flag")
	})

	t.Run("whoami", func(t *testing.T) {
		c := *cli
		c.t = t
		if out := c.ok("whoami"); !strings.Contains(out, "admin") || !strings.Contains(out, "TOKEN") {
			t.Errorf("whoami table:\n%s", out)
		}
		var who gatewayv1.WhoAmIResponse
		decodeYAML(t, c.ok("whoami", "-o", "yaml"), &who)
		if who.GetRole() != gatewayv1.Role_ROLE_ADMIN {
			t.Errorf("whoami -o yaml: %v", &who)
		}
	})

	t.Run("tokens", func(t *testing.T) {
		c := *cli
		c.t = t
		var created gatewayv1.CreateTokenResponse
		decodeJSON(t, c.ok("token", "create", "cli-viewer", "--role", "viewer", "--description", "CLI test", "-o", "json"), &created)
		if created.GetSecret() == "" || created.GetToken().GetRole() != gatewayv1.Role_ROLE_VIEWER {
			t.Fatalf("token create: %v", &created)
		}
		if out := c.ok("token", "list"); !strings.Contains(out, "cli-viewer") || !strings.Contains(out, "viewer") {
			t.Errorf("token list table lacks cli-viewer:\n%s", out)
		}
		var list gatewayv1.ListTokensResponse
		decodeYAML(t, c.ok("token", "list", "-o", "yaml"), &list)
		found := false
		for _, tk := range list.GetTokens() {
			found = found || tk.GetName() == "cli-viewer"
		}
		if !found {
			t.Errorf("token list -o yaml lacks cli-viewer: %v", &list)
		}
		// A viewer reads but may not deploy; the refusal names the role needed.
		viewer := c
		viewer.token = created.GetSecret()
		viewer.ok("app", "list")
		write(appFile, cliAppYAML("v0", false))
		viewer.fails(1, []string{"viewer", "operator", "ask an admin"}, "app", "create", "-f", appFile)
		c.ok("token", "revoke", "cli-viewer")
		viewer.fails(1, []string{"refused"}, "app", "list")
	})

	t.Run("deploy", func(t *testing.T) {
		c := *cli
		c.t = t
		write(appFile, cliAppYAML("v1", false))
		if out := c.ok("app", "create", "-f", appFile); !strings.Contains(out, "application shop created") {
			t.Fatalf("app create: %s", out)
		}
		var app deployerv1.Application
		decodeJSON(t, c.ok("app", "get", "shop", "-o", "json"), &app)
		if app.GetSpec().GetHealthCheck().GetInterval().AsDuration() != 100*time.Millisecond {
			t.Fatalf("the file's 100ms interval arrived as %v", app.GetSpec().GetHealthCheck().GetInterval())
		}
		// The first deploy: the file's spec, followed to the end, a line per change.
		out := c.ok("app", "deploy", "-f", appFile, "--wait", "--timeout", "60s")
		if !strings.Contains(out, "rollout") || !strings.Contains(out, ": succeeded") {
			t.Fatalf("deploy --wait output:\n%s", out)
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("piped output has terminal escapes:\n%q", out)
		}
		// A canary to v2 passes its steps.
		write(appFile, cliAppYAML("v2", false))
		res := c.run("app", "deploy", "-f", appFile, "--wait", "--reason", "cli test v2")
		out = res.stdout
		if res.code != 0 || strings.Contains(res.stderr, "warning") {
			t.Fatalf("deploy v2: exit %d\n%s\n%s", res.code, out, res.stderr)
		}
		if !strings.Contains(out, "1 → 2") || !strings.Contains(out, "step 1/") || !strings.Contains(out, ": succeeded") {
			t.Fatalf("canary deploy --wait output:\n%s", out)
		}

		if out := c.ok("app", "list"); !strings.Contains(out, "shop") || !strings.Contains(out, "2/2") {
			t.Errorf("app list table:\n%s", out)
		}
		var apps deployerv1.ListApplicationsResponse
		decodeJSON(t, c.ok("app", "list", "-o", "json"), &apps)
		if len(apps.GetApplications()) != 1 || apps.GetApplications()[0].GetEnvironments()[0].GetStatus().GetCurrentRevision() != 2 {
			t.Errorf("app list -o json: %v", &apps)
		}
		decodeYAML(t, c.ok("app", "list", "-o", "yaml"), &apps)
		if len(apps.GetApplications()) != 1 || apps.GetApplications()[0].GetName() != "shop" {
			t.Errorf("app list -o yaml: %v", &apps)
		}

		// Rollout status of the latest rollout in each format.
		out = c.ok("rollout", "status", "shop")
		if !strings.Contains(out, "succeeded") || !strings.Contains(out, "set_weight") || !strings.Contains(out, "50%") {
			t.Errorf("rollout status table:\n%s", out)
		}
		var r deployerv1.Rollout
		decodeJSON(t, c.ok("rollout", "status", "shop", "-o", "json"), &r)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED || r.GetToRevision() != 2 || r.GetCause() != "cli test v2" {
			t.Errorf("rollout status -o json: %v", &r)
		}
		var again deployerv1.Rollout
		decodeYAML(t, c.ok("rollout", "status", "shop", r.GetId(), "-o", "yaml"), &again)
		if again.GetId() != r.GetId() {
			t.Errorf("rollout status ID -o yaml: %v", &again)
		}
		out = c.ok("rollout", "status", "shop", r.GetId(), "--watch")
		if !strings.Contains(out, ": succeeded") {
			t.Errorf("rollout status --watch of a finished rollout:\n%s", out)
		}
		var rollouts deployerv1.ListRolloutsResponse
		decodeJSON(t, c.ok("rollout", "list", "shop", "-o", "json"), &rollouts)
		if len(rollouts.GetRollouts()) != 2 {
			t.Errorf("rollout list: %d rollouts, want 2", len(rollouts.GetRollouts()))
		}
		if out := c.ok("rollout", "list", "shop"); strings.Count(out, "succeeded") != 2 {
			t.Errorf("rollout list table:\n%s", out)
		}

		// A rollout that waits at a pause for a person: promote lets it
		// finish, abort takes it back; --watch exits by the outcome.
		waitPaused := func() *deployerv1.Rollout {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for {
				r := &deployerv1.Rollout{}
				decodeJSON(t, c.ok("rollout", "status", "shop", "-o", "json"), r)
				if r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED {
					return r
				}
				if time.Now().After(deadline) {
					t.Fatalf("rollout never paused: %v", r)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		held := func(version string) string {
			return strings.Replace(cliAppYAML(version, false), "pause: {duration: 300ms}", "pause: {}", 1)
		}
		write(appFile, held("v2p"))
		c.ok("app", "deploy", "-f", appFile)
		paused := waitPaused()
		if out := c.ok("rollout", "promote", "shop", "--rollout", paused.GetId()); !strings.Contains(out, paused.GetId()) {
			t.Errorf("rollout promote: %s", out)
		}
		if out := c.ok("rollout", "status", "shop", "--watch", "--timeout", "30s"); !strings.Contains(out, ": succeeded") {
			t.Errorf("rollout status --watch after promote:\n%s", out)
		}
		write(appFile, held("v2a"))
		c.ok("app", "deploy", "-f", appFile)
		paused = waitPaused()
		if out := c.ok("rollout", "abort", "shop", "--reason", "cli test abort"); !strings.Contains(out, paused.GetId()) {
			t.Errorf("rollout abort: %s", out)
		}
		c.fails(1, []string{"ended rolled_back", "aborted"}, "rollout", "status", "shop", paused.GetId(), "--watch", "--timeout", "30s")

		// A broken v3 is rolled back: --wait exits 1 and says so.
		write(appFile, cliAppYAML("v3", true))
		res = c.fails(1, []string{"rolled_back"}, "app", "deploy", "-f", appFile, "--wait")
		if !strings.Contains(res.stdout, "rolling_back") && !strings.Contains(res.stdout, "rolled_back") {
			t.Errorf("rolled-back deploy output:\n%s", res.stdout)
		}
		decodeJSON(t, c.ok("rollout", "status", "shop", "-o", "json"), &r)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK {
			t.Errorf("after the broken deploy the rollout is %v", r.GetPhase())
		}
		c.fails(1, []string{"shop"}, "rollout", "promote", "shop")
	})

	t.Run("observe", func(t *testing.T) {
		c := *cli
		c.t = t
		var health hcv1.GetHealthResponse
		r := c.run("health", "-o", "json")
		if r.code != 0 && !strings.Contains(r.stderr, "unhealthy") {
			t.Fatalf("health: exit %d\n%s", r.code, r.stderr)
		}
		decodeJSON(t, r.stdout, &health)
		if health.GetHealth() == hcv1.OverallHealth_OVERALL_HEALTH_UNSPECIFIED {
			t.Errorf("health -o json without a verdict: %v", &health)
		}
		if out := c.run("health").stdout; !strings.Contains(out, "health: ") {
			t.Errorf("health table:\n%s", out)
		}

		var alerts monitorv1.ListAlertsResponse
		decodeJSON(t, c.ok("alerts", "--firing", "-o", "json"), &alerts)
		if out := c.ok("alerts"); !strings.HasPrefix(out, "ID") {
			t.Errorf("alerts table:\n%s", out)
		}

		// The suite ships its own log: the deployer logged the rollouts.
		var logs lav1.QueryLogsResponse
		decodeJSON(t, c.ok("logs", "query", "--since", "5m", "--contains", "rollout", "--limit", "20", "-o", "json"), &logs)
		if len(logs.GetRecords()) == 0 {
			t.Fatalf("logs query --contains rollout found nothing")
		}
		for _, rec := range logs.GetRecords() {
			if !strings.Contains(strings.ToLower(rec.GetMessage()), "rollout") {
				t.Errorf("logs query --contains rollout returned %q", rec.GetMessage())
			}
		}
		decodeYAML(t, c.ok("logs", "query", "--since", "5m", "--level", "info", "--limit", "5", "-o", "yaml"), &logs)
		for _, rec := range logs.GetRecords() {
			if rec.GetLevel() < lav1.LogLevel_LOG_LEVEL_INFO {
				t.Errorf("--level info returned a %v record", rec.GetLevel())
			}
		}
		if out := c.ok("logs", "query", "--since", "5m", "--limit", "3"); !strings.HasPrefix(out, "TIME") || strings.Count(out, "\n") < 2 {
			t.Errorf("logs query table:\n%s", out)
		}
		if out := c.ok("logs", "tail", "-n", "3"); strings.Count(out, "\n") != 3 {
			t.Errorf("logs tail -n 3 printed:\n%s", out)
		}
		c.fails(2, []string{"--level \"loud\""}, "logs", "query", "--level", "loud")
	})

	t.Run("report", func(t *testing.T) {
		c := *cli
		c.t = t
		md := c.ok("report")
		if !strings.HasPrefix(md, "# Deployment report") {
			t.Fatalf("report markdown:\n%.500s", md)
		}
		sections := strings.Split(md, "\n## ")[1:]
		if len(sections) < 4 {
			t.Fatalf("report has %d sections:\n%s", len(sections), md)
		}
		for _, s := range sections {
			title, body, _ := strings.Cut(s, "\n")
			if strings.TrimSpace(body) == "" {
				t.Errorf("report section %q is empty", title)
			}
		}
		if !strings.Contains(md, "## Recent rollouts") || !strings.Contains(md, "| shop") {
			t.Errorf("report lacks the shop rollouts:\n%s", md)
		}
		var rep gatewayv1.Report
		decodeJSON(t, c.ok("report", "--format", "json"), &rep)
		if len(rep.GetRecentRollouts()) < 5 {
			t.Errorf("report json: %d recent rollouts, want 5", len(rep.GetRecentRollouts()))
		}
		if html := c.ok("report", "--format", "html"); !strings.Contains(html, "<html") {
			t.Errorf("report html:\n%.300s", html)
		}
		c.fails(2, []string{"--format \"pdf\""}, "report", "--format", "pdf")
	})

	t.Run("pipeline", func(t *testing.T) {
		c := *cli
		c.t = t
		pf := filepath.Join(dir, "pipeline.yaml")
		write(pf, "name: cli-hello\nsteps:\n  - name: greet\n    script: |\n      echo hello from the cli test\n  - name: check\n    script: test -n \"$HOME\"\n")
		c.ok("pipeline", "create", "-f", pf)
		var pls prv1.ListPipelinesResponse
		decodeJSON(t, c.ok("pipeline", "list", "-o", "json"), &pls)
		if len(pls.GetPipelines()) != 1 || pls.GetPipelines()[0].GetName() != "cli-hello" {
			t.Fatalf("pipeline list: %v", &pls)
		}
		out := c.ok("pipeline", "run", "cli-hello", "--wait", "--timeout", "60s")
		if !strings.Contains(out, ": success") {
			t.Fatalf("pipeline run --wait:\n%s", out)
		}
		var runs prv1.ListRunsResponse
		decodeJSON(t, c.ok("pipeline", "runs", "cli-hello", "-o", "json"), &runs)
		if len(runs.GetRuns()) != 1 {
			t.Fatalf("pipeline runs: %v", &runs)
		}
		logs := c.ok("pipeline", "logs", runs.GetRuns()[0].GetId())
		if !strings.Contains(logs, "[greet]  hello from the cli test") {
			t.Errorf("pipeline logs:\n%s", logs)
		}
		// A failing run exits 1 with --wait.
		write(pf, "name: cli-fail\nsteps:\n  - name: boom\n    script: exit 3\n")
		c.ok("pipeline", "create", "-f", pf)
		c.fails(1, []string{"failed", "opsuite pipeline logs"}, "pipeline", "run", "cli-fail", "--wait", "--timeout", "60s")
	})

	t.Run("delete", func(t *testing.T) {
		c := *cli
		c.t = t
		if out := c.ok("app", "delete", "shop", "--force"); !strings.Contains(out, "deleted") {
			t.Errorf("app delete: %s", out)
		}
		c.fails(1, []string{"shop"}, "app", "get", "shop")
	})
	t.Logf("TestCLI took %s", time.Since(start).Round(time.Millisecond))
}

// TestCLIPipelineLocal runs a pipeline file with `pipeline run -f --local`:
// the server's engine, no server; masked secrets; exit 1 on a failed run,
// 2 on bad usage.
func TestCLIPipelineLocal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	dir := t.TempDir()
	c := &cliEnv{t: t, home: dir}
	file := filepath.Join(dir, "p.yaml")
	write := func(src string) {
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`name: local
steps:
  - name: hello
    secrets: [deploy-key]
    script: |
      echo "hello $WHO"
      echo "key=$DEPLOY_KEY"
  - name: after
    needs: [hello]
    command: [sh, -c, "echo done"]
`)
	res := c.runEnv([]string{"OPSUITE_SECRET_DEPLOY_KEY=s3cr3t-value"}, "pipeline", "run", "-f", file, "--local", "--var", "WHO=world")
	if res.code != 0 || !strings.Contains(res.stdout, "hello world") || !strings.Contains(res.stdout, "done") {
		t.Fatalf("local run: exit %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if strings.Contains(res.stdout+res.stderr, "s3cr3t-value") {
		t.Fatalf("the secret was printed:\n%s", res.stdout)
	}
	write("name: local\nsteps:\n  - {name: fails, command: [sh, -c, 'exit 3']}\n")
	if res := c.run("pipeline", "run", "-f", file, "--local"); res.code != 1 {
		t.Fatalf("failing local run: exit %d, want 1\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := c.run("pipeline", "run", "--local"); res.code != 2 {
		t.Fatalf("--local without -f: exit %d, want 2\n%s", res.code, res.stderr)
	}
}
