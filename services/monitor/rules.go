package monitor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// groupSpec returns a stored copy of a group (rules without status).
func (s *Service) groupSpec(name string) (*monitorv1.RuleGroup, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.groups[name]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(g.spec), true
}

// saveGroup validates, stores and installs a group, checking that none of
// its rule names belongs to another group.
func (s *Service) saveGroup(ctx context.Context, g *monitorv1.RuleGroup) error {
	for i, r := range g.GetRules() {
		r.Group = g.GetName()
		r.Status = nil
		s.mu.Lock()
		other, taken := s.ruleGroup[r.GetName()]
		s.mu.Unlock()
		if taken && other != g.GetName() {
			return invalid("rule group", fmt.Sprintf("rule_group.rules[%d].name", i), "rule %q already exists in group %q", r.GetName(), other)
		}
	}
	if _, _, err := s.compileGroup("rule_group", g); err != nil {
		return err
	}
	if err := s.ruleGroups.put(ctx, g.GetName(), g); err != nil {
		return err
	}
	return s.installGroup(g)
}

// view fills rule statuses into a copy of g.
func (s *Service) groupView(g *monitorv1.RuleGroup) *monitorv1.RuleGroup {
	out := proto.CloneOf(g)
	for _, r := range out.GetRules() {
		r.Status = s.ruleStatusOf(r)
	}
	return out
}

func (s *Service) ruleStatusOf(r *monitorv1.Rule) *monitorv1.RuleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := proto.CloneOf(s.ruleStatus[r.GetName()])
	if st == nil {
		st = &monitorv1.RuleStatus{Health: monitorv1.RuleHealth_RULE_HEALTH_UNKNOWN}
		if g := s.groups[r.GetGroup()]; g != nil {
			for _, cr := range g.rules {
				if cr.spec.GetName() == r.GetName() {
					st.EffectiveExpr = cr.expr
				}
			}
		}
	}
	st.State = monitorv1.RuleState_RULE_STATE_INACTIVE
	for k, id := range s.active {
		if k.rule != r.GetName() {
			continue
		}
		st.ActiveAlerts++
		switch s.alerts[id].GetState() {
		case monitorv1.AlertState_ALERT_STATE_FIRING:
			st.State = monitorv1.RuleState_RULE_STATE_FIRING
		case monitorv1.AlertState_ALERT_STATE_PENDING:
			if st.State != monitorv1.RuleState_RULE_STATE_FIRING {
				st.State = monitorv1.RuleState_RULE_STATE_PENDING
			}
		}
	}
	return st
}

// CreateRuleGroup creates a group with its rules.
func (s *Service) CreateRuleGroup(ctx context.Context, req *monitorv1.CreateRuleGroupRequest) (*monitorv1.CreateRuleGroupResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	g := proto.CloneOf(req.GetRuleGroup())
	if g == nil {
		return nil, toStatus(invalid("rule group", "rule_group", "required"))
	}
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	if _, ok := s.groupSpec(g.GetName()); ok {
		return nil, toStatus(fmt.Errorf("%w: rule group %q", ErrAlreadyExists, g.GetName()))
	}
	now := timestamppb.Now()
	g.CreateTime, g.UpdateTime, g.SourceFile = now, now, ""
	for _, r := range g.GetRules() {
		r.CreateTime, r.UpdateTime = now, now
	}
	if err := s.saveGroup(ctx, g); err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.CreateRuleGroupResponse{RuleGroup: s.groupView(g)}, nil
}

// GetRuleGroup returns a group with its rules.
func (s *Service) GetRuleGroup(_ context.Context, req *monitorv1.GetRuleGroupRequest) (*monitorv1.GetRuleGroupResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	g, ok := s.groupSpec(req.GetName())
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: rule group %q", ErrNotFound, req.GetName()))
	}
	return &monitorv1.GetRuleGroupResponse{RuleGroup: s.groupView(g)}, nil
}

