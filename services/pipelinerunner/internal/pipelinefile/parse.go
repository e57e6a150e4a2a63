package pipelinefile

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// MaxSourceBytes bounds a pipeline file.
const MaxSourceBytes = 1 << 20

var (
	pipelineName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	stepName     = regexp.MustCompile(`^[a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?$`)
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	axisName     = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
)

// cronParser accepts standard 5-field specs and descriptors (@hourly, @every 5m).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a cron spec in a time zone.
func ParseCron(spec, tz string) (cron.Schedule, error) {
	if tz != "" {
		if _, err := time.LoadLocation(tz); err != nil {
			return nil, fmt.Errorf("time zone %q: %w", tz, err)
		}
		spec = "CRON_TZ=" + tz + " " + spec
	}
	return cronParser.Parse(spec)
}

// Parse reads and checks a pipeline file. Its error, when not nil, is an
// *Error listing every problem found.
func Parse(src []byte) (*Pipeline, error) {
	if len(src) > MaxSourceBytes {
		return nil, &Error{Problems: []Problem{{Message: fmt.Sprintf("file is %d bytes, more than the %d allowed", len(src), MaxSourceBytes)}}}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return nil, &Error{Problems: []Problem{yamlProblem(err)}}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, &Error{Problems: []Problem{{Message: "file is empty"}}}
	}
	d := &decoder{}
	p := d.pipeline(&root)
	d.check(p)
	if len(d.problems) > 0 {
		sort.SliceStable(d.problems, func(i, j int) bool { return d.problems[i].Line < d.problems[j].Line })
		return nil, &Error{Problems: d.problems}
	}
	return p, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlProblem(err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	p := Problem{Message: "malformed YAML: " + msg}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		p.Message = "malformed YAML: " + te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(p.Message); m != nil {
		_, _ = fmt.Sscanf(m[1], "%d", &p.Line)
		p.Message = strings.Replace(p.Message, m[0]+": ", "", 1)
	}
	return p
}

func (d *decoder) pipeline(root *yaml.Node) *Pipeline {
	p := &Pipeline{Executor: ExecutorShell, Concurrency: Concurrency{Policy: "queue"}}
	var stepsNode *yaml.Node
	d.mapping(root, "",
		field{"name", d.str(&p.Name)},
		field{"description", d.str(&p.Description)},
		field{"timeout", d.duration(&p.Timeout)},
		field{"executor", d.str(&p.Executor)},
		field{"image", d.str(&p.Image)},
		field{"env", d.strMap(&p.Env)},
		field{"stages", d.strList(&p.Stages)},
		field{"variables", func(key string, n *yaml.Node) { p.Variables = d.variables(key, n) }},
		field{"concurrency", func(key string, n *yaml.Node) { d.concurrency(key, n, &p.Concurrency) }},
		field{"triggers", func(key string, n *yaml.Node) { d.triggers(key, n, p) }},
		field{"steps", func(key string, n *yaml.Node) {
			stepsNode = n
			d.list(n, key, func(k string, item *yaml.Node) {
				if s := d.step(k, item); s != nil {
					p.Steps = append(p.Steps, s)
				}
			})
		}},
	)
	if stepsNode == nil {
		d.addf(resolve(root), "steps", "is required: a pipeline needs at least one step")
	}
	return p
}

func (d *decoder) variables(key string, n *yaml.Node) []Variable {
	var out []Variable
	d.list(n, key, func(k string, item *yaml.Node) {
		var v Variable
		d.mapping(item, k,
			field{"name", d.str(&v.Name)},
			field{"description", d.str(&v.Description)},
			field{"default", d.str(&v.Default)},
			field{"required", d.boolean(&v.Required)},
		)
		if !envName.MatchString(v.Name) {
			d.addf(item, k+".name", "%q is not a valid variable name (letters, digits, '_')", v.Name)
		}
		out = append(out, v)
	})
	return out
}

func (d *decoder) concurrency(key string, n *yaml.Node, c *Concurrency) {
	d.mapping(n, key,
		field{"limit", d.integer(&c.Limit, 0, 1000)},
		field{"policy", func(k string, v *yaml.Node) {
			if s, ok := d.scalar(v, k); ok {
				if !slices.Contains([]string{"queue", "skip", "cancel_oldest"}, s) {
					d.addf(v, k, "must be queue, skip or cancel_oldest, not %q", s)
				}
				c.Policy = s
			}
		}},
	)
}

func (d *decoder) triggers(key string, n *yaml.Node, p *Pipeline) {
	d.mapping(n, key,
		field{"cron", func(k string, v *yaml.Node) {
			d.list(v, k, func(ik string, item *yaml.Node) {
				var c Cron
				d.mapping(item, ik,
					field{"name", d.str(&c.Name)},
					field{"spec", func(sk string, sv *yaml.Node) {
						if s, ok := d.scalar(sv, sk); ok {
							c.Spec = s
						}
					}},
					field{"time_zone", d.str(&c.TimeZone)},
					field{"ref", d.str(&c.Ref)},
					field{"variables", d.strMap(&c.Variables)},
				)
				if c.Name == "" {
					c.Name = fmt.Sprintf("cron-%d", len(p.Cron)+1)
				}
				if c.Spec == "" {
					d.addf(item, ik+".spec", "is required")
				} else if _, err := ParseCron(c.Spec, c.TimeZone); err != nil {
					d.addf(item, ik+".spec", "bad cron spec %q: %v", c.Spec, err)
				}
				p.Cron = append(p.Cron, c)
			})
		}},
		field{"webhook", func(k string, v *yaml.Node) {
			d.list(v, k, func(ik string, item *yaml.Node) {
				w := Webhook{}
				d.mapping(item, ik,
					field{"provider", d.str(&w.Provider)},
					field{"secret", d.str(&w.Secret)},
					field{"repository", d.str(&w.Repository)},
					field{"events", d.strList(&w.Events)},
					field{"branches", d.strList(&w.Branches)},
				)
				if w.Provider != "github" && w.Provider != "gitlab" {
					d.addf(item, ik+".provider", "must be github or gitlab, not %q", w.Provider)
				}
				if w.Secret == "" {
					d.addf(item, ik+".secret", "is required: the secret holding the HMAC key or token")
				}
				if len(w.Events) == 0 {
					w.Events = []string{"push"}
				}
				for i, b := range w.Branches {
					if _, err := pathMatch(b, "x"); err != nil {
						d.addf(item, fmt.Sprintf("%s.branches[%d]", ik, i), "bad glob %q", b)
					}
				}
				p.Webhooks = append(p.Webhooks, w)
			})
		}},
	)
}

func (d *decoder) step(key string, n *yaml.Node) *Step {
	s := &Step{Line: resolve(n).Line}
	if name := scalarKey(n, "name"); name != "" && stepName.MatchString(name) {
		key = "steps." + name
	}
	var needsSet bool
	var retryNode *yaml.Node
	ok := d.mapping(n, key,
		field{"name", d.str(&s.Name)},
		field{"type", d.str(&s.Type)},
		field{"stage", d.str(&s.Stage)},
		field{"needs", func(k string, v *yaml.Node) { needsSet = true; d.strList(&s.Needs)(k, v) }},
		field{"when", d.str(&s.When)},
		field{"executor", d.str(&s.Executor)},
		field{"image", d.str(&s.Image)},
		field{"command", func(k string, v *yaml.Node) {
			if resolve(v).Kind == yaml.ScalarNode {
				d.addf(v, k, "must be a list (argv); use `script` for shell text")
				return
			}
			d.strList(&s.Command)(k, v)
		}},
		field{"script", d.str(&s.Script)},
		field{"env", d.strMap(&s.Env)},
		field{"secrets", func(k string, v *yaml.Node) { s.Secrets = d.secretRefs(k, v) }},
		field{"timeout", d.duration(&s.Timeout)},
		field{"retry", func(k string, v *yaml.Node) { retryNode = v; s.Retry = d.retry(k, v) }},
		field{"matrix", func(k string, v *yaml.Node) { s.Matrix = d.matrix(k, v) }},
		field{"working_dir", d.str(&s.WorkingDir)},
		field{"artifacts", d.strList(&s.Artifacts)},
		field{"services", func(k string, v *yaml.Node) { s.Services = d.services(k, v) }},
		field{"deploy", func(k string, v *yaml.Node) { s.Deploy = d.deploy(k, v) }},
		field{"gate", func(k string, v *yaml.Node) { s.Gate = d.gate(k, v) }},
		field{"gitlab", func(k string, v *yaml.Node) { s.GitLab = d.gitlab(k, v) }},
		field{"github", func(k string, v *yaml.Node) { s.GitHub = d.github(k, v) }},
	)
	if !ok {
		return nil
	}
	if retryNode == nil {
		s.Retry = Retry{MaxAttempts: 1, Multiplier: 2}
	}
	if !needsSet {
		s.Needs = nil
	} else if s.Needs == nil {
		s.Needs = []string{}
	}
	return s
}

func (d *decoder) secretRefs(key string, n *yaml.Node) []SecretRef {
	var out []SecretRef
	d.list(n, key, func(k string, item *yaml.Node) {
		var r SecretRef
		if resolve(item).Kind == yaml.ScalarNode {
			r.Name, _ = d.scalar(item, k)
		} else {
			d.mapping(item, k, field{"name", d.str(&r.Name)}, field{"env", d.str(&r.Env)})
		}
		if r.Env == "" {
			r.Env = strings.ToUpper(strings.ReplaceAll(r.Name, "-", "_"))
		}
		if !pipelineName.MatchString(r.Name) {
			d.addf(item, k, "%q is not a valid secret name", r.Name)
		} else if !envName.MatchString(r.Env) {
			d.addf(item, k+".env", "%q is not a valid environment variable name", r.Env)
		}
		out = append(out, r)
	})
	return out
}

func (d *decoder) retry(key string, n *yaml.Node) Retry {
	r := Retry{MaxAttempts: 1, InitialBackoff: time.Second, Multiplier: 2, MaxBackoff: time.Minute}
	if rn := resolve(n); rn.Kind == yaml.ScalarNode {
		d.integer(&r.MaxAttempts, 1, 100)(key, n)
		return r
	}
	d.mapping(n, key,
		field{"max_attempts", d.integer(&r.MaxAttempts, 1, 100)},
		field{"backoff", d.duration(&r.InitialBackoff)},
		field{"max_backoff", d.duration(&r.MaxBackoff)},
		field{"multiplier", d.float(&r.Multiplier)},
		field{"when", func(k string, v *yaml.Node) {
			d.list(v, k, func(ik string, item *yaml.Node) {
				s, ok := d.scalar(item, ik)
				if !ok {
					return
				}
				if !slices.Contains([]string{RetryOnCommandFailed, RetryOnInfraError, RetryOnTimedOut}, s) {
					d.addf(item, ik, "must be command_failed, infra_error or timed_out, not %q", s)
					return
				}
				r.When = append(r.When, s)
			})
		}},
		field{"exit_codes", func(k string, v *yaml.Node) {
			d.list(v, k, func(ik string, item *yaml.Node) {
				var c int
				d.integer(&c, 1, 255)(ik, item)
				r.ExitCodes = append(r.ExitCodes, c)
			})
		}},
	)
	if r.MaxBackoff < r.InitialBackoff {
		r.MaxBackoff = r.InitialBackoff
	}
	return r
}

func (d *decoder) matrix(key string, n *yaml.Node) []Axis {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.addf(n, key, "must be a mapping of axis to values")
		return nil
	}
	var out []Axis
	combos := 1
	for i := 0; i+1 < len(n.Content); i += 2 {
		name := n.Content[i].Value
		k := join(key, name)
		if !axisName.MatchString(name) {
			d.addf(n.Content[i], k, "%q is not a valid axis name (lower case letters, digits, '_')", name)
		}
		if slices.ContainsFunc(out, func(a Axis) bool { return a.Name == name }) {
			d.addf(n.Content[i], k, "axis %q repeated", name)
			continue
		}
		var vals []string
		d.strList(&vals)(k, n.Content[i+1])
		if len(vals) == 0 {
			d.addf(n.Content[i+1], k, "needs at least one value")
			continue
		}
		combos *= len(vals)
		if combos > 256 {
			d.addf(n.Content[i+1], k, "matrix has more than 256 combinations")
			return out
		}
		out = append(out, Axis{Name: name, Values: vals})
	}
	return out
}

