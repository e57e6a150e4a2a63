package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }

func TestEnumName(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{EnumName(deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK), "rolled_back"},
		{EnumName(deployerv1.RolloutPhase_ROLLOUT_PHASE_UNSPECIFIED), ""},
		{EnumName(gatewayv1.Role_ROLE_OPERATOR), "operator"},
		{EnumName(lav1.LogLevel_LOG_LEVEL_WARN), "warn"},
		{EnumName(deployerv1.RolloutPhase(99)), "99"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParseEnum(t *testing.T) {
	d := lav1.LogLevel(0).Descriptor()
	for _, tc := range []struct {
		in   string
		want lav1.LogLevel
		ok   bool
	}{
		{"warn", lav1.LogLevel_LOG_LEVEL_WARN, true},
		{"ERROR", lav1.LogLevel_LOG_LEVEL_ERROR, true},
		{"LOG_LEVEL_INFO", lav1.LogLevel_LOG_LEVEL_INFO, true},
		{" debug ", lav1.LogLevel_LOG_LEVEL_DEBUG, true},
		{"unspecified", 0, false},
		{"loud", 0, false},
	} {
		n, ok := ParseEnum(d, tc.in)
		if ok != tc.ok || lav1.LogLevel(n) != tc.want {
			t.Errorf("ParseEnum(%q) = %v, %v; want %v, %v", tc.in, lav1.LogLevel(n), ok, tc.want, tc.ok)
		}
	}
	if got := strings.Join(EnumChoices(gatewayv1.Role(0).Descriptor()), ","); got != "viewer,operator,admin" {
		t.Errorf("role choices %q", got)
	}
}

func TestShortDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{850 * time.Millisecond, "850ms"},
		{45 * time.Second, "45s"},
		{3 * time.Minute, "3m"},
		{3*time.Minute + 20*time.Second, "3m20s"},
		{2*time.Hour + 5*time.Minute, "2h5m"},
		{5 * time.Hour, "5h"},
		{76 * time.Hour, "3d4h"},
		{72 * time.Hour, "3d"},
	} {
		if got := ShortDuration(tc.d); got != tc.want {
			t.Errorf("ShortDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if Age(nil, now) != "" || Age(&timestamppb.Timestamp{}, now) != "" {
		t.Error("unset times have an age")
	}
	if got := Age(ago(90*time.Second), now); got != "1m30s" {
		t.Errorf("Age = %q", got)
	}
}

func render(t *testing.T, tb *table) string {
	t.Helper()
	var b bytes.Buffer
	if err := tb.write(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestApplicationsTable(t *testing.T) {
	apps := []*deployerv1.Application{
		{Name: "shop", CreateTime: ago(2 * time.Hour), Environments: []*deployerv1.Environment{
			{Name: "staging", Status: &deployerv1.EnvironmentStatus{CurrentRevision: 3, ReadyReplicas: 2, DesiredReplicas: 2,
				Health: deployerv1.HealthState_HEALTH_STATE_HEALTHY, LastRolloutPhase: deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, Endpoint: "http://127.0.0.1:9000"}},
			{Name: "production", Status: &deployerv1.EnvironmentStatus{}},
		}},
		{Name: "new-app", LatestRevision: 0},
	}
	want := "" +
		"NAME     ENV         REVISION  READY  HEALTH   LAST ROLLOUT  ENDPOINT               AGE\n" +
		"shop     staging     3         2/2    healthy  succeeded     http://127.0.0.1:9000  2h\n" +
		"shop     production  -         0/0    -        -             -                      2h\n" +
		"new-app  -           -         -      -        -             -                      -\n"
	if got := render(t, ApplicationsTable(apps, now)); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func sampleRollout() *deployerv1.Rollout {
	return &deployerv1.Rollout{
		Id: "r1", Application: "shop", Environment: "default", FromRevision: 1, ToRevision: 2,
		Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED, CurrentStepIndex: 1, CanaryWeight: 20,
		ReadyReplicas: 1, DesiredReplicas: 4, UpdatedReplicas: 1, OldReplicas: 4, Reason: "PauseStep",
		StartTime: ago(30 * time.Second), TotalRequests: 120, FailedRequests: 1,
		Steps: []*deployerv1.RolloutStep{
			{Index: 0, Kind: deployerv1.StepKind_STEP_KIND_SET_WEIGHT, Description: "set weight 20%", State: deployerv1.StepState_STEP_STATE_SUCCEEDED, Weight: 20},
			{Index: 1, Kind: deployerv1.StepKind_STEP_KIND_PAUSE, Description: "pause until promoted", State: deployerv1.StepState_STEP_STATE_RUNNING, Weight: 20},
			{Index: 2, Kind: deployerv1.StepKind_STEP_KIND_SWITCH, Description: "send all traffic", State: deployerv1.StepState_STEP_STATE_PENDING, Weight: 100},
		},
	}
}

func TestRolloutLine(t *testing.T) {
	r := sampleRollout()
	if got, want := RolloutLine(r), "shop r1: paused step 2/3 pause until promoted weight=20% new=1/4 old=4 reason=PauseStep"; got != want {
		t.Errorf("line %q\nwant %q", got, want)
	}
	r.Phase, r.Reason, r.Message = deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, "HealthCheckFailed", "replica shop-7f: 503"
	if got, want := RolloutLine(r), "shop r1: rolled_back revision 1 → 2 reason=HealthCheckFailed — replica shop-7f: 503"; got != want {
		t.Errorf("line %q\nwant %q", got, want)
	}
	if err := RolloutOutcome(r); err == nil || !strings.Contains(err.Error(), "rolled_back (HealthCheckFailed): replica shop-7f: 503") {
		t.Errorf("outcome %v", err)
	}
	r.Phase = deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED
	if err := RolloutOutcome(r); err != nil {
		t.Errorf("a succeeded rollout's outcome: %v", err)
	}
}

func TestRolloutFrame(t *testing.T) {
	frame := RolloutFrame(sampleRollout(), now)
	want := []string{
		"shop/default  rollout r1  revision 1 → 2",
		"[████████░░░░░░░░░░░░░░░░] 1/3 steps  PAUSED  weight 20%  30s",
		"  ✓ set weight 20%",
		"  ▶ pause until promoted",
		"  · send all traffic",
		"  replicas: 1/4 new (1 ready), 4 old   requests: 120 (1 failed)",
	}
	if strings.Join(frame, "\n") != strings.Join(want, "\n") {
		t.Errorf("frame:\n%s\nwant:\n%s", strings.Join(frame, "\n"), strings.Join(want, "\n"))
	}
}

func TestLiveViewPiped(t *testing.T) {
	var b bytes.Buffer
	v := newLiveView(&b)
	v.show([]string{"frame"}, "a")
	v.show([]string{"frame"}, "a")
	v.show([]string{"frame"}, "b")
	v.note("note")
	if got := b.String(); got != "a\nb\nnote\n" {
		t.Errorf("piped view printed %q", got)
	}
}

func TestLiveViewTerminal(t *testing.T) {
	var b bytes.Buffer
	v := &liveView{w: &b, terminal: true}
	v.show([]string{"one", "two"}, "x")
	v.show([]string{"three"}, "y")
	if got, want := b.String(), "one\ntwo\n\x1b[2A\r\x1b[Jthree\n"; got != want {
		t.Errorf("terminal view wrote %q, want %q", got, want)
	}
}

func TestRunLineAndFrame(t *testing.T) {
	r := &prv1.Run{Id: "run-1", Pipeline: "build", Number: 7, State: prv1.RunState_RUN_STATE_RUNNING, StartTime: ago(10 * time.Second),
		Steps: []*prv1.RunStep{
			{Id: "build", State: prv1.StepState_STEP_STATE_SUCCESS, StartTime: ago(10 * time.Second), EndTime: ago(4 * time.Second)},
			{Id: "test", State: prv1.StepState_STEP_STATE_RUNNING, StartTime: ago(4 * time.Second), Message: "attempt 2"},
		}}
	if got, want := RunLine(r, "test"), "build #7 run-1: running steps 1/2 done; step test running (attempt 2)"; got != want {
		t.Errorf("line %q\nwant %q", got, want)
	}
	frame := strings.Join(RunFrame(r, now), "\n")
	for _, want := range []string{"build #7  run run-1", "1/2 steps  RUNNING  10s", "  ✓ build  6s", "  ▶ test  4s  (attempt 2)"} {
		if !strings.Contains(frame, want) {
			t.Errorf("frame lacks %q:\n%s", want, frame)
		}
	}
	r.State, r.Message = prv1.RunState_RUN_STATE_FAILED, "step test failed: exit code 2"
	if err := RunOutcome(r); err == nil || !strings.Contains(err.Error(), "ended failed: step test failed") || !strings.Contains(err.Error(), "opsuite pipeline logs run-1") {
		t.Errorf("outcome %v", err)
	}
}

func TestOtherTables(t *testing.T) {
	for _, tc := range []struct {
		name string
		tb   *table
		want []string
	}{
		{"rollouts", RolloutsTable([]*deployerv1.Rollout{sampleRollout()}, now), []string{"ID  ENV", "r1  default  -     1→2", "paused", "1/3", "20%"}},
		{"steps", RolloutTable(sampleRollout()), []string{"STEP  KIND", "2     pause       pause until promoted  running"}},
		{"alerts", AlertsTable([]*monitorv1.Alert{{Id: "a1", State: monitorv1.AlertState_ALERT_STATE_FIRING, Labels: map[string]string{"alertname": "HighErrors", "severity": "critical", "app": "shop"},
			Annotations: map[string]string{"summary": "errors above 5%"}, Value: 0.07, ActiveAt: ago(time.Minute), SilencedBy: []string{"s1"}}}, now),
			[]string{"a1  HighErrors  firing,silenced  critical  shop  0.07   1m      errors above 5%"}},
		{"logs", LogsTable([]*lav1.LogRecord{{Level: lav1.LogLevel_LOG_LEVEL_ERROR, Source: "app/shop", Message: "boom\nsecond line"}}), []string{"-     error  app/shop  boom second line"}},
		{"tokens", TokensTable([]*gatewayv1.Token{{Name: "ci", Role: gatewayv1.Role_ROLE_OPERATOR, Creator: "admin", CreateTime: ago(time.Hour),
			ExpireTime: timestamppb.New(now.Add(48 * time.Hour))}}, now), []string{"ci    operator  admin    1h   -          in 2d    false"}},
		{"runs", RunsTable([]*prv1.Run{{Id: "run-1", Pipeline: "build", Number: 3, State: prv1.RunState_RUN_STATE_SUCCESS,
			Trigger: &prv1.Trigger{Kind: prv1.TriggerKind_TRIGGER_KIND_MANUAL}, StartTime: ago(time.Minute), EndTime: ago(30 * time.Second), CreateTime: ago(time.Minute)}}, now),
			[]string{"run-1  build     3       success  0/0    manual   30s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := render(t, tc.tb)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("table lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestJSONAndYAMLKeepProtoNames(t *testing.T) {
	r := &deployerv1.Rollout{Id: "r1", ToRevision: 2, Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, Duration: durationpb.New(1500 * time.Millisecond)}
	js, err := JSON(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"to_revision": 2`, `"phase": "ROLLOUT_PHASE_SUCCEEDED"`, `"duration": "1.500s"`, "\n  "} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
	y, err := YAML(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "to_revision: 2\n") {
		t.Errorf("YAML:\n%s", y)
	}
	// Both decode back into the same message.
	for name, data := range map[string][]byte{"json": js, "yaml": y} {
		if name == "yaml" {
			if data, err = yaml.YAMLToJSON(data); err != nil {
				t.Fatal(err)
			}
		}
		got := &deployerv1.Rollout{}
		if err := protojson.Unmarshal(data, got); err != nil || !proto.Equal(got, r) {
			t.Errorf("%s round trip: %v %v", name, got, err)
		}
	}
}

func TestRunLogLine(t *testing.T) {
	for _, tc := range []struct {
		l    *prv1.LogLine
		want string
	}{
		{&prv1.LogLine{Step: "build", Text: "ok", Stream: prv1.LogStream_LOG_STREAM_STDOUT}, "[build]  ok"},
		{&prv1.LogLine{Step: "build", Text: "warn", Stream: prv1.LogStream_LOG_STREAM_STDERR}, "[build]! warn"},
		{&prv1.LogLine{Text: "retrying", Stream: prv1.LogStream_LOG_STREAM_SYSTEM}, "[run]* retrying"},
	} {
		if got := RunLogLine(tc.l); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}
