// Package rollout turns a strategy into the ordered steps of a rollout and
// (as it grows) drives them. Planning is pure: the same inputs give the same
// steps, which is what PlanDeploy shows before anything is applied.
package rollout

import (
	"fmt"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
)

// Estimates are the durations planning assumes for work it cannot know
// exactly.
type Estimates struct {
	// ReplicaReady is from starting a replica to its health check passing.
	ReplicaReady time.Duration
	// Drain is from taking a replica out of rotation to stopping it.
	Drain time.Duration
	// Switch is a traffic change taking effect.
	Switch time.Duration
	// UntilPromoted stands for an indefinite pause when summing durations.
	UntilPromoted time.Duration
}

// DefaultEstimates derives estimates from a health check: the first check
// after an initial delay, then success_threshold passing checks.
func DefaultEstimates(hc *deployerv1.HealthCheck) Estimates {
	interval := time.Second
	if d := hc.GetInterval().AsDuration(); d > 0 {
		interval = d
	}
	succ := max(int(hc.GetSuccessThreshold()), 1)
	ready := time.Second + hc.GetInitialDelay().AsDuration() + time.Duration(succ)*interval
	return Estimates{ReplicaReady: ready, Drain: time.Second, Switch: 100 * time.Millisecond}
}

// Input is what a plan depends on.
type Input struct {
	Strategy *deployerv1.Strategy
	// Desired replicas of the new revision.
	Desired int32
	// Current replicas of the old revision (0 on a first deploy).
	Current int32
	// Routed says a traffic router fronts the replicas (weights and switches
	// are real); without it canary weights become replica ratios.
	Routed bool
	// PlatformRolls says the platform replaces replicas itself (a
	// Kubernetes Deployment with its maxSurge and maxUnavailable): a rolling
	// or recreate update is one step that hands it the new revision and
	// waits, and canary weights are replica ratios.
	PlatformRolls bool
	Estimates     Estimates
}

// Plan returns the steps of a rollout and warnings a person should read.
func Plan(in Input) ([]*deployerv1.PlannedStep, []string) {
	p := &planner{in: in, newN: 0, oldN: in.Current}
	if in.Current == 0 {
		// A first deploy has no traffic to protect and nothing to compare
		// with: every strategy starts all replicas at once (like Argo
		// Rollouts' initial deploy) — canary steps, analysis and
		// blue-green previews begin with the second revision.
		p.weight = 100
		p.scaleUp(in.Desired)
		return p.steps, p.warnings
	}
	switch k := in.Strategy.GetKind().(type) {
	case *deployerv1.Strategy_Recreate, *deployerv1.Strategy_Rolling, nil:
		if in.PlatformRolls {
			p.delegated(k)
			return p.steps, p.warnings
		}
	}
	switch k := in.Strategy.GetKind().(type) {
	case *deployerv1.Strategy_Recreate:
		p.recreate()
	case *deployerv1.Strategy_BlueGreen:
		p.blueGreen(k.BlueGreen)
	case *deployerv1.Strategy_Canary:
		p.canary(k.Canary)
	case *deployerv1.Strategy_Rolling:
		p.rolling(k.Rolling)
	default:
		// Zero downtime is the default: one extra replica at a time, none
		// taken away before its replacement is ready.
		p.rolling(&deployerv1.RollingStrategy{
			MaxSurge:       &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 1}},
			MaxUnavailable: &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 0}},
		})
	}
	return p.steps, p.warnings
}

// Total sums the steps' expected durations.
func Total(steps []*deployerv1.PlannedStep) time.Duration {
	var d time.Duration
	for _, s := range steps {
		d += s.GetExpectedDuration().AsDuration()
	}
	return d
}

type planner struct {
	in         Input
	newN, oldN int32
	weight     int32
	steps      []*deployerv1.PlannedStep
	warnings   []string
}