func (d *decoder) services(key string, n *yaml.Node) []Service {
	var out []Service
	d.list(n, key, func(k string, item *yaml.Node) {
		var s Service
		d.mapping(item, k,
			field{"name", d.str(&s.Name)},
			field{"image", d.str(&s.Image)},
			field{"env", d.strMap(&s.Env)},
			field{"command", d.strList(&s.Command)},
		)
		if !pipelineName.MatchString(s.Name) {
			d.addf(item, k+".name", "%q is not a valid service name", s.Name)
		}
		if s.Image == "" {
			d.addf(item, k+".image", "is required")
		}
		out = append(out, s)
	})
	return out
}

func (d *decoder) deploy(key string, n *yaml.Node) *Deploy {
	dp := &Deploy{}
	d.mapping(n, key,
		field{"application", d.str(&dp.Application)},
		field{"environment", d.str(&dp.Environment)},
		field{"image", d.str(&dp.Image)},
		field{"env", d.strMap(&dp.Env)},
		field{"wait", d.duration(&dp.Wait)},
	)
	if dp.Application == "" {
		d.addf(n, key+".application", "is required")
	}
	return dp
}

func (d *decoder) gate(key string, n *yaml.Node) *Gate {
	g := &Gate{Interval: time.Second}
	d.mapping(n, key,
		field{"health", d.str(&g.Health)},
		field{"no_firing_alerts", d.str(&g.Alerts)},
		field{"interval", d.duration(&g.Interval)},
	)
	if (g.Health == "") == (g.Alerts == "") {
		d.addf(n, key, "needs exactly one of health (a health-checker group) or no_firing_alerts (an application)")
	}
	return g
}

