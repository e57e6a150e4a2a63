package healthchecker

import (
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
)

// applyResult advances a target's status by one check result with
// Kubernetes/Consul threshold semantics and reports whether its state
// changed. A warning counts as a success. Pending or critical targets turn
// passing (or warning) after success_threshold consecutive successes;
// pending, passing or warning targets turn critical after
// failure_threshold consecutive failures; passing and warning follow each
// result directly.
func applyResult(st *hcv1.TargetStatus, failureThreshold, successThreshold uint32, res *hcv1.CheckResult) (changed bool) {
	prev := st.GetState()
	st.LastResult = res
	ok := res.GetOutcome() == hcv1.CheckOutcome_CHECK_OUTCOME_PASS || res.GetOutcome() == hcv1.CheckOutcome_CHECK_OUTCOME_WARN
	okState := hcv1.CheckState_CHECK_STATE_PASSING
	if res.GetOutcome() == hcv1.CheckOutcome_CHECK_OUTCOME_WARN {
		okState = hcv1.CheckState_CHECK_STATE_WARNING
	}
	if ok {
		st.ConsecutiveSuccesses++
		st.ConsecutiveFailures = 0
		switch prev {
		case hcv1.CheckState_CHECK_STATE_PASSING, hcv1.CheckState_CHECK_STATE_WARNING:
			st.State = okState
		default:
			if st.ConsecutiveSuccesses >= max(successThreshold, 1) {
				st.State = okState
			}
		}
	} else {
		st.ConsecutiveFailures++
		st.ConsecutiveSuccesses = 0
		if prev != hcv1.CheckState_CHECK_STATE_CRITICAL && st.ConsecutiveFailures >= max(failureThreshold, 1) {
			st.State = hcv1.CheckState_CHECK_STATE_CRITICAL
		}
	}
	if st.State == hcv1.CheckState_CHECK_STATE_UNSPECIFIED {
		st.State = hcv1.CheckState_CHECK_STATE_PENDING
	}
	if st.State != prev {
		st.LastTransitionTime = res.GetTime()
		return true
	}
	return false
}

// rollUp computes overall health over targets: no failing target and no
// warning is healthy; a critical target failing while fewer than half of the
// critical targets fail is degraded, half or more is unhealthy; failing
// non-critical targets and warnings degrade at most. Pending targets are
// counted but do not fail.
func rollUp(targets []*hcv1.Target) *hcv1.GetHealthResponse {
	resp := &hcv1.GetHealthResponse{Targets: targets, Total: int32(len(targets))}
	var critical, criticalFailing int
	var degraded bool
	for _, t := range targets {
		state := t.GetStatus().GetState()
		if !t.GetNonCritical() {
			critical++
		}
		switch state {
		case hcv1.CheckState_CHECK_STATE_PASSING:
			resp.Passing++
		case hcv1.CheckState_CHECK_STATE_WARNING:
			resp.Warning++
			degraded = true
		case hcv1.CheckState_CHECK_STATE_CRITICAL:
			resp.Critical++
			degraded = true
			if !t.GetNonCritical() {
				criticalFailing++
			}
		default:
			resp.Pending++
		}
	}
	switch {
	case criticalFailing > 0 && criticalFailing*2 >= critical:
		resp.Health = hcv1.OverallHealth_OVERALL_HEALTH_UNHEALTHY
	case degraded:
		resp.Health = hcv1.OverallHealth_OVERALL_HEALTH_DEGRADED
	default:
		resp.Health = hcv1.OverallHealth_OVERALL_HEALTH_HEALTHY
	}
	return resp
}