func (s *Service) sortedGroups() []*monitorv1.RuleGroup {
	s.mu.Lock()
	out := make([]*monitorv1.RuleGroup, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, proto.CloneOf(g.spec))
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *monitorv1.RuleGroup) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// ListRuleGroups lists groups ordered by name.
func (s *Service) ListRuleGroups(_ context.Context, req *monitorv1.ListRuleGroupsRequest) (*monitorv1.ListRuleGroupsResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	all := s.sortedGroups()
	start, end, next, err := page(len(all), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &monitorv1.ListRuleGroupsResponse{NextPageToken: next}
	for _, g := range all[start:end] {
		resp.RuleGroups = append(resp.RuleGroups, s.groupView(g))
	}
	return resp, nil
}

// UpdateRuleGroup changes interval, labels and (when masked) rules.
func (s *Service) UpdateRuleGroup(ctx context.Context, req *monitorv1.UpdateRuleGroupRequest) (*monitorv1.UpdateRuleGroupResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	in := req.GetRuleGroup()
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	g, ok := s.groupSpec(in.GetName())
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: rule group %q", ErrNotFound, in.GetName()))
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"interval", "labels"}
	}
	now := timestamppb.Now()
	for _, p := range paths {
		switch p {
		case "interval":
			g.Interval = in.GetInterval()
		case "labels":
			g.Labels = in.GetLabels()
		case "rules":
			old := map[string]*monitorv1.Rule{}
			for _, r := range g.GetRules() {
				old[r.GetName()] = r
			}
			g.Rules = proto.CloneOf(in).GetRules()
			for _, r := range g.Rules {
				r.CreateTime, r.UpdateTime = now, now
				if o := old[r.GetName()]; o != nil {
					r.CreateTime = o.GetCreateTime()
				}
			}
		default:
			return nil, toStatus(invalid("rule group", "update_mask", "%q cannot be updated", p))
		}
	}
	g.UpdateTime = now
	if err := s.saveGroup(ctx, g); err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.UpdateRuleGroupResponse{RuleGroup: s.groupView(g)}, nil
}

// DeleteRuleGroup deletes a group; its alerts resolve.
func (s *Service) DeleteRuleGroup(ctx context.Context, req *monitorv1.DeleteRuleGroupRequest) (*monitorv1.DeleteRuleGroupResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	if _, ok := s.groupSpec(req.GetName()); !ok {
		return nil, toStatus(fmt.Errorf("%w: rule group %q", ErrNotFound, req.GetName()))
	}
	if err := s.ruleGroups.delete(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	s.removeGroup(req.GetName())
	return &monitorv1.DeleteRuleGroupResponse{}, nil
}

// CreateRule adds a rule to its group, creating the group when needed.
func (s *Service) CreateRule(ctx context.Context, req *monitorv1.CreateRuleRequest) (*monitorv1.CreateRuleResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	r := proto.CloneOf(req.GetRule())
	if r == nil {
		return nil, toStatus(invalid("rule", "rule", "required"))
	}
	if r.Group == "" {
		r.Group = DefaultGroup
	}
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	s.mu.Lock()
	other, taken := s.ruleGroup[r.GetName()]
	s.mu.Unlock()
	if taken {
		return nil, toStatus(fmt.Errorf("%w: rule %q in group %q", ErrAlreadyExists, r.GetName(), other))
	}
	now := timestamppb.Now()
	g, ok := s.groupSpec(r.GetGroup())
	if !ok {
		g = &monitorv1.RuleGroup{Name: r.GetGroup(), CreateTime: now}
	}
	// Validate the rule alone first so errors name "rule.<field>".
	if err := s.validateRule(r, g); err != nil {
		return nil, toStatus(err)
	}
	r.CreateTime, r.UpdateTime, r.Status = now, now, nil
	g.Rules = append(g.Rules, r)
	g.UpdateTime = now
	if err := s.saveGroup(ctx, g); err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.CreateRuleResponse{Rule: s.ruleView(r)}, nil
}

func (s *Service) validateRule(r *monitorv1.Rule, g *monitorv1.RuleGroup) error {
	interval := s.cfg.DefaultEvalInterval
	if g.GetInterval() != nil {
		interval = g.GetInterval().AsDuration()
	}
	verr := validation.New("rule")
	s.compileRule(verr, "rule", r, interval)
	return verr.Err()
}

func (s *Service) ruleView(r *monitorv1.Rule) *monitorv1.Rule {
	out := proto.CloneOf(r)
	out.Status = s.ruleStatusOf(r)
	return out
}

// findRule returns a copy of a rule and its group.
func (s *Service) findRule(name string) (*monitorv1.Rule, *monitorv1.RuleGroup, int, error) {
	s.mu.Lock()
	gname, ok := s.ruleGroup[name]
	s.mu.Unlock()
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: rule %q", ErrNotFound, name)
	}
	g, ok := s.groupSpec(gname)
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: rule %q", ErrNotFound, name)
	}
	for i, r := range g.GetRules() {
		if r.GetName() == name {
			return r, g, i, nil
		}
	}
	return nil, nil, 0, fmt.Errorf("%w: rule %q", ErrNotFound, name)
}

