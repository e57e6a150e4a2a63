package healthchecker

import (
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	outPass = hcv1.CheckOutcome_CHECK_OUTCOME_PASS
	outWarn = hcv1.CheckOutcome_CHECK_OUTCOME_WARN
	outFail = hcv1.CheckOutcome_CHECK_OUTCOME_FAIL

	statePending  = hcv1.CheckState_CHECK_STATE_PENDING
	statePassing  = hcv1.CheckState_CHECK_STATE_PASSING
	stateWarning  = hcv1.CheckState_CHECK_STATE_WARNING
	stateCritical = hcv1.CheckState_CHECK_STATE_CRITICAL
)

func TestApplyResult(t *testing.T) {
	tests := []struct {
		name       string
		from       hcv1.CheckState
		failure    uint32
		success    uint32
		results    []hcv1.CheckOutcome
		wantStates []hcv1.CheckState // state after each result
	}{
		{
			name: "pending turns passing after success_threshold successes",
			from: statePending, failure: 3, success: 3,
			results:    []hcv1.CheckOutcome{outPass, outPass, outPass, outPass},
			wantStates: []hcv1.CheckState{statePending, statePending, statePassing, statePassing},
		},
		{
			name: "pending with success_threshold 1 passes at once",
			from: statePending, failure: 3, success: 1,
			results:    []hcv1.CheckOutcome{outPass},
			wantStates: []hcv1.CheckState{statePassing},
		},
		{
			name: "a failure restarts the success count of a pending target",
			from: statePending, failure: 3, success: 2,
			results:    []hcv1.CheckOutcome{outPass, outFail, outPass, outPass},
			wantStates: []hcv1.CheckState{statePending, statePending, statePending, statePassing},
		},
		{
			name: "pending turns critical after failure_threshold failures",
			from: statePending, failure: 2, success: 1,
			results:    []hcv1.CheckOutcome{outFail, outFail},
			wantStates: []hcv1.CheckState{statePending, stateCritical},
		},
		{
			name: "passing stays passing below failure_threshold then turns critical",
			from: statePassing, failure: 3, success: 1,
			results:    []hcv1.CheckOutcome{outFail, outFail, outFail, outFail},
			wantStates: []hcv1.CheckState{statePassing, statePassing, stateCritical, stateCritical},
		},
		{
			name: "a success resets the failure count of a passing target",
			from: statePassing, failure: 3, success: 1,
			results:    []hcv1.CheckOutcome{outFail, outFail, outPass, outFail, outFail, outFail},
			wantStates: []hcv1.CheckState{statePassing, statePassing, statePassing, statePassing, statePassing, stateCritical},
		},
		{
			name: "critical needs success_threshold consecutive successes",
			from: stateCritical, failure: 3, success: 3,
			results:    []hcv1.CheckOutcome{outPass, outPass, outFail, outPass, outPass, outPass},
			wantStates: []hcv1.CheckState{stateCritical, stateCritical, stateCritical, stateCritical, stateCritical, statePassing},
		},
		{
			name: "warn counts as a success out of critical and lands in warning",
			from: stateCritical, failure: 3, success: 2,
			results:    []hcv1.CheckOutcome{outWarn, outWarn},
			wantStates: []hcv1.CheckState{stateCritical, stateWarning},
		},
		{
			name: "the last success decides passing or warning when the threshold is met",
			from: statePending, failure: 3, success: 2,
			results:    []hcv1.CheckOutcome{outWarn, outPass},
			wantStates: []hcv1.CheckState{statePending, statePassing},
		},
		{
			name: "passing and warning follow each result",
			from: statePassing, failure: 3, success: 3,
			results:    []hcv1.CheckOutcome{outWarn, outPass, outWarn, outWarn, outPass},
			wantStates: []hcv1.CheckState{stateWarning, statePassing, stateWarning, stateWarning, statePassing},
		},
		{
			name: "warning stays warning below failure_threshold",
			from: stateWarning, failure: 2, success: 1,
			results:    []hcv1.CheckOutcome{outFail, outWarn, outFail, outFail},
			wantStates: []hcv1.CheckState{stateWarning, stateWarning, stateWarning, stateCritical},
		},
		{
			name: "zero thresholds act as 1",
			from: statePending, failure: 0, success: 0,
			results:    []hcv1.CheckOutcome{outPass, outFail, outPass},
			wantStates: []hcv1.CheckState{statePassing, stateCritical, statePassing},
		},
		{
			name: "an unspecified outcome counts as a failure",
			from: statePassing, failure: 1, success: 1,
			results:    []hcv1.CheckOutcome{hcv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED},
			wantStates: []hcv1.CheckState{stateCritical},
		},
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &hcv1.TargetStatus{State: tt.from}
			var wantTransition *timestamppb.Timestamp
			var wantFailures, wantSuccesses uint32
			for i, outcome := range tt.results {
				res := &hcv1.CheckResult{Outcome: outcome, Time: timestamppb.New(base.Add(time.Duration(i) * time.Second))}
				prev := st.GetState()
				changed := applyResult(st, tt.failure, tt.success, res)

				if got, want := st.GetState(), tt.wantStates[i]; got != want {
					t.Fatalf("result %d (%s): state %s, want %s", i, outcome, got, want)
				}
				if want := prev != st.GetState(); changed != want {
					t.Errorf("result %d (%s): changed = %t, want %t", i, outcome, changed, want)
				}
				if changed {
					wantTransition = res.GetTime()
				}
				if !proto.Equal(st.GetLastTransitionTime(), wantTransition) {
					t.Errorf("result %d (%s): last_transition_time %v, want %v", i, outcome, st.GetLastTransitionTime().AsTime(), wantTransition.AsTime())
				}
				if st.GetLastResult() != res {
					t.Errorf("result %d: last_result is not the applied result", i)
				}
				if outcome == outPass || outcome == outWarn {
					wantSuccesses, wantFailures = wantSuccesses+1, 0
				} else {
					wantSuccesses, wantFailures = 0, wantFailures+1
				}
				if st.GetConsecutiveSuccesses() != wantSuccesses || st.GetConsecutiveFailures() != wantFailures {
					t.Errorf("result %d: consecutive successes/failures %d/%d, want %d/%d",
						i, st.GetConsecutiveSuccesses(), st.GetConsecutiveFailures(), wantSuccesses, wantFailures)
				}
			}
		})
	}
}

