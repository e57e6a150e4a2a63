package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func count(n int32) *deployerv1.ReplicaQuantity {
	return &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: n}}
}

func rollingStrategy(surge, unavail int32) *deployerv1.Strategy {
	return &deployerv1.Strategy{Kind: &deployerv1.Strategy_Rolling{Rolling: &deployerv1.RollingStrategy{MaxSurge: count(surge), MaxUnavailable: count(unavail)}}}
}

// TestRollingKeepsItsBounds checks every rolling plan over a grid of sizes
// and bounds: replicas never exceed desired+surge, ready replicas never drop
// below desired-unavailable, and the plan ends with only new replicas.
func TestRollingKeepsItsBounds(t *testing.T) {
	for n := int32(1); n <= 8; n++ {
		for cur := int32(0); cur <= 8; cur++ {
			for s := int32(0); s <= 3; s++ {
				for u := int32(0); u <= 3; u++ {
					if s == 0 && u == 0 {
						continue
					}
					steps, _ := Plan(Input{Strategy: rollingStrategy(s, u), Desired: n, Current: cur})
					name := fmt.Sprintf("n=%d cur=%d surge=%d unavail=%d", n, cur, s, u)
					last := steps[len(steps)-1]
					if last.GetNewReplicas() != n || last.GetOldReplicas() != 0 {
						t.Fatalf("%s: ends with %d new, %d old", name, last.GetNewReplicas(), last.GetOldReplicas())
					}
					if cur == 0 {
						continue
					}
					floor := min(n, cur) - u
					for _, st := range steps {
						total := st.GetNewReplicas() + st.GetOldReplicas()
						if total > max(n, cur)+s {
							t.Fatalf("%s: step %q has %d replicas, over %d+%d", name, st.GetDescription(), total, max(n, cur), s)
						}
						if total < floor {
							t.Fatalf("%s: step %q leaves %d replicas, under %d", name, st.GetDescription(), total, floor)
						}
					}
				}
			}
		}
	}
}

func TestDefaultStrategyIsZeroDowntimeRolling(t *testing.T) {
	steps, warnings := Plan(Input{Desired: 3, Current: 3, Estimates: Estimates{ReplicaReady: 2 * time.Second, Drain: time.Second}})
	if len(warnings) != 0 {
		t.Errorf("warnings %v", warnings)
	}
	var kinds []string
	for _, s := range steps {
		kinds = append(kinds, strings.TrimPrefix(s.GetKind().String(), "STEP_KIND_"))
		if s.GetNewReplicas()+s.GetOldReplicas() < 3 {
			t.Fatalf("step %q leaves fewer than 3 replicas", s.GetDescription())
		}
	}
	want := "BATCH SCALE_DOWN BATCH SCALE_DOWN BATCH SCALE_DOWN"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("steps %s, want %s", got, want)
	}
	if got := Total(steps); got != 9*time.Second {
		t.Fatalf("expected duration %s, want 9s", got)
	}
}

func TestRecreateWarnsOfDowntime(t *testing.T) {
	steps, warnings := Plan(Input{Strategy: &deployerv1.Strategy{Kind: &deployerv1.Strategy_Recreate{Recreate: &deployerv1.RecreateStrategy{}}}, Desired: 2, Current: 2})
	if len(steps) != 2 || steps[0].GetKind() != deployerv1.StepKind_STEP_KIND_SCALE_DOWN || steps[1].GetKind() != deployerv1.StepKind_STEP_KIND_SCALE_UP {
		t.Fatalf("steps %v", steps)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "downtime") {
		t.Fatalf("warnings %v", warnings)
	}
}

func TestBlueGreen(t *testing.T) {
	bg := &deployerv1.Strategy{Kind: &deployerv1.Strategy_BlueGreen{BlueGreen: &deployerv1.BlueGreenStrategy{
		AutoPromote: true, AutoPromoteDelay: durationpb.New(5 * time.Second), ScaleDownDelay: durationpb.New(30 * time.Second),
	}}}
	steps, _ := Plan(Input{Strategy: bg, Desired: 3, Current: 3, Routed: true})
	var kinds []deployerv1.StepKind
	for _, s := range steps {
		kinds = append(kinds, s.GetKind())
	}
	want := []deployerv1.StepKind{
		deployerv1.StepKind_STEP_KIND_SCALE_UP, deployerv1.StepKind_STEP_KIND_PAUSE, deployerv1.StepKind_STEP_KIND_SWITCH,
		deployerv1.StepKind_STEP_KIND_PAUSE, deployerv1.StepKind_STEP_KIND_SCALE_DOWN,
	}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("steps %v, want %v", kinds, want)
	}
	sw := steps[2]
	if sw.GetWeight() != 100 || sw.GetNewReplicas() != 3 || sw.GetOldReplicas() != 3 {
		t.Fatalf("switch step %v: want 100%% with both colours at full size", sw)
	}
}