// GetRule returns a rule with its status.
func (s *Service) GetRule(_ context.Context, req *monitorv1.GetRuleRequest) (*monitorv1.GetRuleResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	r, _, _, err := s.findRule(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.GetRuleResponse{Rule: s.ruleView(r)}, nil
}

// ListRules lists rules by group, then position.
func (s *Service) ListRules(_ context.Context, req *monitorv1.ListRulesRequest) (*monitorv1.ListRulesResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	var all []*monitorv1.Rule
	for _, g := range s.sortedGroups() {
		if req.GetGroup() != "" && g.GetName() != req.GetGroup() {
			continue
		}
		for _, r := range g.GetRules() {
			v := s.ruleView(r)
			if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), v.GetStatus().GetState()) {
				continue
			}
			all = append(all, v)
		}
	}
	start, end, next, err := page(len(all), req.GetPageSize(), req.GetPageToken(), maxPageSize)
	if err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.ListRulesResponse{Rules: all[start:end], NextPageToken: next}, nil
}

// UpdateRule changes the masked fields of a rule.
func (s *Service) UpdateRule(ctx context.Context, req *monitorv1.UpdateRuleRequest) (*monitorv1.UpdateRuleResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	in := req.GetRule()
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	cur, g, i, err := s.findRule(in.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"alert", "record", "condition", "for", "keep_firing_for", "labels", "annotations", "disabled"}
	}
	next := proto.CloneOf(cur)
	for _, p := range paths {
		switch p {
		case "alert":
			next.Alert = in.GetAlert()
		case "record":
			next.Record = in.GetRecord()
		case "condition", "expr", "threshold":
			next.Condition = proto.CloneOf(in).Condition
		case "for":
			next.For = in.GetFor()
		case "keep_firing_for":
			next.KeepFiringFor = in.GetKeepFiringFor()
		case "labels":
			next.Labels = in.GetLabels()
		case "annotations":
			next.Annotations = in.GetAnnotations()
		case "disabled":
			next.Disabled = in.GetDisabled()
		default:
			return nil, toStatus(invalid("rule", "update_mask", "%q cannot be updated", p))
		}
	}
	if err := s.validateRule(next, g); err != nil {
		return nil, toStatus(err)
	}
	next.UpdateTime = timestamppb.Now()
	g.Rules[i] = next
	g.UpdateTime = next.UpdateTime
	if err := s.saveGroup(ctx, g); err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.UpdateRuleResponse{Rule: s.ruleView(next)}, nil
}

