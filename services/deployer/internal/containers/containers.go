// Package containers is the deployer's direct Docker container API (the
// seed's create/start/stop/remove/status/logs operations), outside any
// application. It only ever changes containers it created itself, recognised
// by a label; replicas of applications and foreign containers can be read
// but not changed through it, so a typo cannot stop a database or pull a
// replica out from under a rollout.
package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Labels the API puts on what it creates.
const (
	// LabelManagedBy marks a container created through this API, the only
	// ones it stops, starts or removes.
	LabelManagedBy = "opsuite.managed-by"
	ManagedByValue = "opsuite-containers"
	// LabelPorts records the port names, which Docker does not keep.
	LabelPorts = "opsuite.containers.ports"
	// labelDeployer marks application replicas (the deployer driver's).
	deployerValue = "opsuite-deployer"
)

// Sentinel errors; the service maps them to gRPC codes.
var (
	ErrNotFound    = errors.New("container not found")
	ErrUnavailable = errors.New("docker daemon unavailable")
	ErrNotOwned    = errors.New("container not created through the container API")
	ErrConflict    = errors.New("container conflict")
	ErrNameTaken   = errors.New("container name taken")
)

const (
	defaultStopTimeout = 10 * time.Second
	defaultPageSize    = 100
	maxPageSize        = 1000
)

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	volumeRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	loopback  = netip.AddrFrom4([4]byte{127, 0, 0, 1})
)

// Manager runs the container API against one Docker daemon.
type Manager struct {
	cli *client.Client
	log *slog.Logger
}

// New creates a client for the daemon at host (empty means $DOCKER_HOST or
// the platform default). It does not contact the daemon: each call reports
// [ErrUnavailable] with the reason when the daemon does not answer, so the
// API comes back by itself when the daemon does.
func New(host string, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("containers: docker client: %w", err)
	}
	return &Manager{cli: cli, log: log}, nil
}

// Close releases the client.
func (m *Manager) Close() error { return m.cli.Close() }

// Create validates c, creates the container and starts it when start is set.
// When starting fails the container is removed again: nothing half-created
// is left behind.
func (m *Manager) Create(ctx context.Context, c *deployerv1.Container, start bool) (*deployerv1.Container, error) {
	opts, err := createOptions(c)
	if err != nil {
		return nil, err
	}
	created, err := m.cli.ContainerCreate(ctx, opts)
	if err != nil {
		switch {
		case cerrdefs.IsNotFound(err):
			v := validation.New("container")
			v.Add("container.image", "%q is not on the daemon (images are never pulled): %v", c.GetImage(), err)
			return nil, v.Err()
		case cerrdefs.IsConflict(err):
			return nil, fmt.Errorf("%w: %q: %w", ErrNameTaken, c.GetName(), err)
		}
		return nil, fmt.Errorf("create container: %w", classify(err))
	}
	for _, w := range created.Warnings {
		m.log.Warn("docker create warning", "container", created.ID, "warning", w)
	}
	if start {
		if _, err := m.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
			rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, rmErr := m.cli.ContainerRemove(rmCtx, created.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); rmErr != nil && !cerrdefs.IsNotFound(rmErr) {
				return nil, fmt.Errorf("start container %s: %w (and removing it failed: %v)", created.ID, classify(err), rmErr)
			}
			return nil, fmt.Errorf("start container: %w", classify(err))
		}
	}
	return m.Get(ctx, created.ID)
}

// Start starts a created or stopped container of this API.
func (m *Manager) Start(ctx context.Context, id string) (*deployerv1.Container, error) {
	c, err := m.owned(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	if _, err := m.cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return nil, fmt.Errorf("start %s: %w", id, classify(err))
	}
	return m.Get(ctx, c.ID)
}

// Stop stops a container of this API: SIGTERM, then SIGKILL after timeout
// (default 10s, rounded up to whole seconds).
func (m *Manager) Stop(ctx context.Context, id string, timeout time.Duration) (*deployerv1.Container, error) {
	c, err := m.owned(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("stop %s: %w", id, err)
	}
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	secs := int(math.Ceil(timeout.Seconds()))
	if _, err := m.cli.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return nil, fmt.Errorf("stop %s: %w", id, classify(err))
	}
	return m.Get(ctx, c.ID)
}