func (p *planner) add(kind deployerv1.StepKind, d time.Duration, format string, args ...any) {
	p.steps = append(p.steps, &deployerv1.PlannedStep{
		Index:            int32(len(p.steps)),
		Kind:             kind,
		Description:      fmt.Sprintf(format, args...),
		Weight:           p.weight,
		NewReplicas:      p.newN,
		OldReplicas:      p.oldN,
		ExpectedDuration: durationOf(d),
	})
}

func (p *planner) scaleUp(to int32) {
	if to <= p.newN {
		return
	}
	n := to - p.newN
	p.newN = to
	p.add(deployerv1.StepKind_STEP_KIND_SCALE_UP, p.in.Estimates.ReplicaReady, "start %d new replica(s) and wait until healthy", n)
}

func (p *planner) scaleDown(to int32) {
	if to >= p.oldN {
		return
	}
	n := p.oldN - to
	p.oldN = to
	p.add(deployerv1.StepKind_STEP_KIND_SCALE_DOWN, p.in.Estimates.Drain, "drain and stop %d old replica(s)", n)
}

// delegated is a rolling or recreate update the platform carries out.
func (p *planner) delegated(k any) {
	n := p.in.Desired
	p.weight, p.newN, p.oldN = 100, n, 0
	if _, ok := k.(*deployerv1.Strategy_Recreate); ok {
		p.warnings = append(p.warnings, "recreate stops every old replica before starting new ones: expect downtime")
		p.add(deployerv1.StepKind_STEP_KIND_BATCH, p.in.Estimates.Drain+p.in.Estimates.ReplicaReady,
			"replace all %d replica(s) at once and wait until ready", n)
		return
	}
	r := p.in.Strategy.GetRolling()
	surge := quantity(r.GetMaxSurge(), n, true, 1)
	unavail := quantity(r.GetMaxUnavailable(), n, false, 0)
	batches := max((n+max(surge+unavail, 1)-1)/max(surge+unavail, 1), 1)
	p.add(deployerv1.StepKind_STEP_KIND_BATCH, time.Duration(batches)*(p.in.Estimates.ReplicaReady+p.in.Estimates.Drain),
		"roll %d replica(s) to the new revision, at most %d extra and %d unavailable at a time, and wait until ready", n, surge, unavail)
}

func (p *planner) recreate() {
	if p.oldN > 0 {
		p.warnings = append(p.warnings, "recreate stops every old replica before starting new ones: expect downtime")
	}
	p.scaleDown(0)
	p.weight = 100
	p.scaleUp(p.in.Desired)
}

// quantity resolves a count or percent of desired (percent rounds up for
// surge, down for unavailable, as Kubernetes does).
func quantity(q *deployerv1.ReplicaQuantity, desired int32, roundUp bool, def int32) int32 {
	switch v := q.GetValue().(type) {
	case *deployerv1.ReplicaQuantity_Count:
		return v.Count
	case *deployerv1.ReplicaQuantity_Percent:
		if roundUp {
			return (desired*v.Percent + 99) / 100
		}
		return desired * v.Percent / 100
	}
	return def
}

func (p *planner) rolling(r *deployerv1.RollingStrategy) {
	n := p.in.Desired
	surge := quantity(r.GetMaxSurge(), n, true, 1)
	unavail := quantity(r.GetMaxUnavailable(), n, false, 0)
	if surge == 0 && unavail == 0 {
		surge = 1 // validation refuses this; never plan a rollout that cannot move
	}
	p.weight = 100
	if p.oldN == 0 {
		p.scaleUp(n)
		return
	}
	for batch := 1; p.newN < n || p.oldN > 0; batch++ {
		// Start what the surge allows, then stop what availability allows.
		start := min(n+surge-(p.oldN+p.newN), n-p.newN)
		if start > 0 {
			p.newN += start
			p.add(deployerv1.StepKind_STEP_KIND_BATCH, p.in.Estimates.ReplicaReady, "batch %d: start %d new replica(s), wait until healthy", batch, start)
		}
		stop := min(p.oldN, p.oldN+p.newN-(n-unavail))
		if p.newN == n {
			stop = p.oldN
		}
		if stop > 0 {
			p.oldN -= stop
			p.add(deployerv1.StepKind_STEP_KIND_SCALE_DOWN, p.in.Estimates.Drain, "batch %d: drain and stop %d old replica(s)", batch, stop)
		}
		if start <= 0 && stop <= 0 {
			break // cannot happen with surge or unavailable > 0
		}
	}
}

