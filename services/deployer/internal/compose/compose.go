// Package compose converts a docker-compose file into deployer applications,
// one per service.
package compose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"google.golang.org/protobuf/types/known/durationpb"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
)

// MaxFileBytes bounds the compose file Convert accepts.
const MaxFileBytes = 1 << 20

// Labels set on every converted application.
const (
	LabelProject = "opsuite.compose.project"
	LabelService = "opsuite.compose.service"
)

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Convert parses a compose file (YAML text) for project `project` and returns
// one application per service, ordered by service name. The file is read
// from data alone: no other file is opened, and ${VAR} interpolation sees
// vars only, never the host's environment. Errors wrap ErrInvalid or
// ErrUnsupported and name the key.
func Convert(ctx context.Context, project string, data []byte, vars map[string]string) ([]*deployerv1.Application, error) {
	switch {
	case len(data) == 0:
		// compose-go reads the file from disk when the content is nil.
		return nil, fmt.Errorf("%w: the file is empty", ErrInvalid)
	case len(data) > MaxFileBytes:
		return nil, fmt.Errorf("%w: %d bytes is over the limit of %d", ErrInvalid, len(data), MaxFileBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	model, err := loader.LoadModelWithContext(ctx, configDetails(data, vars), loadOptions(project, true))
	if err != nil {
		return nil, loadError(ctx, err)
	}
	if errs := checkModel(model); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p, err := loader.LoadWithContext(ctx, configDetails(data, vars), loadOptions(project, false))
	if err != nil {
		return nil, loadError(ctx, err)
	}
	if len(p.Services) == 0 {
		return nil, fmt.Errorf("%w: services: the file declares no services", ErrInvalid)
	}

	var (
		apps []*deployerv1.Application
		errs []error
	)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		app, err := convertService(p, p.Services[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		apps = append(apps, app)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return apps, nil
}

func configDetails(data []byte, vars map[string]string) types.ConfigDetails {
	env := types.Mapping{}
	for k, v := range vars {
		env[k] = v
	}
	return types.ConfigDetails{
		// Never used: paths are not resolved and include/extends are off.
		WorkingDir:  "/",
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml", Content: data}},
		// Only the caller's variables: ${VAR} never sees the deployer's environment.
		Environment: env,
	}
}

// loadOptions keeps compose-go away from the file system: include, extends,
// env_file and label_file stay in the model unresolved (and are rejected by
// checkModel) and relative paths are not resolved against a directory.
// raw skips normalisation so checkModel sees only what the user wrote.
func loadOptions(project string, raw bool) func(*loader.Options) {
	return func(o *loader.Options) {
		o.SetProjectName(project, true)
		o.SkipInclude = true
		o.SkipExtends = true
		o.SkipResolveEnvironment = true
		o.SkipResolveLabels = true
		o.ResolvePaths = false
		o.SkipNormalization = raw
	}
}

func loadError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return fmt.Errorf("%w: %w", ErrInvalid, err)
}

func convertService(p *types.Project, svc types.ServiceConfig) (*deployerv1.Application, error) {
	at := "services." + svc.Name
	var errs []error

	name := strings.ToLower(p.Name + "-" + svc.Name)
	if len(name) > 63 || !dns1123Label.MatchString(name) {
		errs = append(errs, fmt.Errorf("%s: %w: application name %q is not a DNS-1123 label: lower-case letters, digits and '-', at most 63 characters", at, ErrInvalid, name))
	}
	if svc.Image == "" {
		errs = append(errs, fmt.Errorf("%s.image: %w: an image is required", at, ErrInvalid))
	}

	spec := &deployerv1.ApplicationSpec{
		Workload:   &deployerv1.ApplicationSpec_Image{Image: svc.Image},
		Command:    svc.Entrypoint,
		Args:       svc.Command,
		WorkingDir: svc.WorkingDir,
		Replicas:   1,
		// Compose has no notion of verifying a release: done is done.
		RollbackPolicy: &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)},
	}
	if len(spec.Command) == 0 {
		spec.Command = nil
	}
	if len(spec.Args) == 0 {
		spec.Args = nil
	}

	for _, k := range slices.Sorted(maps.Keys(svc.Environment)) {
		v := svc.Environment[k]
		if v == nil {
			errs = append(errs, unsupported(at+".environment."+k, "a variable without a value is taken from the host, which import does not read; give it a value"))
			continue
		}
		spec.Env = append(spec.Env, &deployerv1.EnvVar{Name: k, Value: *v})
	}

	for i, port := range svc.Ports {
		pp, err := convertPort(fmt.Sprintf("%s.ports[%d]", at, i), port)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		spec.Ports = append(spec.Ports, pp)
	}

	for i, vol := range svc.Volumes {
		v, err := convertVolume(p, fmt.Sprintf("%s.volumes[%d]", at, i), vol)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		spec.Volumes = append(spec.Volumes, v)
	}

	if err := convertDeploy(at+".deploy", svc.Deploy, spec); err != nil {
		errs = append(errs, err)
	}

	hc, err := convertHealthCheck(at+".healthcheck", svc.HealthCheck)
	if err != nil {
		errs = append(errs, err)
	}
	spec.HealthCheck = hc

	switch svc.Restart {
	case "":
	case types.RestartPolicyNo:
		spec.RestartPolicy = deployerv1.RestartPolicy_RESTART_POLICY_NEVER
	case types.RestartPolicyAlways, types.RestartPolicyUnlessStopped:
		spec.RestartPolicy = deployerv1.RestartPolicy_RESTART_POLICY_ALWAYS
	case types.RestartPolicyOnFailure:
		spec.RestartPolicy = deployerv1.RestartPolicy_RESTART_POLICY_ON_FAILURE
	default:
		errs = append(errs, unsupported(at+".restart", fmt.Sprintf("%q has no equivalent; use no, always, unless-stopped or on-failure without a retry count", svc.Restart)))
	}
	if svc.StopGracePeriod != nil {
		spec.StopGracePeriod = durationpb.New(time.Duration(*svc.StopGracePeriod))
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &deployerv1.Application{
		Name: name,
		Labels: map[string]string{
			LabelProject: p.Name,
			LabelService: svc.Name,
		},
		Spec:           spec,
		ComposeProject: p.Name,
	}, nil
}

func convertPort(at string, port types.ServicePortConfig) (*deployerv1.Port, error) {
	out := &deployerv1.Port{Name: port.Name, ContainerPort: port.Target}
	switch port.Protocol {
	case "", "tcp":
		out.Protocol = deployerv1.PortProtocol_PORT_PROTOCOL_TCP
	case "udp":
		out.Protocol = deployerv1.PortProtocol_PORT_PROTOCOL_UDP
	default:
		return nil, unsupported(at+".protocol", fmt.Sprintf("%q; use tcp or udp", port.Protocol))
	}
	if port.HostIP != "" {
		return nil, unsupported(at+".host_ip", "published ports listen on every address")
	}
	if port.Published != "" {
		hp, err := strconv.ParseUint(port.Published, 10, 16)
		if err != nil || hp == 0 {
			return nil, unsupported(at+".published", fmt.Sprintf("%q; publish one port number, not a range", port.Published))
		}
		out.HostPort = uint32(hp)
	}
	if port.Target == 0 || port.Target > math.MaxUint16 {
		return nil, fmt.Errorf("%s.target: %w: %d is not a port number", at, ErrInvalid, port.Target)
	}
	return out, nil
}

func convertVolume(p *types.Project, at string, vol types.ServiceVolumeConfig) (*deployerv1.Volume, error) {
	out := &deployerv1.Volume{Target: vol.Target, ReadOnly: vol.ReadOnly}
	switch vol.Type {
	case types.VolumeTypeBind:
		if !path.IsAbs(vol.Source) {
			return nil, unsupported(at+".source", fmt.Sprintf("bind source %q is relative and import has no project directory; use an absolute path", vol.Source))
		}
		if b := vol.Bind; b != nil && (b.Propagation != "" || b.SELinux != "" || b.Recursive != "") {
			return nil, unsupported(at+".bind", "propagation, selinux and recursive options have no equivalent")
		}
		out.Source = &deployerv1.Volume_HostPath{HostPath: vol.Source}
	case types.VolumeTypeVolume:
		if vol.Source == "" {
			return nil, unsupported(at+".source", "anonymous volumes have no equivalent; name the volume")
		}
		if v := vol.Volume; v != nil && (v.NoCopy || v.Subpath != "") {
			return nil, unsupported(at+".volume", "nocopy and subpath have no equivalent")
		}
		// The name compose gives the volume (<project>_<volume> unless
		// external or named), so the data of `docker compose up` is reused.
		name := vol.Source
		if top, ok := p.Volumes[vol.Source]; ok && top.Name != "" {
			name = top.Name
		}
		out.Source = &deployerv1.Volume_NamedVolume{NamedVolume: name}
	case types.VolumeTypeTmpfs:
		var size int64
		if t := vol.Tmpfs; t != nil {
			if t.Mode != 0 {
				return nil, unsupported(at+".tmpfs.mode", "tmpfs mode has no equivalent")
			}
			size = int64(t.Size)
		}
		out.Source = &deployerv1.Volume_Tmpfs{Tmpfs: &deployerv1.TmpfsVolume{SizeBytes: size}}
	default:
		return nil, unsupported(at+".type", fmt.Sprintf("%q; use bind, volume or tmpfs", vol.Type))
	}
	return out, nil
}

func convertDeploy(at string, d *types.DeployConfig, spec *deployerv1.ApplicationSpec) error {
	if d == nil {
		return nil
	}
	if d.Mode != "" && d.Mode != "replicated" {
		return unsupported(at+".mode", fmt.Sprintf("%q; only replicated is supported", d.Mode))
	}
	if d.Replicas != nil {
		if *d.Replicas < 0 || *d.Replicas > math.MaxInt32 {
			return fmt.Errorf("%s.replicas: %w: %d is out of range", at, ErrInvalid, *d.Replicas)
		}
		spec.Replicas = int32(*d.Replicas)
	}
	if l := d.Resources.Limits; l != nil && (l.NanoCPUs != 0 || l.MemoryBytes != 0) {
		spec.Resources = &deployerv1.Resources{
			Cpus:        cpus(l.NanoCPUs),
			MemoryBytes: int64(l.MemoryBytes),
		}
	}
	return nil
}

// cpus widens compose-go's float32 by its shortest decimal form, so 0.1
// stays 0.1 rather than 0.10000000149.
func cpus(n types.NanoCPUs) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(n), 'g', -1, 32), 64)
	return f
}