// Remove removes a container of this API; a running one only with force.
func (m *Manager) Remove(ctx context.Context, id string, force, volumes bool) error {
	c, err := m.owned(ctx, id)
	if err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	if c.State != nil && c.State.Running && !force {
		return fmt.Errorf("remove %s: %w: it is running; stop it first or set force", id, ErrConflict)
	}
	if _, err := m.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: force, RemoveVolumes: volumes}); err != nil && !cerrdefs.IsNotFound(err) {
		if cerrdefs.IsConflict(err) {
			return fmt.Errorf("remove %s: %w: %w", id, ErrConflict, err)
		}
		return fmt.Errorf("remove %s: %w", id, classify(err))
	}
	return nil
}

// Get reports any container by id or name.
func (m *Manager) Get(ctx context.Context, id string) (*deployerv1.Container, error) {
	c, err := m.inspect(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", id, err)
	}
	return toProto(c), nil
}

// List reports containers created through this API and application
// replicas, the running ones unless all is set, matching selector
// ("k=v,k2=v2"), ordered by name and paged by name.
func (m *Manager) List(ctx context.Context, all bool, selector string, pageSize int, pageToken string) ([]*deployerv1.Container, string, error) {
	v := validation.New("request")
	filters := make(client.Filters)
	if selector != "" {
		for term := range strings.SplitSeq(selector, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(term), "=")
			if !ok || k == "" {
				v.Add("label_selector", "%q is not key=value", term)
				continue
			}
			filters.Add("label", k+"="+val)
		}
	}
	switch {
	case pageSize < 0:
		v.Add("page_size", "%d is negative", pageSize)
	case pageSize == 0:
		pageSize = defaultPageSize
	case pageSize > maxPageSize:
		pageSize = maxPageSize
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	res, err := m.cli.ContainerList(ctx, client.ContainerListOptions{All: all, Filters: filters})
	if err != nil {
		return nil, "", fmt.Errorf("list containers: %w", classify(err))
	}
	var names []string
	byName := map[string]string{}
	for _, s := range res.Items {
		if mb := s.Labels[LabelManagedBy]; mb != ManagedByValue && mb != deployerValue {
			continue
		}
		if len(s.Names) == 0 {
			continue
		}
		n := strings.TrimPrefix(s.Names[0], "/")
		if n > pageToken {
			names = append(names, n)
			byName[n] = s.ID
		}
	}
	slices.Sort(names)
	next := ""
	if len(names) > pageSize {
		names = names[:pageSize]
		next = names[pageSize-1]
	}
	out := make([]*deployerv1.Container, 0, len(names))
	for _, n := range names {
		c, err := m.inspect(ctx, byName[n])
		if errors.Is(err, ErrNotFound) {
			continue // removed since the list
		}
		if err != nil {
			return nil, "", fmt.Errorf("list containers: %w", err)
		}
		out = append(out, toProto(c))
	}
	return out, next, nil
}

func (m *Manager) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	if id == "" {
		v := validation.New("request")
		v.Add("id", "required")
		return container.InspectResponse{}, v.Err()
	}
	res, err := m.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return container.InspectResponse{}, classify(err)
	}
	return res.Container, nil
}

// owned inspects id and checks it was created through this API.
func (m *Manager) owned(ctx context.Context, id string) (container.InspectResponse, error) {
	c, err := m.inspect(ctx, id)
	if err != nil {
		return c, err
	}
	if c.Config == nil || c.Config.Labels[LabelManagedBy] != ManagedByValue {
		if c.Config != nil && c.Config.Labels[LabelManagedBy] == deployerValue {
			return c, fmt.Errorf("%w: it is a replica of application %q; change it through the application (deploy, scale, rollback)",
				ErrNotOwned, c.Config.Labels["opsuite.app"])
		}
		return c, fmt.Errorf("%w: only containers created by CreateContainer can be changed here", ErrNotOwned)
	}
	return c, nil
}

