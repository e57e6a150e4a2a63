package docker

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// LabelPorts is the driver's own label recording the spec's ports as
// "name=port/proto,...", since Docker keeps no port names.
const LabelPorts = "opsuite.docker.ports"

// defaultGrace is the stop grace period when the spec sets none.
const defaultGrace = 10 * time.Second

// loopback is where every port is published.
var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	portName     = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)
)

// createOptions validates spec and turns it into the container to create.
// Errors wrap [driver.ErrInvalidSpec] and name the field.
func createOptions(spec driver.Spec) (client.ContainerCreateOptions, error) {
	if err := validate(spec); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	grace := spec.StopGracePeriod
	if grace == 0 {
		grace = defaultGrace
	}
	stopTimeout := int(math.Ceil(grace.Seconds()))

	cfg := &container.Config{
		Image:        spec.Image,
		Env:          envList(spec.Env),
		WorkingDir:   spec.WorkingDir,
		Labels:       labels(spec),
		ExposedPorts: network.PortSet{},
		StopTimeout:  &stopTimeout,
	}
	if len(spec.Command) > 0 {
		// Entrypoint replaces the image's; the image's Cmd is then dropped too.
		cfg.Entrypoint = slices.Clone(spec.Command)
	}
	if len(spec.Args) > 0 {
		cfg.Cmd = slices.Clone(spec.Args)
	}

	restart := container.RestartPolicyDisabled
	if spec.RestartOnCrash {
		// Also restarts after exit code 0 and after a daemon restart; only
		// a stop by the driver (or an operator) ends it.
		restart = container.RestartPolicyUnlessStopped
	}
	host := &container.HostConfig{
		RestartPolicy: container.RestartPolicy{Name: restart},
		PortBindings:  network.PortMap{},
	}
	for _, p := range spec.Ports {
		port, _ := network.PortFrom(uint16(p.ContainerPort), protocol(p))
		cfg.ExposedPorts[port] = struct{}{}
		// An empty HostPort lets the daemon pick a free one.
		host.PortBindings[port] = []network.PortBinding{{HostIP: loopback, HostPort: ""}}
	}
	for _, v := range spec.Volumes {
		m := mount.Mount{Type: mount.TypeVolume, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly}
		if path.IsAbs(v.Source) {
			m.Type = mount.TypeBind
		}
		host.Mounts = append(host.Mounts, m)
	}
	return client.ContainerCreateOptions{Name: spec.ID, Config: cfg, HostConfig: host}, nil
}

func validate(spec driver.Spec) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !dns1123Label.MatchString(spec.ID) {
		bad("ID", "%q is not a DNS-1123 label (lower case letters, digits and '-', at most 63)", spec.ID)
	}
	if spec.Image == "" {
		bad("Image", "required by the docker driver")
	} else if _, err := reference.ParseAnyReference(spec.Image); err != nil {
		bad("Image", "%q: %v", spec.Image, err)
	}
	if len(spec.Command) > 0 && spec.Command[0] == "" {
		bad("Command[0]", "empty program")
	}
	for k := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			bad("Env", "invalid variable name %q", k)
		}
	}
	if spec.WorkingDir != "" && !path.IsAbs(spec.WorkingDir) {
		bad("WorkingDir", "%q is not an absolute path", spec.WorkingDir)
	}
	names := map[string]bool{}
	ports := map[string]bool{}
	for i, p := range spec.Ports {
		field := fmt.Sprintf("Ports[%d]", i)
		if !portName.MatchString(p.Name) {
			bad(field+".Name", "%q: use letters, digits, '-' and '_'", p.Name)
		}
		if names[p.Name] {
			bad(field+".Name", "%q is used twice", p.Name)
		}
		names[p.Name] = true
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			bad(field+".ContainerPort", "%d is out of range 1-65535", p.ContainerPort)
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			bad(field+".Protocol", "%q is neither tcp nor udp", p.Protocol)
		}
		key := fmt.Sprintf("%d/%s", p.ContainerPort, protocol(p))
		if ports[key] {
			bad(field+".ContainerPort", "%s is used twice", key)
		}
		ports[key] = true
	}
	for i, v := range spec.Volumes {
		field := fmt.Sprintf("Volumes[%d]", i)
		if !path.IsAbs(v.Target) {
			bad(field+".Target", "%q is not an absolute path", v.Target)
		}
		if !path.IsAbs(v.Source) && (strings.HasPrefix(v.Source, ".") || strings.Contains(v.Source, "/")) {
			bad(field+".Source", "%q is a relative path; use an absolute host path or a volume name", v.Source)
		}
	}
	if spec.StopGracePeriod < 0 {
		bad("StopGracePeriod", "%s is negative", spec.StopGracePeriod)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", driver.ErrInvalidSpec, errors.Join(errs...))
}

func protocol(p driver.Port) network.IPProtocol {
	if p.Protocol == "udp" {
		return network.UDP
	}
	return network.TCP
}

// labels are the spec's labels overlaid with the driver's own, which win.
func labels(spec driver.Spec) map[string]string {
	l := cloneLabels(spec.Labels)
	l[driver.LabelManagedBy] = driver.ManagedByValue
	l[driver.LabelApp] = spec.App
	l[driver.LabelEnvironment] = spec.Environment
	l[driver.LabelRevision] = strconv.FormatInt(spec.Revision, 10)
	l[driver.LabelReplica] = spec.ID
	if len(spec.Ports) > 0 {
		parts := make([]string, len(spec.Ports))
		for i, p := range spec.Ports {
			parts[i] = fmt.Sprintf("%s=%d/%s", p.Name, p.ContainerPort, protocol(p))
		}
		l[LabelPorts] = strings.Join(parts, ",")
	}
	return l
}

// envList renders env as sorted KEY=value entries.
func envList(env map[string]string) []string {
	if len(env) == 0 {
		return nil
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}
