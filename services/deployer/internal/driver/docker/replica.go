package docker

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// replicaFrom reports a container the way the driver interface sees it.
func replicaFrom(c container.InspectResponse) driver.Replica {
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	r := driver.Replica{
		ID:          strings.TrimPrefix(c.Name, "/"),
		App:         labels[driver.LabelApp],
		Environment: labels[driver.LabelEnvironment],
		Restarts:    c.RestartCount,
		RuntimeID:   c.ID,
		Labels:      cloneLabels(labels),
	}
	r.Revision, _ = strconv.ParseInt(labels[driver.LabelRevision], 10, 64)
	r.State, r.Reason = stateOf(c.State)
	if c.State != nil {
		r.ExitCode = c.State.ExitCode
		if t, err := time.Parse(time.RFC3339Nano, c.State.StartedAt); err == nil && t.Year() > 1 {
			r.StartedAt = t
		}
	}
	if c.NetworkSettings != nil {
		r.Bindings = bindings(labels[LabelPorts], c.NetworkSettings.Ports)
	}
	return r
}

// stateOf maps a Docker state to the driver's, with a sentence on why the
// container is not running when it is not.
func stateOf(s *container.State) (driver.State, string) {
	if s == nil {
		return driver.StateUnknown, "the daemon reports no state"
	}
	switch s.Status {
	case container.StateCreated:
		return driver.StateStarting, "created, not started yet"
	case container.StateRunning:
		return driver.StateRunning, ""
	case container.StateRestarting:
		return driver.StateStarting, "restarting: " + exitReason(s)
	case container.StateExited:
		if s.Error != "" {
			return driver.StateExited, s.Error
		}
		return driver.StateExited, exitReason(s)
	case container.StatePaused:
		return driver.StateUnknown, "paused"
	case container.StateRemoving:
		return driver.StateStopped, "being removed"
	case container.StateDead:
		if s.Error != "" {
			return driver.StateUnknown, "dead: " + s.Error
		}
		return driver.StateUnknown, "dead"
	}
	return driver.StateUnknown, fmt.Sprintf("unknown docker state %q", s.Status)
}

func exitReason(s *container.State) string {
	if s.OOMKilled {
		return fmt.Sprintf("OOMKilled (exit code %d)", s.ExitCode)
	}
	return fmt.Sprintf("exited with code %d", s.ExitCode)
}

// bindings pairs the ports recorded in the LabelPorts label with the
// loopback bindings the daemon reports; ports not bound (container not
// running) are left out.
func bindings(spec string, ports network.PortMap) []driver.Binding {
	if spec == "" {
		return nil
	}
	var out []driver.Binding
	for entry := range strings.SplitSeq(spec, ",") {
		name, portProto, _ := strings.Cut(entry, "=")
		port, err := network.ParsePort(portProto)
		if err != nil {
			continue
		}
		for _, b := range ports[port] {
			if b.HostIP != loopback {
				continue
			}
			hostPort, err := strconv.Atoi(b.HostPort)
			if err != nil || hostPort == 0 {
				continue
			}
			out = append(out, driver.Binding{
				Name:          name,
				ContainerPort: int(port.Num()),
				HostIP:        b.HostIP.String(),
				HostPort:      hostPort,
			})
			break
		}
	}
	return out
}