// createOptions validates c, naming the field, and builds the create call.
func createOptions(c *deployerv1.Container) (client.ContainerCreateOptions, error) {
	v := validation.New("container")
	if c == nil {
		v.Add("container", "required")
		return client.ContainerCreateOptions{}, v.Err()
	}
	if c.GetId() != "" {
		v.Add("container.id", "is output only")
	}
	if c.GetStatus() != nil {
		v.Add("container.status", "is output only")
	}
	if c.GetName() != "" && !nameRE.MatchString(c.GetName()) {
		v.Add("container.name", "%q is not a DNS-1123 label (lower case letters, digits and '-', at most 63)", c.GetName())
	}
	if c.GetImage() == "" {
		v.Add("container.image", "required")
	} else if _, err := reference.ParseAnyReference(c.GetImage()); err != nil {
		v.Add("container.image", "%q: %v", c.GetImage(), err)
	}
	if cmd := c.GetCommand(); len(cmd) > 0 && cmd[0] == "" {
		v.Add("container.command[0]", "empty program")
	}
	env := make([]string, 0, len(c.GetEnv()))
	for i, e := range c.GetEnv() {
		if !envNameRE.MatchString(e.GetName()) {
			v.Add(fmt.Sprintf("container.env[%d].name", i), "%q: use letters, digits and '_', not starting with a digit", e.GetName())
		}
		env = append(env, e.GetName()+"="+e.GetValue())
	}
	if wd := c.GetWorkingDir(); wd != "" && !path.IsAbs(wd) {
		v.Add("container.working_dir", "%q is not an absolute path", wd)
	}
	for k := range c.GetLabels() {
		if k == "" || strings.HasPrefix(k, "opsuite.") {
			v.Add("container.labels", "key %q: empty or in the reserved opsuite. prefix", k)
		}
	}
	cfg := &container.Config{
		Image: c.GetImage(), Env: env, WorkingDir: c.GetWorkingDir(),
		Labels: map[string]string{LabelManagedBy: ManagedByValue}, ExposedPorts: network.PortSet{},
	}
	for k, val := range c.GetLabels() {
		if !strings.HasPrefix(k, "opsuite.") {
			cfg.Labels[k] = val
		}
	}
	if len(c.GetCommand()) > 0 {
		cfg.Entrypoint = slices.Clone(c.GetCommand())
	}
	if len(c.GetArgs()) > 0 {
		cfg.Cmd = slices.Clone(c.GetArgs())
	}
	host := &container.HostConfig{PortBindings: network.PortMap{}}
	switch c.GetRestartPolicy() {
	case deployerv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED, deployerv1.RestartPolicy_RESTART_POLICY_NEVER:
		host.RestartPolicy.Name = container.RestartPolicyDisabled
	case deployerv1.RestartPolicy_RESTART_POLICY_ALWAYS:
		host.RestartPolicy.Name = container.RestartPolicyUnlessStopped
	case deployerv1.RestartPolicy_RESTART_POLICY_ON_FAILURE:
		host.RestartPolicy.Name = container.RestartPolicyOnFailure
	default:
		v.Add("container.restart_policy", "unknown value %d", c.GetRestartPolicy())
	}
	if r := c.GetResources(); r != nil {
		if r.GetCpus() < 0 || math.IsNaN(r.GetCpus()) || math.IsInf(r.GetCpus(), 0) {
			v.Add("container.resources.cpus", "%v is not a non-negative number", r.GetCpus())
		} else {
			host.NanoCPUs = int64(r.GetCpus() * 1e9)
		}
		if r.GetMemoryBytes() < 0 {
			v.Add("container.resources.memory_bytes", "%d is negative", r.GetMemoryBytes())
		} else {
			host.Memory = r.GetMemoryBytes()
		}
	}
	var portLabel []string
	seen := map[string]bool{}
	for i, p := range c.GetPorts() {
		field := fmt.Sprintf("container.ports[%d]", i)
		if p.GetContainerPort() < 1 || p.GetContainerPort() > 65535 {
			v.Add(field+".container_port", "%d is out of range 1-65535", p.GetContainerPort())
			continue
		}
		if p.GetHostPort() > 65535 {
			v.Add(field+".host_port", "%d is out of range 0-65535", p.GetHostPort())
			continue
		}
		proto := network.TCP
		if p.GetProtocol() == deployerv1.PortProtocol_PORT_PROTOCOL_UDP {
			proto = network.UDP
		}
		port, _ := network.PortFrom(uint16(p.GetContainerPort()), proto)
		if seen[port.String()] {
			v.Add(field+".container_port", "%s is used twice", port)
			continue
		}
		seen[port.String()] = true
		name := p.GetName()
		if name == "" {
			name = fmt.Sprintf("port-%d", i)
		} else if !nameRE.MatchString(name) {
			v.Add(field+".name", "%q is not a DNS-1123 label", name)
		}
		cfg.ExposedPorts[port] = struct{}{}
		hostPort := ""
		if p.GetHostPort() != 0 {
			hostPort = strconv.Itoa(int(p.GetHostPort()))
		}
		// Published on loopback only: the suite never opens a port to the network by itself.
		host.PortBindings[port] = []network.PortBinding{{HostIP: loopback, HostPort: hostPort}}
		portLabel = append(portLabel, name+"="+port.String())
	}
	if len(portLabel) > 0 {
		cfg.Labels[LabelPorts] = strings.Join(portLabel, ",")
	}
	for i, vol := range c.GetVolumes() {
		field := fmt.Sprintf("container.volumes[%d]", i)
		if !path.IsAbs(vol.GetTarget()) {
			v.Add(field+".target", "%q is not an absolute path", vol.GetTarget())
		}
		mnt := mount.Mount{Target: vol.GetTarget(), ReadOnly: vol.GetReadOnly()}
		switch src := vol.GetSource().(type) {
		case *deployerv1.Volume_HostPath:
			if !path.IsAbs(src.HostPath) {
				v.Add(field+".host_path", "%q is not an absolute path", src.HostPath)
			}
			mnt.Type, mnt.Source = mount.TypeBind, src.HostPath
		case *deployerv1.Volume_NamedVolume:
			if !volumeRE.MatchString(src.NamedVolume) {
				v.Add(field+".named_volume", "%q is not a volume name", src.NamedVolume)
			}
			mnt.Type, mnt.Source = mount.TypeVolume, src.NamedVolume
		case *deployerv1.Volume_Tmpfs:
			mnt.Type = mount.TypeTmpfs
			if src.Tmpfs.GetSizeBytes() < 0 {
				v.Add(field+".tmpfs.size_bytes", "%d is negative", src.Tmpfs.GetSizeBytes())
			} else if src.Tmpfs.GetSizeBytes() > 0 {
				mnt.TmpfsOptions = &mount.TmpfsOptions{SizeBytes: src.Tmpfs.GetSizeBytes()}
			}
		default:
			v.Add(field, "one of host_path, named_volume or tmpfs is required")
		}
		host.Mounts = append(host.Mounts, mnt)
	}
	if err := v.Err(); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	return client.ContainerCreateOptions{Name: c.GetName(), Config: cfg, HostConfig: host}, nil
}