// DeleteRule removes a rule; its alerts resolve.
func (s *Service) DeleteRule(ctx context.Context, req *monitorv1.DeleteRuleRequest) (*monitorv1.DeleteRuleResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	_, g, i, err := s.findRule(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	g.Rules = slices.Delete(g.Rules, i, i+1)
	g.UpdateTime = timestamppb.Now()
	if err := s.saveGroup(ctx, g); err != nil {
		return nil, toStatus(err)
	}
	return &monitorv1.DeleteRuleResponse{}, nil
}

// ParseRuleFile reads a Prometheus rules file into rule groups, with rule
// names assigned. Errors name file, line and column.
func (s *Service) parseRuleFile(fileName string, content []byte) ([]*monitorv1.RuleGroup, error) {
	if fileName == "" {
		fileName = "rules.yml"
	}
	rgs, errs := rulefmt.Parse(content, false, model.UTF8Validation, s.db.Parser(), s.log)
	if len(errs) > 0 {
		verr := validation.New("rule file")
		for i, e := range errs {
			if i == 10 {
				break
			}
			verr.Add("content", "%s:%v", fileName, e)
		}
		return nil, verr
	}
	if rgs == nil || len(rgs.Groups) == 0 {
		return nil, invalid("rule file", "content", "%s: no rule groups", fileName)
	}
	now := timestamppb.Now()
	out := make([]*monitorv1.RuleGroup, 0, len(rgs.Groups))
	for _, rg := range rgs.Groups {
		g := &monitorv1.RuleGroup{Name: rg.Name, Labels: rg.Labels, SourceFile: fileName, CreateTime: now, UpdateTime: now}
		if rg.Interval != 0 {
			g.Interval = durationpb.New(time.Duration(rg.Interval))
		}
		for i, r := range rg.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			mr := &monitorv1.Rule{
				Name: importedRuleName(rg.Name, i, name), Group: rg.Name, Alert: r.Alert, Record: r.Record,
				Condition: &monitorv1.Rule_Expr{Expr: r.Expr}, Labels: r.Labels, Annotations: r.Annotations,
				CreateTime: now, UpdateTime: now,
			}
			if r.For != 0 {
				mr.For = durationpb.New(time.Duration(r.For))
			}
			if r.KeepFiringFor != 0 {
				mr.KeepFiringFor = durationpb.New(time.Duration(r.KeepFiringFor))
			}
			g.Rules = append(g.Rules, mr)
		}
		if _, _, err := s.compileGroup("content("+fileName+").groups["+rg.Name+"]", g); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// ImportRuleFile loads a Prometheus rules file; each group replaces the
// group of the same name. Nothing changes when any part is invalid.
func (s *Service) ImportRuleFile(ctx context.Context, req *monitorv1.ImportRuleFileRequest) (*monitorv1.ImportRuleFileResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	groups, err := s.parseRuleFile(req.GetFileName(), []byte(req.GetContent()))
	if err != nil {
		return nil, toStatus(err)
	}
	s.ruleMu.Lock()
	defer s.ruleMu.Unlock()
	// Rule names must not collide with rules of groups the file does not replace.
	replacing := map[string]bool{}
	for _, g := range groups {
		replacing[g.GetName()] = true
	}
	s.mu.Lock()
	for _, g := range groups {
		for i, r := range g.GetRules() {
			if other, ok := s.ruleGroup[r.GetName()]; ok && !replacing[other] {
				s.mu.Unlock()
				return nil, toStatus(invalid("rule file", fmt.Sprintf("content.groups[%s].rules[%d]", g.GetName(), i), "rule name %q is taken by group %q", r.GetName(), other))
			}
		}
	}
	s.mu.Unlock()
	if req.GetValidateOnly() {
		return &monitorv1.ImportRuleFileResponse{RuleGroups: groups}, nil
	}
	resp := &monitorv1.ImportRuleFileResponse{}
	for _, g := range groups {
		if old, ok := s.groupSpec(g.GetName()); ok {
			g.CreateTime = old.GetCreateTime()
		}
		if err := s.saveGroup(ctx, g); err != nil {
			return nil, toStatus(err)
		}
		resp.RuleGroups = append(resp.RuleGroups, s.groupView(g))
	}
	return resp, nil
}

// ExportRuleFile renders groups as a Prometheus rules file.
func (s *Service) ExportRuleFile(_ context.Context, req *monitorv1.ExportRuleFileRequest) (*monitorv1.ExportRuleFileResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, toStatus(err)
	}
	var out rulefmt.RuleGroups
	for _, g := range s.sortedGroups() {
		if len(req.GetGroups()) > 0 && !slices.Contains(req.GetGroups(), g.GetName()) {
			continue
		}
		rg := rulefmt.RuleGroup{Name: g.GetName(), Labels: g.GetLabels()}
		if g.GetInterval() != nil {
			rg.Interval = model.Duration(g.GetInterval().AsDuration())
		}
		for _, r := range g.GetRules() {
			st := s.ruleStatusOf(r)
			fr := rulefmt.Rule{Record: r.GetRecord(), Expr: st.GetEffectiveExpr(), Labels: r.GetLabels(), Annotations: r.GetAnnotations(),
				For: model.Duration(r.GetFor().AsDuration()), KeepFiringFor: model.Duration(r.GetKeepFiringFor().AsDuration())}
			if fr.Record == "" {
				fr.Alert = r.GetAlert()
				if fr.Alert == "" {
					fr.Alert = r.GetName()
				}
			}
			rg.Rules = append(rg.Rules, fr)
		}
		out.Groups = append(out.Groups, rg)
	}
	b, err := yaml.Marshal(&out)
	if err != nil {
		return nil, toStatus(fmt.Errorf("render rules file: %w", err))
	}
	return &monitorv1.ExportRuleFileResponse{Content: string(b)}, nil
}
