// Package appspec reads application files (YAML or JSON, the shape of
// opsuite.deployer.v1.Application) and validates applications, naming the
// field at fault in every message.
package appspec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/protojsonerr"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"
)

// Limits of an application spec.
const (
	MaxReplicas         = 1000
	MaxFileBytes        = 1 << 20
	MaxProgressDeadline = 24 * time.Hour
	DefaultDeadline     = 10 * time.Minute
	maxNameLen          = 63
	maxArgs             = 256
	maxArgLen           = 4096
	maxEnv              = 512
	maxPorts            = 64
	maxVolumes          = 64
	maxCanarySteps      = 64
	maxEnvironments     = 16
	maxRevisionHistory  = 1000
)

// ValidationError and FieldError are the shared validation types.
type (
	ValidationError = validation.Error
	FieldError      = validation.FieldError
)

// ErrDecode marks a file that is not a well-formed application document.
var ErrDecode = errors.New("cannot decode application file")

// Load decodes an application from YAML or JSON. Unknown keys are errors
// that name the key. It does not validate; call Validate.
func Load(data []byte) (*deployerv1.Application, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%w: %d bytes is over the limit of %d", ErrDecode, len(data), MaxFileBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: the file is empty", ErrDecode)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	app := &deployerv1.Application{}
	js = friendlyDurations(js, app.ProtoReflect().Descriptor())
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, app); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrDecode, strings.TrimPrefix(protojsonerr.Describe(js, err), "invalid JSON body "))
	}
	return app, nil
}

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	envNameRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	volumeNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