// toProto reports a container, masking nothing: containers made through
// this API carry no secrets beyond what the caller gave them.
func toProto(c container.InspectResponse) *deployerv1.Container {
	out := &deployerv1.Container{Id: c.ID, Name: strings.TrimPrefix(c.Name, "/"), Status: &deployerv1.ContainerStatus{}}
	if t, err := time.Parse(time.RFC3339Nano, c.Created); err == nil {
		out.CreateTime = timestamppb.New(t)
	}
	if cfg := c.Config; cfg != nil {
		out.Image = cfg.Image
		out.Command = slices.Clone(cfg.Entrypoint)
		out.Args = slices.Clone(cfg.Cmd)
		out.WorkingDir = cfg.WorkingDir
		out.Labels = map[string]string{}
		for k, v := range cfg.Labels {
			out.Labels[k] = v
		}
		for _, e := range cfg.Env {
			k, v, _ := strings.Cut(e, "=")
			out.Env = append(out.Env, &deployerv1.EnvVar{Name: k, Value: v})
		}
	}
	if h := c.HostConfig; h != nil {
		switch h.RestartPolicy.Name {
		case container.RestartPolicyAlways, container.RestartPolicyUnlessStopped:
			out.RestartPolicy = deployerv1.RestartPolicy_RESTART_POLICY_ALWAYS
		case container.RestartPolicyOnFailure:
			out.RestartPolicy = deployerv1.RestartPolicy_RESTART_POLICY_ON_FAILURE
		default:
			out.RestartPolicy = deployerv1.RestartPolicy_RESTART_POLICY_NEVER
		}
		if h.NanoCPUs != 0 || h.Memory != 0 {
			out.Resources = &deployerv1.Resources{Cpus: float64(h.NanoCPUs) / 1e9, MemoryBytes: h.Memory}
		}
	}
	st := out.Status
	st.RestartCount = int32(c.RestartCount)
	if s := c.State; s != nil {
		st.State = stateOf(s.Status)
		st.ExitCode = int32(s.ExitCode)
		st.Error = s.Error
		st.OomKilled = s.OOMKilled
		if s.Health != nil {
			st.Health = string(s.Health.Status)
		}
		if t, err := time.Parse(time.RFC3339Nano, s.StartedAt); err == nil && t.Year() > 1 {
			st.StartTime = timestamppb.New(t)
		}
		if t, err := time.Parse(time.RFC3339Nano, s.FinishedAt); err == nil && t.Year() > 1 {
			st.FinishTime = timestamppb.New(t)
		}
		st.Status = summary(s)
	}
	names := map[string]string{}
	if c.Config != nil {
		for entry := range strings.SplitSeq(c.Config.Labels[LabelPorts], ",") {
			if n, p, ok := strings.Cut(entry, "="); ok {
				names[p] = n
			}
		}
	}
	if c.NetworkSettings != nil {
		keys := make([]network.Port, 0, len(c.NetworkSettings.Ports))
		for p := range c.NetworkSettings.Ports {
			keys = append(keys, p)
		}
		slices.SortFunc(keys, func(a, b network.Port) int { return strings.Compare(a.String(), b.String()) })
		for _, p := range keys {
			for _, b := range c.NetworkSettings.Ports[p] {
				hp, err := strconv.Atoi(b.HostPort)
				if err != nil || !b.HostIP.IsValid() {
					continue
				}
				proto := deployerv1.PortProtocol_PORT_PROTOCOL_TCP
				if p.Proto() == network.UDP {
					proto = deployerv1.PortProtocol_PORT_PROTOCOL_UDP
				}
				st.Ports = append(st.Ports, &deployerv1.PortBinding{
					Name: names[p.String()], ContainerPort: uint32(p.Num()), Protocol: proto,
					HostAddress: b.HostIP.String(), HostPort: uint32(hp),
				})
			}
		}
	}
	return out
}