func convertHealthCheck(at string, hc *types.HealthCheckConfig) (*deployerv1.HealthCheck, error) {
	if hc == nil || hc.Disable {
		return nil, nil
	}
	if len(hc.Test) == 0 {
		return nil, unsupported(at+".test", "a health check must give its test; the image's HEALTHCHECK is not read")
	}
	var argv []string
	switch hc.Test[0] {
	case "NONE":
		return nil, nil
	case "CMD":
		argv = hc.Test[1:]
	case "CMD-SHELL":
		// The compose file's own shell command, run inside the user's own
		// container as `docker compose` would run it; no text of ours is
		// added to it.
		argv = []string{"sh", "-c", strings.Join(hc.Test[1:], " ")}
	default:
		return nil, fmt.Errorf("%s.test: %w: must start with CMD, CMD-SHELL or NONE, not %q", at, ErrInvalid, hc.Test[0])
	}
	if len(argv) == 0 || argv[len(argv)-1] == "" {
		return nil, fmt.Errorf("%s.test: %w: the command is empty", at, ErrInvalid)
	}
	out := &deployerv1.HealthCheck{
		Probe: &deployerv1.HealthCheck_Exec{Exec: &deployerv1.ExecProbe{Argv: argv}},
	}
	if hc.Interval != nil {
		out.Interval = durationpb.New(time.Duration(*hc.Interval))
	}
	if hc.Timeout != nil {
		out.Timeout = durationpb.New(time.Duration(*hc.Timeout))
	}
	if hc.StartPeriod != nil {
		out.InitialDelay = durationpb.New(time.Duration(*hc.StartPeriod))
	}
	if hc.Retries != nil {
		if *hc.Retries > math.MaxUint32 {
			return nil, fmt.Errorf("%s.retries: %w: %d is out of range", at, ErrInvalid, *hc.Retries)
		}
		out.FailureThreshold = uint32(*hc.Retries)
	}
	return out, nil
}