func (p *planner) blueGreen(b *deployerv1.BlueGreenStrategy) {
	p.scaleUp(p.in.Desired)
	if a := b.GetPrePromotionAnalysis(); a != nil {
		p.add(deployerv1.StepKind_STEP_KIND_ANALYSIS, analysisDuration(a), "analyse green before promotion")
	}
	switch {
	case p.oldN == 0:
	case b.GetAutoPromote():
		p.add(deployerv1.StepKind_STEP_KIND_PAUSE, b.GetAutoPromoteDelay().AsDuration(), "wait %s, then promote", b.GetAutoPromoteDelay().AsDuration())
	default:
		p.add(deployerv1.StepKind_STEP_KIND_PAUSE, p.in.Estimates.UntilPromoted, "wait until promoted")
	}
	p.weight = 100
	p.add(deployerv1.StepKind_STEP_KIND_SWITCH, p.in.Estimates.Switch, "switch all traffic to the new revision")
	if d := b.GetScaleDownDelay().AsDuration(); d > 0 && p.oldN > 0 {
		p.add(deployerv1.StepKind_STEP_KIND_PAUSE, d, "keep the old revision %s for a fast rollback", d)
	}
	p.scaleDown(0)
	if !p.in.Routed {
		p.warnings = append(p.warnings, "no traffic router fronts this application: the switch happens by stopping the old replicas")
	}
}

func (p *planner) canary(c *deployerv1.CanaryStrategy) {
	n := p.in.Desired
	if !p.in.Routed || p.in.PlatformRolls {
		p.warnings = append(p.warnings, "no traffic router: canary weights become replica ratios")
	}
	for _, st := range c.GetSteps() {
		switch s := st.GetStep().(type) {
		case *deployerv1.CanaryStep_SetWeight:
			w := s.SetWeight.GetWeight()
			// Replicas follow the weight (at least one while weight > 0).
			want := max((n*w+99)/100, min(1, w))
			p.scaleUp(min(want, n))
			p.weight = w
			p.add(deployerv1.StepKind_STEP_KIND_SET_WEIGHT, p.in.Estimates.Switch, "send %d%% of traffic to the new revision", w)
		case *deployerv1.CanaryStep_Pause:
			if d := s.Pause.GetDuration().AsDuration(); d > 0 {
				p.add(deployerv1.StepKind_STEP_KIND_PAUSE, d, "pause %s", d)
			} else {
				p.add(deployerv1.StepKind_STEP_KIND_PAUSE, p.in.Estimates.UntilPromoted, "pause until promoted")
			}
		case *deployerv1.CanaryStep_Analysis:
			p.add(deployerv1.StepKind_STEP_KIND_ANALYSIS, analysisDuration(s.Analysis.GetAnalysis()), "analyse the canary against the stable revision")
		}
	}
	// Promotion: full size, all traffic, old revision gone.
	p.scaleUp(n)
	if p.weight != 100 {
		p.weight = 100
		p.add(deployerv1.StepKind_STEP_KIND_SWITCH, p.in.Estimates.Switch, "send all traffic to the new revision")
	}
	p.scaleDown(0)
}

func analysisDuration(a *deployerv1.Analysis) time.Duration {
	count := max(a.GetCount(), 1)
	interval := a.GetInterval().AsDuration()
	if interval <= 0 {
		interval = 30 * time.Second
	}
	return a.GetInitialDelay().AsDuration() + time.Duration(count)*interval
}