func stateOf(s container.ContainerState) deployerv1.ContainerState {
	switch s {
	case container.StateCreated:
		return deployerv1.ContainerState_CONTAINER_STATE_CREATED
	case container.StateRunning:
		return deployerv1.ContainerState_CONTAINER_STATE_RUNNING
	case container.StatePaused:
		return deployerv1.ContainerState_CONTAINER_STATE_PAUSED
	case container.StateRestarting:
		return deployerv1.ContainerState_CONTAINER_STATE_RESTARTING
	case container.StateRemoving:
		return deployerv1.ContainerState_CONTAINER_STATE_REMOVING
	case container.StateExited:
		return deployerv1.ContainerState_CONTAINER_STATE_EXITED
	case container.StateDead:
		return deployerv1.ContainerState_CONTAINER_STATE_DEAD
	}
	return deployerv1.ContainerState_CONTAINER_STATE_UNSPECIFIED
}

// summary is a short human status in the spirit of `docker ps`.
func summary(s *container.State) string {
	switch s.Status {
	case container.StateRunning:
		out := "Up"
		if t, err := time.Parse(time.RFC3339Nano, s.StartedAt); err == nil {
			out += " since " + t.UTC().Format(time.RFC3339)
		}
		if s.Health != nil && s.Health.Status != "" {
			out += " (" + string(s.Health.Status) + ")"
		}
		return out
	case container.StateExited:
		if s.OOMKilled {
			return fmt.Sprintf("Exited (%d), OOMKilled", s.ExitCode)
		}
		return fmt.Sprintf("Exited (%d)", s.ExitCode)
	}
	return string(s.Status)
}

// classify wraps client errors with this package's sentinels.
func classify(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case cerrdefs.IsConflict(err):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case cerrdefs.IsInvalidArgument(err):
		v := validation.New("container")
		v.Add("container", "%v", err)
		return v.Err()
	}
	return err
}