func TestCanaryFollowsWeights(t *testing.T) {
	steps := []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 10}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{Duration: durationpb.New(time.Minute)}}},
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 50}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
	}
	plan, _ := Plan(Input{
		Strategy: &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: steps}}},
		Desired:  4, Current: 4, Routed: true,
		Estimates: Estimates{UntilPromoted: time.Hour},
	})
	var got []string
	for _, s := range plan {
		got = append(got, fmt.Sprintf("%s w=%d new=%d old=%d", strings.TrimPrefix(s.GetKind().String(), "STEP_KIND_"), s.GetWeight(), s.GetNewReplicas(), s.GetOldReplicas()))
	}
	want := []string{
		"SCALE_UP w=0 new=1 old=4",
		"SET_WEIGHT w=10 new=1 old=4",
		"PAUSE w=10 new=1 old=4",
		"SCALE_UP w=10 new=2 old=4",
		"SET_WEIGHT w=50 new=2 old=4",
		"PAUSE w=50 new=2 old=4",
		"SCALE_UP w=50 new=4 old=4",
		"SWITCH w=100 new=4 old=4",
		"SCALE_DOWN w=100 new=4 old=0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := Total(plan); d < time.Hour+time.Minute {
		t.Fatalf("total %s should count the pauses", d)
	}
}

func TestFirstDeployStartsEverythingAtOnce(t *testing.T) {
	canary := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 10}}},
		{Step: &deployerv1.CanaryStep_Analysis{Analysis: &deployerv1.AnalysisStep{Analysis: &deployerv1.Analysis{}}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
	}}}}
	blueGreen := &deployerv1.Strategy{Kind: &deployerv1.Strategy_BlueGreen{BlueGreen: &deployerv1.BlueGreenStrategy{}}}
	for name, st := range map[string]*deployerv1.Strategy{"rolling": rollingStrategy(1, 0), "canary": canary, "blue-green": blueGreen} {
		steps, _ := Plan(Input{Strategy: st, Desired: 5})
		if len(steps) != 1 || steps[0].GetNewReplicas() != 5 || steps[0].GetWeight() != 100 {
			t.Fatalf("first deploy (%s): %v", name, steps)
		}
	}
}

// TestPlatformRollsIsOneStep: where the platform replaces replicas itself
// (a Kubernetes Deployment), rolling and recreate hand it the whole update
// in one step; blue-green and canary keep their steps.
func TestPlatformRollsIsOneStep(t *testing.T) {
	canary := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 25}}},
	}}}}
	cases := []struct {
		name     string
		strategy *deployerv1.Strategy
		steps    int
		warn     string
	}{
		{"default", nil, 1, ""},
		{"rolling", rollingStrategy(2, 1), 1, ""},
		{"recreate", &deployerv1.Strategy{Kind: &deployerv1.Strategy_Recreate{Recreate: &deployerv1.RecreateStrategy{}}}, 1, "downtime"},
		{"blue-green", &deployerv1.Strategy{Kind: &deployerv1.Strategy_BlueGreen{BlueGreen: &deployerv1.BlueGreenStrategy{AutoPromote: true}}}, 4, ""},
		{"canary", canary, 5, "replica ratios"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			steps, warnings := Plan(Input{Strategy: c.strategy, Desired: 4, Current: 4, Routed: true, PlatformRolls: true})
			if len(steps) != c.steps {
				t.Fatalf("%d steps, want %d: %v", len(steps), c.steps, steps)
			}
			last := steps[len(steps)-1]
			if last.GetNewReplicas() != 4 || last.GetOldReplicas() != 0 || last.GetWeight() != 100 {
				t.Errorf("last step %v, want 4 new, 0 old, all traffic", last)
			}
			if got := strings.Join(warnings, "; "); (c.warn == "") != (got == "") || !strings.Contains(got, c.warn) {
				t.Errorf("warnings %q, want one about %q", got, c.warn)
			}
		})
	}
	// A first deploy is one step whatever the platform.
	steps, _ := Plan(Input{Strategy: rollingStrategy(1, 0), Desired: 3, PlatformRolls: true})
	if len(steps) != 1 || steps[0].GetNewReplicas() != 3 {
		t.Fatalf("first deploy: %v", steps)
	}
}