func checkName(ve *ValidationError, field, name string, required bool) {
	switch {
	case name == "" && !required:
	case name == "":
		ve.Add(field, "is required")
	case len(name) > maxNameLen:
		ve.Add(field, "must be at most %d characters, got %d", maxNameLen, len(name))
	case !dns1123Label.MatchString(name):
		ve.Add(field, "%q must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
}

// Validate reports every problem of app, each naming its field.
func Validate(app *deployerv1.Application) error {
	ve := validation.New("application")
	if app == nil {
		ve.Add("application", "is required")
		return ve
	}
	checkName(ve, "name", app.GetName(), true)
	if app.GetSpec() == nil {
		ve.Add("spec", "is required")
	} else {
		validateSpec(ve, "spec", app.GetSpec())
	}
	if len(app.GetEnvironments()) > maxEnvironments {
		ve.Add("environments", "at most %d environments", maxEnvironments)
	}
	seen := map[string]bool{}
	for i, env := range app.GetEnvironments() {
		f := fmt.Sprintf("environments[%d]", i)
		checkName(ve, f+".name", env.GetName(), true)
		if seen[env.GetName()] {
			ve.Add(f+".name", "%q is used twice", env.GetName())
		}
		seen[env.GetName()] = true
		if req := env.GetRequiresEnvironment(); req != "" {
			if req == env.GetName() {
				ve.Add(f+".requires_environment", "an environment cannot require itself")
			} else if !hasEnvironment(app, req) {
				ve.Add(f+".requires_environment", "no environment named %q", req)
			}
		}
		if o := env.GetOverrides(); o != nil && o.Replicas != nil {
			if r := o.GetReplicas(); r < 0 || r > MaxReplicas {
				ve.Add(f+".overrides.replicas", "must be 0-%d, got %d", MaxReplicas, r)
			}
		}
	}
	return ve.Err()
}

func hasEnvironment(app *deployerv1.Application, name string) bool {
	for _, e := range app.GetEnvironments() {
		if e.GetName() == name {
			return true
		}
	}
	return false
}

func validateSpec(ve *ValidationError, f string, s *deployerv1.ApplicationSpec) {
	switch w := s.GetWorkload().(type) {
	case *deployerv1.ApplicationSpec_Image:
		if w.Image == "" {
			ve.Add(f+".image", "is required")
		} else if _, err := reference.ParseNormalizedNamed(w.Image); err != nil {
			ve.Add(f+".image", "%q is not an image reference: %v", w.Image, err)
		}
	case *deployerv1.ApplicationSpec_Process:
		argv := w.Process.GetArgv()
		if len(argv) == 0 || argv[0] == "" {
			ve.Add(f+".process.argv", "is required: the program and its arguments (no shell)")
		}
		checkArgs(ve, f+".process.argv", argv)
	case nil:
		ve.Add(f+".workload", "one of image or process is required")
	}
	checkArgs(ve, f+".command", s.GetCommand())
	checkArgs(ve, f+".args", s.GetArgs())
	if wd := s.GetWorkingDir(); wd != "" && !path.IsAbs(wd) {
		ve.Add(f+".working_dir", "%q must be an absolute path", wd)
	}
	if len(s.GetEnv()) > maxEnv {
		ve.Add(f+".env", "at most %d variables", maxEnv)
	}
	envSeen := map[string]bool{}
	for i, e := range s.GetEnv() {
		ef := fmt.Sprintf("%s.env[%d].name", f, i)
		switch {
		case !envNameRe.MatchString(e.GetName()):
			ve.Add(ef, "%q is not a valid variable name", e.GetName())
		case envSeen[e.GetName()]:
			ve.Add(ef, "%q is set twice", e.GetName())
		}
		envSeen[e.GetName()] = true
		if strings.ContainsRune(e.GetValue(), 0) {
			ve.Add(fmt.Sprintf("%s.env[%d].value", f, i), "contains NUL")
		}
	}
	portNames := validatePorts(ve, f, s.GetPorts())
	validateVolumes(ve, f, s.GetVolumes())
	if r := s.GetReplicas(); r < 0 || r > MaxReplicas {
		ve.Add(f+".replicas", "must be 0-%d, got %d", MaxReplicas, r)
	}
	if res := s.GetResources(); res != nil {
		if res.GetCpus() < 0 || res.GetCpus() > 1024 {
			ve.Add(f+".resources.cpus", "must be 0-1024, got %g", res.GetCpus())
		}
		if res.GetMemoryBytes() < 0 {
			ve.Add(f+".resources.memory_bytes", "must not be negative")
		} else if m := res.GetMemoryBytes(); m > 0 && m < 6<<20 {
			ve.Add(f+".resources.memory_bytes", "must be at least 6 MiB, got %d bytes", m)
		}
	}
	checkDuration(ve, f+".stop_grace_period", s.GetStopGracePeriod(), 0, time.Hour)
	checkDuration(ve, f+".min_ready", s.GetMinReady(), 0, time.Hour)
	checkDuration(ve, f+".progress_deadline", s.GetProgressDeadline(), time.Second, MaxProgressDeadline)
	checkDuration(ve, f+".pause_deadline", s.GetPauseDeadline(), time.Second, 7*24*time.Hour)
	validateHealthCheck(ve, f+".health_check", s.GetHealthCheck(), portNames)
	validateStrategy(ve, f+".strategy", s.GetStrategy(), s.GetReplicas())
	validateRollbackPolicy(ve, f+".rollback_policy", s.GetRollbackPolicy())
	if a := s.GetAutoscaling(); a != nil {
		af := f + ".autoscaling"
		if a.GetMinReplicas() < 0 || a.GetMaxReplicas() > MaxReplicas || a.GetMinReplicas() > a.GetMaxReplicas() {
			ve.Add(af, "need 0 <= min_replicas <= max_replicas <= %d, got %d and %d", MaxReplicas, a.GetMinReplicas(), a.GetMaxReplicas())
		}
		if a.GetTolerance() < 0 || a.GetTolerance() >= 1 {
			ve.Add(af+".tolerance", "must be in [0, 1), got %g", a.GetTolerance())
		}
		if a.GetMinReplicas() < 1 {
			ve.Add(af+".min_replicas", "must be at least 1")
		}
		if len(a.GetMetrics()) == 0 {
			ve.Add(af+".metrics", "at least one metric is required")
		}
		checkDuration(ve, af+".interval", a.GetInterval(), 100*time.Millisecond, time.Hour)
		checkDuration(ve, af+".scale_down_stabilization", a.GetScaleDownStabilization(), 0, 24*time.Hour)
		checkDuration(ve, af+".scale_up_stabilization", a.GetScaleUpStabilization(), 0, 24*time.Hour)
		for i, m := range a.GetMetrics() {
			mf := fmt.Sprintf("%s.metrics[%d]", af, i)
			if t := m.GetTarget(); !(t > 0) || math.IsInf(t, 0) {
				ve.Add(mf+".target", "must be a positive number, got %g", t)
			}
			switch src := m.GetSource().(type) {
			case *deployerv1.ScalingMetric_Router:
				validateRouterMetric(ve, mf+".router", src.Router, time.Hour)
			case *deployerv1.ScalingMetric_Monitor:
				if strings.TrimSpace(src.Monitor.GetQuery()) == "" {
					ve.Add(mf+".monitor.query", "is required")
				}
			case nil:
				ve.Add(mf, "one of router or monitor is required")
			}
		}
	}
	if l := s.GetRevisionHistoryLimit(); l < 0 || l > maxRevisionHistory {
		ve.Add(f+".revision_history_limit", "must be 0-%d, got %d", maxRevisionHistory, l)
	}
}

func checkArgs(ve *ValidationError, f string, args []string) {
	if len(args) > maxArgs {
		ve.Add(f, "at most %d arguments", maxArgs)
		return
	}
	for i, a := range args {
		if len(a) > maxArgLen || strings.ContainsRune(a, 0) {
			ve.Add(fmt.Sprintf("%s[%d]", f, i), "must be at most %d bytes without NUL", maxArgLen)
		}
	}
}

// checkDuration validates an optional duration against [lo, hi].
func checkDuration(ve *ValidationError, f string, d *durationpb.Duration, lo, hi time.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		ve.Add(f, "invalid duration: %v", err)
		return
	}
	if v := d.AsDuration(); v < lo || v > hi {
		ve.Add(f, "must be between %s and %s, got %s", lo, hi, v)
	}
}

func validatePorts(ve *ValidationError, f string, ports []*deployerv1.Port) map[uint32]bool {
	byPort := map[uint32]bool{}
	if len(ports) > maxPorts {
		ve.Add(f+".ports", "at most %d ports", maxPorts)
		return byPort
	}
	names := map[string]bool{}
	for i, p := range ports {
		pf := fmt.Sprintf("%s.ports[%d]", f, i)
		if p.GetName() != "" {
			checkName(ve, pf+".name", p.GetName(), false)
			if names[p.GetName()] {
				ve.Add(pf+".name", "%q is used twice", p.GetName())
			}
			names[p.GetName()] = true
		}
		if c := p.GetContainerPort(); c < 1 || c > 65535 {
			ve.Add(pf+".container_port", "must be 1-65535, got %d", c)
		} else if byPort[c] {
			ve.Add(pf+".container_port", "%d is listed twice", c)
		}
		byPort[p.GetContainerPort()] = true
		if h := p.GetHostPort(); h > 65535 {
			ve.Add(pf+".host_port", "must be 1-65535, got %d", h)
		}
		if n := p.GetEnvName(); n != "" && !envNameRe.MatchString(n) {
			ve.Add(pf+".env_name", "%q is not a valid variable name", n)
		}
	}
	return byPort
}

func validateVolumes(ve *ValidationError, f string, vols []*deployerv1.Volume) {
	if len(vols) > maxVolumes {
		ve.Add(f+".volumes", "at most %d volumes", maxVolumes)
		return
	}
	targets := map[string]bool{}
	for i, v := range vols {
		vf := fmt.Sprintf("%s.volumes[%d]", f, i)
		t := v.GetTarget()
		switch {
		case t == "" || !path.IsAbs(t):
			ve.Add(vf+".target", "%q must be an absolute path", t)
		case targets[path.Clean(t)]:
			ve.Add(vf+".target", "%q is mounted twice", t)
		}
		targets[path.Clean(t)] = true
		switch src := v.GetSource().(type) {
		case *deployerv1.Volume_HostPath:
			if !path.IsAbs(src.HostPath) {
				ve.Add(vf+".host_path", "%q must be an absolute path", src.HostPath)
			}
		case *deployerv1.Volume_NamedVolume:
			if !volumeNameRe.MatchString(src.NamedVolume) {
				ve.Add(vf+".named_volume", "%q is not a volume name", src.NamedVolume)
			}
		case *deployerv1.Volume_Tmpfs:
			if src.Tmpfs.GetSizeBytes() < 0 {
				ve.Add(vf+".tmpfs.size_bytes", "must not be negative")
			}
		case nil:
			ve.Add(vf+".source", "one of host_path, named_volume or tmpfs is required")
		}
	}
}

func validateHealthCheck(ve *ValidationError, f string, h *deployerv1.HealthCheck, ports map[uint32]bool) {
	if h == nil {
		return
	}
	checkPort := func(field string, p uint32) {
		switch {
		case p == 0 && len(ports) == 1:
		case p == 0:
			ve.Add(field, "is required when the spec does not have exactly one port")
		case p > 65535:
			ve.Add(field, "must be 1-65535, got %d", p)
		case !ports[p]:
			ve.Add(field, "%d is not one of the spec's container ports", p)
		}
	}
	switch p := h.GetProbe().(type) {
	case *deployerv1.HealthCheck_Http:
		if pth := p.Http.GetPath(); pth != "" && !strings.HasPrefix(pth, "/") {
			ve.Add(f+".http.path", "%q must start with /", pth)
		}
		checkPort(f+".http.port", p.Http.GetPort())
		for i, s := range p.Http.GetExpectedStatuses() {
			if s < 100 || s > 599 {
				ve.Add(fmt.Sprintf("%s.http.expected_statuses[%d]", f, i), "must be 100-599, got %d", s)
			}
		}
	case *deployerv1.HealthCheck_Tcp:
		checkPort(f+".tcp.port", p.Tcp.GetPort())
	case *deployerv1.HealthCheck_Grpc:
		checkPort(f+".grpc.port", p.Grpc.GetPort())
	case *deployerv1.HealthCheck_Exec:
		if len(p.Exec.GetArgv()) == 0 || p.Exec.GetArgv()[0] == "" {
			ve.Add(f+".exec.argv", "is required")
		}
		checkArgs(ve, f+".exec.argv", p.Exec.GetArgv())
	case nil:
		ve.Add(f, "one of http, tcp, grpc or exec is required")
	}
	checkDuration(ve, f+".interval", h.GetInterval(), 100*time.Millisecond, time.Hour)
	checkDuration(ve, f+".timeout", h.GetTimeout(), time.Millisecond, time.Hour)
	checkDuration(ve, f+".initial_delay", h.GetInitialDelay(), 0, time.Hour)
	if h.GetInterval() != nil && h.GetTimeout() != nil && h.GetTimeout().AsDuration() > h.GetInterval().AsDuration() {
		ve.Add(f+".timeout", "must be at most the interval")
	}
	if h.GetFailureThreshold() > 100 {
		ve.Add(f+".failure_threshold", "must be at most 100")
	}
	if h.GetSuccessThreshold() > 100 {
		ve.Add(f+".success_threshold", "must be at most 100")
	}
}

func validateStrategy(ve *ValidationError, f string, s *deployerv1.Strategy, replicas int32) {
	if s == nil {
		return
	}
	switch k := s.GetKind().(type) {
	case *deployerv1.Strategy_Rolling:
		surge := quantity(ve, f+".rolling.max_surge", k.Rolling.GetMaxSurge(), replicas)
		unavail := quantity(ve, f+".rolling.max_unavailable", k.Rolling.GetMaxUnavailable(), replicas)
		if k.Rolling.GetMaxSurge() != nil && k.Rolling.GetMaxUnavailable() != nil && surge == 0 && unavail == 0 {
			ve.Add(f+".rolling", "max_surge and max_unavailable cannot both be 0: the rollout could never progress")
		}
	case *deployerv1.Strategy_BlueGreen:
		checkDuration(ve, f+".blue_green.auto_promote_delay", k.BlueGreen.GetAutoPromoteDelay(), 0, 24*time.Hour)
		checkDuration(ve, f+".blue_green.scale_down_delay", k.BlueGreen.GetScaleDownDelay(), 0, 24*time.Hour)
		if k.BlueGreen.GetAutoPromoteDelay() != nil && !k.BlueGreen.GetAutoPromote() {
			ve.Add(f+".blue_green.auto_promote_delay", "is set but auto_promote is false")
		}
	case *deployerv1.Strategy_Canary:
		steps := k.Canary.GetSteps()
		if len(steps) == 0 {
			ve.Add(f+".canary.steps", "at least one step is required")
		}
		if len(steps) > maxCanarySteps {
			ve.Add(f+".canary.steps", "at most %d steps", maxCanarySteps)
		}
		last := int32(0)
		for i, st := range steps {
			sf := fmt.Sprintf("%s.canary.steps[%d]", f, i)
			switch x := st.GetStep().(type) {
			case *deployerv1.CanaryStep_SetWeight:
				w := x.SetWeight.GetWeight()
				switch {
				case w < 0 || w > 100:
					ve.Add(sf+".set_weight.weight", "must be 0-100, got %d", w)
				case w < last:
					ve.Add(sf+".set_weight.weight", "%d is lower than the previous weight %d; to go back, abort", w, last)
				}
				last = w
			case *deployerv1.CanaryStep_Pause:
				checkDuration(ve, sf+".pause.duration", x.Pause.GetDuration(), 0, 7*24*time.Hour)
			case *deployerv1.CanaryStep_Analysis:
				validateAnalysis(ve, sf+".analysis.analysis", x.Analysis.GetAnalysis(), false)
			case nil:
				ve.Add(sf, "one of set_weight, pause or analysis is required")
			}
		}
	case *deployerv1.Strategy_Recreate, nil:
	}
	if a := s.GetCanary().GetBackgroundAnalysis(); a != nil {
		validateAnalysis(ve, f+".canary.background_analysis", a, true)
	}
	if a := s.GetBlueGreen().GetPrePromotionAnalysis(); a != nil {
		validateAnalysis(ve, f+".blue_green.pre_promotion_analysis", a, false)
	}
}

const maxAnalysisCount = 1000

// validateAnalysis checks an analysis; background ones measure until
// promotion, so their count is not used.
func validateAnalysis(ve *ValidationError, f string, a *deployerv1.Analysis, background bool) {
	if len(a.GetMetrics()) == 0 {
		ve.Add(f+".metrics", "at least one metric is required")
	}
	checkDuration(ve, f+".interval", a.GetInterval(), 100*time.Millisecond, time.Hour)
	checkDuration(ve, f+".initial_delay", a.GetInitialDelay(), 0, time.Hour)
	if c := a.GetCount(); c < 0 || c > maxAnalysisCount || (background && c != 0) {
		if background {
			ve.Add(f+".count", "a background analysis measures until promotion; leave count unset")
		} else {
			ve.Add(f+".count", "must be 0-%d, got %d", maxAnalysisCount, c)
		}
	}
	if a.GetFailureLimit() < 0 {
		ve.Add(f+".failure_limit", "must not be negative")
	}
	if a.GetInconclusiveLimit() < 0 {
		ve.Add(f+".inconclusive_limit", "must not be negative")
	}
	names := map[string]bool{}
	for i, m := range a.GetMetrics() {
		mf := fmt.Sprintf("%s.metrics[%d]", f, i)
		checkName(ve, mf+".name", m.GetName(), true)
		if names[m.GetName()] {
			ve.Add(mf+".name", "%q is used twice", m.GetName())
		}
		names[m.GetName()] = true
		switch src := m.GetSource().(type) {
		case *deployerv1.AnalysisMetric_Router:
			validateRouterMetric(ve, mf+".router", src.Router, a.GetInterval().AsDuration())
		case *deployerv1.AnalysisMetric_Monitor:
			if strings.TrimSpace(src.Monitor.GetQuery()) == "" {
				ve.Add(mf+".monitor.query", "is required")
			}
			if fb := src.Monitor.GetFallback(); fb != nil {
				validateRouterMetric(ve, mf+".monitor.fallback", fb, a.GetInterval().AsDuration())
			}
		case nil:
			ve.Add(mf, "one of router or monitor is required")
		}
		switch m.GetComparison() {
		case deployerv1.Comparison_COMPARISON_LESS_THAN, deployerv1.Comparison_COMPARISON_LESS_OR_EQUAL,
			deployerv1.Comparison_COMPARISON_GREATER_THAN, deployerv1.Comparison_COMPARISON_GREATER_OR_EQUAL:
		default:
			ve.Add(mf+".comparison", "is required: less_than, less_or_equal, greater_than or greater_or_equal")
		}
		if math.IsNaN(m.GetThreshold()) || math.IsInf(m.GetThreshold(), 0) {
			ve.Add(mf+".threshold", "must be a finite number")
		}
	}
}

func validateRouterMetric(ve *ValidationError, f string, rm *deployerv1.RouterMetric, interval time.Duration) {
	switch rm.GetKind() {
	case deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_ERROR_RATIO, deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_LATENCY,
		deployerv1.RouterMetricKind_ROUTER_METRIC_KIND_REQUEST_RATE:
	default:
		ve.Add(f+".kind", "is required: error_ratio, latency or request_rate")
	}
	if p := rm.GetPercentile(); p < 0 || p > 100 || math.IsNaN(p) {
		ve.Add(f+".percentile", "must be 0-100, got %g", p)
	}
	if rm.GetMinRequests() < 0 {
		ve.Add(f+".min_requests", "must not be negative")
	}
	if interval <= 0 {
		interval = 30 * time.Second
	}
	checkDuration(ve, f+".window", rm.GetWindow(), 0, interval)
}

func validateRollbackPolicy(ve *ValidationError, f string, p *deployerv1.RollbackPolicy) {
	if p == nil {
		return
	}
	actions := []struct {
		field  string
		action deployerv1.FailureAction
		ignore bool
	}{
		{"on_failed_health", p.GetOnFailedHealth(), false},
		{"on_failed_analysis", p.GetOnFailedAnalysis(), true},
		{"on_firing_alert", p.GetOnFiringAlert(), true},
		{"on_deadline", p.GetOnDeadline(), false},
	}
	for _, a := range actions {
		switch a.action {
		case deployerv1.FailureAction_FAILURE_ACTION_UNSPECIFIED, deployerv1.FailureAction_FAILURE_ACTION_ROLLBACK, deployerv1.FailureAction_FAILURE_ACTION_PAUSE:
		case deployerv1.FailureAction_FAILURE_ACTION_IGNORE:
			if !a.ignore {
				ve.Add(f+"."+a.field, "ignore would send traffic to replicas that never became healthy; use rollback or pause")
			}
		default:
			ve.Add(f+"."+a.field, "unknown action %d", a.action)
		}
	}
	checkDuration(ve, f+".verification_window", p.GetVerificationWindow(), 0, 24*time.Hour)
	for k := range p.GetAlertMatchLabels() {
		if !labelNameRe.MatchString(k) {
			ve.Add(f+".alert_match_labels", "%q is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)", k)
		}
	}
}

var labelNameRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// quantity resolves a count-or-percent against replicas (rounding percent up).
func quantity(ve *ValidationError, f string, q *deployerv1.ReplicaQuantity, replicas int32) int32 {
	switch v := q.GetValue().(type) {
	case *deployerv1.ReplicaQuantity_Count:
		if v.Count < 0 || v.Count > MaxReplicas {
			ve.Add(f+".count", "must be 0-%d, got %d", MaxReplicas, v.Count)
		}
		return v.Count
	case *deployerv1.ReplicaQuantity_Percent:
		if v.Percent < 0 || v.Percent > 100 {
			ve.Add(f+".percent", "must be 0-100, got %d", v.Percent)
			return 0
		}
		return (replicas*v.Percent + 99) / 100
	}
	return 1
}
