package cli

import (
	"os"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestDecodeApplicationGoDurations(t *testing.T) {
	data, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	app, err := DecodeApplication(data)
	if err != nil {
		t.Fatal(err)
	}
	spec := app.GetSpec()
	for _, tc := range []struct {
		field string
		got   time.Duration
		want  time.Duration
	}{
		{"stop_grace_period", spec.GetStopGracePeriod().AsDuration(), 90 * time.Second},
		{"health_check.interval", spec.GetHealthCheck().GetInterval().AsDuration(), 500 * time.Millisecond},
		{"health_check.timeout", spec.GetHealthCheck().GetTimeout().AsDuration(), 200 * time.Millisecond},
		{"canary pause", spec.GetStrategy().GetCanary().GetSteps()[1].GetPause().GetDuration().AsDuration(), 5 * time.Minute},
		{"progress_deadline", spec.GetProgressDeadline().AsDuration(), 10 * time.Minute},
		{"environments[1].overrides.progress_deadline", app.GetEnvironments()[1].GetOverrides().GetProgressDeadline().AsDuration(), time.Hour},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	if spec.GetStrategy().GetCanary().GetSteps()[2].GetPause() == nil {
		t.Error("an empty pause step was lost")
	}
	if spec.GetRollbackPolicy().GetVerificationWindow() == nil {
		t.Error("verification_window: 0s must be set (zero), not absent")
	}
	if app.GetEnvironments()[1].GetOverrides().GetReplicas() != 6 {
		t.Errorf("overrides.replicas = %d", app.GetEnvironments()[1].GetOverrides().GetReplicas())
	}
	// What is sent is protojson the gateway accepts.
	js, err := protojson.Marshal(app)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, &deployerv1.Application{}); err != nil {
		t.Fatalf("round trip: %v", err)
	}
}

func TestDecodeApplicationErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"empty", "  \n", "empty"},
		{"not a mapping", "- a\n- b\n", "mapping"},
		{"unknown key", "name: a\nspec:\n  replicas: 2\n  replicaz: 3\n", `"spec.replicaz"`},
		{"bad duration", "name: a\nspec:\n  progress_deadline: soon\n", `"spec.progress_deadline"`},
		{"wrong type", "name: a\nspec:\n  replicas: many\n", `"spec.replicas"`},
		{"bad yaml", "name: [a\n", "not YAML or JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeApplication([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %s", err, tc.want)
			}
		})
	}
}

func TestDecodeApplicationJSON(t *testing.T) {
	app, err := DecodeApplication([]byte(`{"name":"a","spec":{"image":"x:1","minReady":"1.5s"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if app.GetSpec().GetMinReady().AsDuration() != 1500*time.Millisecond || app.GetSpec().GetImage() != "x:1" {
		t.Fatalf("decoded %v", app)
	}
}

func TestProtoDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{300 * time.Millisecond, "0.3s"},
		{90 * time.Second, "90s"},
		{time.Nanosecond, "0.000000001s"},
		{-1500 * time.Millisecond, "-1.5s"},
		{time.Duration(-1 << 63), "-9223372036.854775808s"},
	} {
		if got := ProtoDuration(tc.d); got != tc.want {
			t.Errorf("ProtoDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// FuzzDecodeApplication: any document either decodes or fails with a
// message; it never panics, and what decodes encodes again.
func FuzzDecodeApplication(f *testing.F) {
	seed, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{string(seed), `{"name":"a"}`, "spec: {progress_deadline: 1h}", "spec:\n  env: [{name: A}]\n", "[", "a: b: c", `{"spec":{"health_check":{"interval":5}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		app, err := DecodeApplication(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if _, err := protojson.Marshal(app); err != nil {
			t.Fatalf("decoded application does not encode: %v", err)
		}
	})
}

func TestUnappliedFields(t *testing.T) {
	def := []*deployerv1.Environment{{Name: "default", Status: &deployerv1.EnvironmentStatus{CurrentRevision: 2}}}
	for _, tc := range []struct {
		name         string
		server, file *deployerv1.Application
		want         string
	}{
		{"same, implicit default environment", &deployerv1.Application{Name: "a", Environments: def}, &deployerv1.Application{Name: "a"}, ""},
		{"status is ignored", &deployerv1.Application{Environments: []*deployerv1.Environment{{Name: "prod", Status: &deployerv1.EnvironmentStatus{ReadyReplicas: 1}}}},
			&deployerv1.Application{Environments: []*deployerv1.Environment{{Name: "prod"}}}, ""},
		{"labels and description", &deployerv1.Application{Labels: map[string]string{"a": "1"}, Environments: def},
			&deployerv1.Application{Description: "new", Labels: map[string]string{"a": "2"}}, "description,labels"},
		{"environments", &deployerv1.Application{Environments: def},
			&deployerv1.Application{Environments: []*deployerv1.Environment{{Name: "staging"}, {Name: "prod", RequiresEnvironment: "staging"}}}, "environments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(UnappliedFields(tc.server, tc.file), ","); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