func TestRollUp(t *testing.T) {
	type tgt struct {
		state       hcv1.CheckState
		nonCritical bool
	}
	tests := []struct {
		name    string
		targets []tgt
		want    hcv1.OverallHealth
		// counts: passing, warning, critical, pending
		counts [4]int32
	}{
		{
			name: "no targets is healthy",
			want: hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY,
		},
		{
			name:    "all passing is healthy",
			targets: []tgt{{state: statePassing}, {state: statePassing}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY,
			counts:  [4]int32{2, 0, 0, 0},
		},
		{
			name:    "a warning degrades",
			targets: []tgt{{state: statePassing}, {state: statePassing}, {state: stateWarning}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{2, 1, 0, 0},
		},
		{
			name:    "1 of 3 critical targets failing is degraded",
			targets: []tgt{{state: statePassing}, {state: statePassing}, {state: stateCritical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{2, 0, 1, 0},
		},
		{
			name:    "1 of 2 critical targets failing is unhealthy",
			targets: []tgt{{state: statePassing}, {state: stateCritical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY,
			counts:  [4]int32{1, 0, 1, 0},
		},
		{
			name:    "2 of 3 failing is unhealthy",
			targets: []tgt{{state: stateCritical}, {state: statePassing}, {state: stateCritical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY,
			counts:  [4]int32{1, 0, 2, 0},
		},
		{
			name:    "all failing is unhealthy",
			targets: []tgt{{state: stateCritical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY,
			counts:  [4]int32{0, 0, 1, 0},
		},
		{
			name:    "a failing non-critical target only degrades",
			targets: []tgt{{state: statePassing}, {state: stateCritical, nonCritical: true}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{1, 0, 1, 0},
		},
		{
			name:    "only non-critical targets, all failing, is degraded",
			targets: []tgt{{state: stateCritical, nonCritical: true}, {state: stateCritical, nonCritical: true}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{0, 0, 2, 0},
		},
		{
			name: "non-critical targets do not count towards the half",
			targets: []tgt{
				{state: statePassing}, {state: statePassing}, {state: stateCritical},
				{state: statePassing, nonCritical: true}, {state: statePassing, nonCritical: true},
			},
			want:   hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts: [4]int32{4, 0, 1, 0},
		},
		{
			name:    "pending does not fail",
			targets: []tgt{{state: statePassing}, {state: statePending}, {state: hcv1.CheckState_CHECK_STATE_UNSPECIFIED}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY,
			counts:  [4]int32{1, 0, 0, 2},
		},
		{
			name:    "pending targets still count as critical targets",
			targets: []tgt{{state: stateCritical}, {state: statePending}, {state: statePending}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{0, 0, 1, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets := make([]*hcv1.Target, len(tt.targets))
			for i, x := range tt.targets {
				targets[i] = &hcv1.Target{NonCritical: x.nonCritical}
				if x.state != hcv1.CheckState_CHECK_STATE_UNSPECIFIED {
					targets[i].Status = &hcv1.TargetStatus{State: x.state}
				}
			}
			got := rollUp(targets)
			if got.GetHealth() != tt.want {
				t.Errorf("health = %s, want %s", got.GetHealth(), tt.want)
			}
			counts := [4]int32{got.GetPassing(), got.GetWarning(), got.GetCritical(), got.GetPending()}
			if counts != tt.counts {
				t.Errorf("passing/warning/critical/pending = %v, want %v", counts, tt.counts)
			}
			if got.GetTotal() != int32(len(targets)) || len(got.GetTargets()) != len(targets) {
				t.Errorf("total %d with %d targets, want %d", got.GetTotal(), len(got.GetTargets()), len(targets))
			}
		})
	}
}
