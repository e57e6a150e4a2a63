package deployer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// PlanDeploy says what Deploy would do, changing nothing: the revision, the
// spec changes, the steps with their expected durations, and warnings.
func (s *Service) PlanDeploy(ctx context.Context, req *deployerv1.PlanDeployRequest) (*deployerv1.PlanDeployResponse, error) {
	if err := s.check(); err != nil {
		return nil, toStatus(err)
	}
	plan, err := s.plan(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &deployerv1.PlanDeployResponse{Plan: plan}, nil
}

func (s *Service) plan(ctx context.Context, req *deployerv1.PlanDeployRequest) (*deployerv1.DeployPlan, error) {
	v, err := s.store.Application(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	app := v.Value
	env, err := environment(app, req.GetEnvironment())
	if err != nil {
		return nil, err
	}
	cur := env.GetStatus().GetCurrentRevision()
	plan := &deployerv1.DeployPlan{FromRevision: cur}
	existing, spec, err := s.resolveRevision(ctx, app, env, req.GetRevision(), req.GetSpec(), req.GetFromEnvironment())
	if err != nil {
		return nil, err
	}
	if err := requiredEnvironment(app, env, existing); err != nil {
		return nil, err
	}
	if existing != nil {
		plan.ToRevision = existing.GetNumber()
	} else {
		plan.NewRevision = true
	}
	if !plan.GetNewRevision() && plan.GetToRevision() == cur && !req.GetRestart() {
		plan.Unchanged = true
	}
	newSpec := effectiveSpec(spec, env, req.GetStrategy())
	plan.EffectiveSpec = newSpec
	plan.Strategy = newSpec.GetStrategy()
	var oldSpec *deployerv1.ApplicationSpec
	if cur != 0 {
		old, err := s.revisionSide(ctx, app, env, cur, nil)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		oldSpec = old.Spec
	}
	plan.Changes = specChanges(oldSpec, newSpec)
	if plan.GetUnchanged() {
		return plan, nil
	}
	if err := s.checkDriver(newSpec); err != nil {
		plan.Warnings = append(plan.Warnings, err.Error())
	}
	est := rollout.DefaultEstimates(newSpec.GetHealthCheck())
	est.UntilPromoted = 0 // an indefinite pause adds nothing to the estimate
	steps, warnings := rollout.Plan(rollout.Input{
		Strategy: newSpec.GetStrategy(), Desired: newSpec.GetReplicas(), Current: oldSpec.GetReplicas(),
		Routed: true, PlatformRolls: driverKindOf(newSpec) == kubernetes.Name, Estimates: est,
	})
	plan.Steps = steps
	plan.Warnings = append(plan.Warnings, warnings...)
	for _, st := range steps {
		if st.GetKind() == deployerv1.StepKind_STEP_KIND_PAUSE && st.GetExpectedDuration().AsDuration() == 0 && strings.Contains(st.GetDescription(), "until promoted") {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("step %d waits until promoted; the expected duration does not count it", st.GetIndex()))
		}
		if st.GetKind() == deployerv1.StepKind_STEP_KIND_ANALYSIS {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("step %d is an analysis step, which this deployer does not run yet: the rollout would roll back there", st.GetIndex()))
		}
	}
	plan.ExpectedDuration = durationpb.New(rollout.Total(steps))
	return plan, nil
}

// specChanges lists the top-level fields that differ, rendered as JSON,
// with the values of secret environment variables masked.
func specChanges(old, cur *deployerv1.ApplicationSpec) []*deployerv1.SpecChange {
	if old == nil {
		old = &deployerv1.ApplicationSpec{}
	}
	// A changed secret still shows as changed, without its value.
	oldValues := map[string]string{}
	for _, e := range old.GetEnv() {
		oldValues[e.GetName()] = e.GetValue()
	}
	changedSecret := map[string]bool{}
	for _, e := range cur.GetEnv() {
		if v, ok := oldValues[e.GetName()]; e.GetSecret() && (!ok || v != e.GetValue()) {
			changedSecret[e.GetName()] = true
		}
	}
	old, cur = masked(old), masked(cur)
	for _, e := range cur.GetEnv() {
		if changedSecret[e.GetName()] {
			e.Value = "***** (changed)"
		}
	}
	var out []*deployerv1.SpecChange
	fields := cur.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		a, b := old.ProtoReflect(), cur.ProtoReflect()
		if !a.Has(fd) && !b.Has(fd) {
			continue
		}
		if a.Has(fd) && b.Has(fd) && a.Get(fd).Equal(b.Get(fd)) {
			continue
		}
		out = append(out, &deployerv1.SpecChange{Path: string(fd.Name()), OldValue: render(a, fd), NewValue: render(b, fd)})
	}
	slices.SortFunc(out, func(x, y *deployerv1.SpecChange) int { return strings.Compare(x.GetPath(), y.GetPath()) })
	return out
}

func masked(s *deployerv1.ApplicationSpec) *deployerv1.ApplicationSpec {
	out := proto.CloneOf(s)
	for _, e := range out.GetEnv() {
		if e.GetSecret() {
			e.Value = "*****"
		}
	}
	return out
}

// render shows one field of m as compact JSON, or "" when unset.
func render(m protoreflect.Message, fd protoreflect.FieldDescriptor) string {
	if !m.Has(fd) {
		return ""
	}
	one := m.New()
	one.Set(fd, m.Get(fd))
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(one.Interface())
	if err != nil {
		return "?"
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return "?"
	}
	s := compact.String()
	// Strip the {"field": ... } wrapper.
	if i := strings.Index(s, ":"); i >= 0 && strings.HasSuffix(s, "}") {
		s = s[i+1 : len(s)-1]
	}
	return s
}