func (d *decoder) gitlab(key string, n *yaml.Node) *GitLab {
	g := &GitLab{URL: "https://gitlab.com", PollInterval: 5 * time.Second}
	d.mapping(n, key,
		field{"url", d.str(&g.URL)},
		field{"project", d.str(&g.Project)},
		field{"ref", d.str(&g.Ref)},
		field{"token", d.str(&g.Token)},
		field{"variables", d.strMap(&g.Variables)},
		field{"poll_interval", d.duration(&g.PollInterval)},
	)
	d.required(n, key, "project", g.Project, "ref", g.Ref, "token", g.Token)
	return g
}

func (d *decoder) github(key string, n *yaml.Node) *GitHub {
	g := &GitHub{URL: "https://api.github.com", PollInterval: 5 * time.Second}
	d.mapping(n, key,
		field{"url", d.str(&g.URL)},
		field{"repository", d.str(&g.Repository)},
		field{"workflow", d.str(&g.Workflow)},
		field{"ref", d.str(&g.Ref)},
		field{"token", d.str(&g.Token)},
		field{"inputs", d.strMap(&g.Inputs)},
		field{"poll_interval", d.duration(&g.PollInterval)},
	)
	d.required(n, key, "repository", g.Repository, "workflow", g.Workflow, "ref", g.Ref, "token", g.Token)
	return g
}

// required adds a problem for each empty value of name/value pairs.
func (d *decoder) required(n *yaml.Node, key string, pairs ...string) {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			d.addf(n, key+"."+pairs[i], "is required")
		}
	}
}

// scalarKey returns the scalar value of key in mapping n, or "".
func scalarKey(n *yaml.Node, key string) string {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}
