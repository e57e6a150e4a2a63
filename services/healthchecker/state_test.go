package healthchecker

import (
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	pass = hcv1.CheckOutcome_CHECK_OUTCOME_PASS
	warn = hcv1.CheckOutcome_CHECK_OUTCOME_WARN
	fail = hcv1.CheckOutcome_CHECK_OUTCOME_FAIL

	pending  = hcv1.CheckState_CHECK_STATE_PENDING
	passing  = hcv1.CheckState_CHECK_STATE_PASSING
	warning  = hcv1.CheckState_CHECK_STATE_WARNING
	critical = hcv1.CheckState_CHECK_STATE_CRITICAL
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
			from: pending, failure: 3, success: 3,
			results:    []hcv1.CheckOutcome{pass, pass, pass, pass},
			wantStates: []hcv1.CheckState{pending, pending, passing, passing},
		},
		{
			name: "pending with success_threshold 1 passes at once",
			from: pending, failure: 3, success: 1,
			results:    []hcv1.CheckOutcome{pass},
			wantStates: []hcv1.CheckState{passing},
		},
		{
			name: "a failure restarts the success count of a pending target",
			from: pending, failure: 3, success: 2,
			results:    []hcv1.CheckOutcome{pass, fail, pass, pass},
			wantStates: []hcv1.CheckState{pending, pending, pending, passing},
		},
		{
			name: "pending turns critical after failure_threshold failures",
			from: pending, failure: 2, success: 1,
			results:    []hcv1.CheckOutcome{fail, fail},
			wantStates: []hcv1.CheckState{pending, critical},
		},
		{
			name: "passing stays passing below failure_threshold then turns critical",
			from: passing, failure: 3, success: 1,
			results:    []hcv1.CheckOutcome{fail, fail, fail, fail},
			wantStates: []hcv1.CheckState{passing, passing, critical, critical},
		},
		{
			name: "a success resets the failure count of a passing target",
			from: passing, failure: 3, success: 1,
			results:    []hcv1.CheckOutcome{fail, fail, pass, fail, fail, fail},
			wantStates: []hcv1.CheckState{passing, passing, passing, passing, passing, critical},
		},
		{
			name: "critical needs success_threshold consecutive successes",
			from: critical, failure: 3, success: 3,
			results:    []hcv1.CheckOutcome{pass, pass, fail, pass, pass, pass},
			wantStates: []hcv1.CheckState{critical, critical, critical, critical, critical, passing},
		},
		{
			name: "warn counts as a success out of critical and lands in warning",
			from: critical, failure: 3, success: 2,
			results:    []hcv1.CheckOutcome{warn, warn},
			wantStates: []hcv1.CheckState{critical, warning},
		},
		{
			name: "the last success decides passing or warning when the threshold is met",
			from: pending, failure: 3, success: 2,
			results:    []hcv1.CheckOutcome{warn, pass},
			wantStates: []hcv1.CheckState{pending, passing},
		},
		{
			name: "passing and warning follow each result",
			from: passing, failure: 3, success: 3,
			results:    []hcv1.CheckOutcome{warn, pass, warn, warn, pass},
			wantStates: []hcv1.CheckState{warning, passing, warning, warning, passing},
		},
		{
			name: "warning stays warning below failure_threshold",
			from: warning, failure: 2, success: 1,
			results:    []hcv1.CheckOutcome{fail, warn, fail, fail},
			wantStates: []hcv1.CheckState{warning, warning, warning, critical},
		},
		{
			name: "zero thresholds act as 1",
			from: pending, failure: 0, success: 0,
			results:    []hcv1.CheckOutcome{pass, fail, pass},
			wantStates: []hcv1.CheckState{passing, critical, passing},
		},
		{
			name: "an unspecified outcome counts as a failure",
			from: passing, failure: 1, success: 1,
			results:    []hcv1.CheckOutcome{hcv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED},
			wantStates: []hcv1.CheckState{critical},
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
				if outcome == pass || outcome == warn {
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
			targets: []tgt{{state: passing}, {state: passing}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY,
			counts:  [4]int32{2, 0, 0, 0},
		},
		{
			name:    "a warning degrades",
			targets: []tgt{{state: passing}, {state: passing}, {state: warning}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{2, 1, 0, 0},
		},
		{
			name:    "1 of 3 critical targets failing is degraded",
			targets: []tgt{{state: passing}, {state: passing}, {state: critical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{2, 0, 1, 0},
		},
		{
			name:    "1 of 2 critical targets failing is unhealthy",
			targets: []tgt{{state: passing}, {state: critical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY,
			counts:  [4]int32{1, 0, 1, 0},
		},
		{
			name:    "2 of 3 failing is unhealthy",
			targets: []tgt{{state: critical}, {state: passing}, {state: critical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY,
			counts:  [4]int32{1, 0, 2, 0},
		},
		{
			name:    "all failing is unhealthy",
			targets: []tgt{{state: critical}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY,
			counts:  [4]int32{0, 0, 1, 0},
		},
		{
			name:    "a failing non-critical target only degrades",
			targets: []tgt{{state: passing}, {state: critical, nonCritical: true}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{1, 0, 1, 0},
		},
		{
			name:    "only non-critical targets, all failing, is degraded",
			targets: []tgt{{state: critical, nonCritical: true}, {state: critical, nonCritical: true}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts:  [4]int32{0, 0, 2, 0},
		},
		{
			name: "non-critical targets do not count towards the half",
			targets: []tgt{
				{state: passing}, {state: passing}, {state: critical},
				{state: passing, nonCritical: true}, {state: passing, nonCritical: true},
			},
			want:   hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED,
			counts: [4]int32{4, 0, 1, 0},
		},
		{
			name:    "pending does not fail",
			targets: []tgt{{state: passing}, {state: pending}, {state: hcv1.CheckState_CHECK_STATE_UNSPECIFIED}},
			want:    hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY,
			counts:  [4]int32{1, 0, 0, 2},
		},
		{
			name:    "pending targets still count as critical targets",
			targets: []tgt{{state: critical}, {state: pending}, {state: pending}},
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
