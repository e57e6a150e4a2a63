package appspec_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opsuite/opsuite/services/deployer/internal/appspec"
)

func TestLoadAndValidateFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			app, err := appspec.Load(data)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := appspec.Validate(app); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestLoadNamesUnknownAndMistypedKeys(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"name: a\nspec:\n  imag: x\n", `"spec.imag"`},
		{"name: a\nspec:\n  replicas: many\n", `"spec.replicas"`},
		{"name: a\nspec:\n  ports:\n    - container_port: 80\n    - container_port: eighty\n", `"spec.ports[1].container_port"`},
		{"name: a\nspec:\n  progress_deadline: soon\n", `"spec.progress_deadline"`},
		{"name: [unclosed\n", "cannot decode"},
		{"", "empty"},
		{"- a\n- b\n", "cannot decode"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := appspec.Load([]byte(tc.doc))
			if err == nil || !errors.Is(err, appspec.ErrDecode) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want ErrDecode mentioning %s", err, tc.want)
			}
		})
	}
	if _, err := appspec.Load(make([]byte, appspec.MaxFileBytes+1)); err == nil {
		t.Fatal("accepted an oversized file")
	}
}

func TestValidateNamesTheField(t *testing.T) {
	base := "name: shop\nspec:\n  image: shop:v1\n  ports: [{container_port: 8080}]\n"
	for _, tc := range []struct {
		name, doc, field string
	}{
		{"bad app name", "name: Shop_1\nspec: {image: shop:v1}\n", "name"},
		{"no spec", "name: shop\n", "spec"},
		{"no workload", "name: shop\nspec: {replicas: 1}\n", "spec.workload"},
		{"bad image", "name: shop\nspec: {image: 'Shop:latest:x'}\n", "spec.image"},
		{"empty argv", "name: shop\nspec: {process: {argv: []}}\n", "spec.process.argv"},
		{"relative working dir", base + "  working_dir: app\n", "spec.working_dir"},
		{"bad env name", base + "  env: [{name: 1X, value: a}]\n", "spec.env[0].name"},
		{"duplicate env", base + "  env: [{name: A}, {name: A}]\n", "spec.env[1].name"},
		{"port zero", "name: shop\nspec: {image: a, ports: [{container_port: 0}]}\n", "spec.ports[0].container_port"},
		{"port too big", "name: shop\nspec: {image: a, ports: [{container_port: 70000}]}\n", "spec.ports[0].container_port"},
		{"duplicate port", "name: shop\nspec: {image: a, ports: [{container_port: 80}, {container_port: 80}]}\n", "spec.ports[1].container_port"},
		{"negative replicas", base + "  replicas: -1\n", "spec.replicas"},
		{"too many replicas", base + "  replicas: 100000\n", "spec.replicas"},
		{"relative volume target", base + "  volumes: [{target: data, named_volume: v}]\n", "spec.volumes[0].target"},
		{"volume without source", base + "  volumes: [{target: /data}]\n", "spec.volumes[0].source"},
		{"health port not exposed", base + "  health_check: {http: {path: /h, port: 9999}}\n", "spec.health_check.http.port"},
		{"health path relative", base + "  health_check: {http: {path: h}}\n", "spec.health_check.http.path"},
		{"health probe missing", base + "  health_check: {interval: 1s}\n", "spec.health_check"},
		{"health timeout over interval", base + "  health_check: {tcp: {}, interval: 1s, timeout: 2s}\n", "spec.health_check.timeout"},
		{"rolling stuck", base + "  strategy: {rolling: {max_surge: {count: 0}, max_unavailable: {count: 0}}}\n", "spec.strategy.rolling"},
		{"rolling percent", base + "  strategy: {rolling: {max_surge: {percent: 150}}}\n", "spec.strategy.rolling.max_surge.percent"},
		{"canary without steps", base + "  strategy: {canary: {}}\n", "spec.strategy.canary.steps"},
		{"canary weight too big", base + "  strategy: {canary: {steps: [{set_weight: {weight: 120}}]}}\n", "spec.strategy.canary.steps[0].set_weight.weight"},
		{"canary weight going down", base + "  strategy: {canary: {steps: [{set_weight: {weight: 50}}, {set_weight: {weight: 20}}]}}\n", "spec.strategy.canary.steps[1].set_weight.weight"},
		{"canary empty step", base + "  strategy: {canary: {steps: [{}]}}\n", "spec.strategy.canary.steps[0]"},
		{"blue-green delay without auto", base + "  strategy: {blue_green: {auto_promote_delay: 10s}}\n", "spec.strategy.blue_green.auto_promote_delay"},
		{"analysis without comparison", base + "  strategy: {canary: {steps: [{analysis: {analysis: {metrics: [{name: errors, router: {kind: ROUTER_METRIC_KIND_ERROR_RATIO}}]}}}]}}\n", "spec.strategy.canary.steps[0].analysis.analysis.metrics[0].comparison"},
		{"analysis metric without source", base + "  strategy: {canary: {steps: [{analysis: {analysis: {metrics: [{name: errors, comparison: COMPARISON_LESS_THAN}]}}}]}}\n", "spec.strategy.canary.steps[0].analysis.analysis.metrics[0]"},
		{"analysis empty query", base + "  strategy: {canary: {steps: [{analysis: {analysis: {metrics: [{name: q, monitor: {query: ' '}, comparison: COMPARISON_LESS_THAN}]}}}]}}\n", "spec.strategy.canary.steps[0].analysis.analysis.metrics[0].monitor.query"},
		{"analysis window over interval", base + "  strategy: {canary: {steps: [{analysis: {analysis: {interval: 1s, metrics: [{name: e, router: {kind: ROUTER_METRIC_KIND_LATENCY, window: 5s}, comparison: COMPARISON_LESS_THAN}]}}}]}}\n", "spec.strategy.canary.steps[0].analysis.analysis.metrics[0].router.window"},
		{"background analysis with count", base + "  strategy: {canary: {steps: [{set_weight: {weight: 10}}], background_analysis: {count: 3, metrics: [{name: e, router: {kind: ROUTER_METRIC_KIND_ERROR_RATIO}, comparison: COMPARISON_LESS_THAN}]}}}\n", "spec.strategy.canary.background_analysis.count"},
		{"ignore failed health", base + "  rollback_policy: {on_failed_health: FAILURE_ACTION_IGNORE}\n", "spec.rollback_policy.on_failed_health"},
		{"bad alert label", base + "  rollback_policy: {alert_match_labels: {'a-b': x}}\n", "spec.rollback_policy.alert_match_labels"},
		{"negative deadline", base + "  progress_deadline: -5s\n", "spec.progress_deadline"},
		{"absurd deadline", base + "  progress_deadline: 100000s\n", "spec.progress_deadline"},
		{"autoscaling min over max", base + "  autoscaling: {min_replicas: 5, max_replicas: 2}\n", "spec.autoscaling"},
		{"duplicate environment", base + "environments: [{name: prod}, {name: prod}]\n", "environments[1].name"},
		{"unknown required environment", base + "environments: [{name: prod, requires_environment: qa}]\n", "environments[0].requires_environment"},
		{"bad memory", base + "  resources: {memory_bytes: 1024}\n", "spec.resources.memory_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, err := appspec.Load([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			err = appspec.Validate(app)
			var ve *appspec.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a ValidationError on %s", err, tc.field)
			}
			var fields []string
			for _, f := range ve.Fields {
				fields = append(fields, f.Field)
			}
			if !slices.Contains(fields, tc.field) {
				t.Fatalf("errors on %q, want one on %s (%v)", fields, tc.field, err)
			}
		})
	}
}

// FuzzLoadValidate: arbitrary files never panic Load or Validate.
func FuzzLoadValidate(f *testing.F) {
	for _, name := range []string{"testdata/shop.yaml", "testdata/worker.json"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("name: a\nspec: {strategy: {canary: {steps: [{set_weight: {weight: 5}}]}}}\n"))
	f.Add([]byte("{\"name\": 1}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		app, err := appspec.Load(data)
		if err != nil {
			return
		}
		_ = appspec.Validate(app)
	})
}
