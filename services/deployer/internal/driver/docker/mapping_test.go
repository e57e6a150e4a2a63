package docker

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

func TestStateOf(t *testing.T) {
	tests := []struct {
		name   string
		state  *container.State
		want   driver.State
		reason string
	}{
		{"none", nil, driver.StateUnknown, "the daemon reports no state"},
		{"created", &container.State{Status: container.StateCreated}, driver.StateStarting, "created, not started yet"},
		{"running", &container.State{Status: container.StateRunning, Running: true}, driver.StateRunning, ""},
		{"restarting", &container.State{Status: container.StateRestarting, ExitCode: 3}, driver.StateStarting, "restarting: exited with code 3"},
		{"exited", &container.State{Status: container.StateExited, ExitCode: 3}, driver.StateExited, "exited with code 3"},
		{"oom", &container.State{Status: container.StateExited, ExitCode: 137, OOMKilled: true}, driver.StateExited, "OOMKilled (exit code 137)"},
		{"restarting after oom", &container.State{Status: container.StateRestarting, ExitCode: 137, OOMKilled: true}, driver.StateStarting, "restarting: OOMKilled (exit code 137)"},
		{"runtime error", &container.State{Status: container.StateExited, ExitCode: 127, Error: "exec: \"/x\": not found"}, driver.StateExited, "exec: \"/x\": not found"},
		{"paused", &container.State{Status: container.StatePaused}, driver.StateUnknown, "paused"},
		{"removing", &container.State{Status: container.StateRemoving}, driver.StateStopped, "being removed"},
		{"dead", &container.State{Status: container.StateDead, Error: "device busy"}, driver.StateUnknown, "dead: device busy"},
		{"new state", &container.State{Status: "hibernating"}, driver.StateUnknown, `unknown docker state "hibernating"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := stateOf(tt.state)
			if got != tt.want || reason != tt.reason {
				t.Errorf("stateOf = %s, %q; want %s, %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestBindings(t *testing.T) {
	any4 := netip.IPv4Unspecified()
	ports := network.PortMap{
		network.MustParsePort("8080/tcp"): {{HostIP: loopback, HostPort: "32768"}},
		network.MustParsePort("9000/udp"): {{HostIP: any4, HostPort: "1"}, {HostIP: loopback, HostPort: "32769"}},
		network.MustParsePort("7000/tcp"): {},
	}
	got := bindings("http=8080/tcp,dns=9000/udp,admin=7000/tcp,bad=x", ports)
	want := []driver.Binding{
		{Name: "http", ContainerPort: 8080, HostIP: "127.0.0.1", HostPort: 32768},
		{Name: "dns", ContainerPort: 9000, HostIP: "127.0.0.1", HostPort: 32769},
	}
	if !slices.Equal(got, want) {
		t.Errorf("bindings = %+v, want %+v", got, want)
	}
	if got := bindings("", ports); got != nil {
		t.Errorf("bindings without the label = %+v", got)
	}
}

func TestCreateOptions(t *testing.T) {
	spec := driver.Spec{
		ID: "shop-production-r3-7f2k9", App: "shop", Environment: "production", Revision: 3,
		Image:   "shop:3",
		Command: []string{"/bin/shop", "serve"}, Args: []string{"--verbose"},
		Env:             map[string]string{"B": "2", "A": "1"},
		Ports:           []driver.Port{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: "udp"}},
		Volumes:         []driver.Volume{{Source: "/srv/shop", Target: "/data", ReadOnly: true}, {Source: "cache", Target: "/cache"}, {Target: "/tmp/scratch"}},
		Labels:          map[string]string{"team": "shop", driver.LabelManagedBy: "someone-else"},
		RestartOnCrash:  true,
		StopGracePeriod: 1500 * time.Millisecond,
	}
	opts, err := createOptions(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, host := opts.Config, opts.HostConfig
	if opts.Name != spec.ID || cfg.Image != "shop:3" {
		t.Errorf("name %q image %q", opts.Name, cfg.Image)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"/bin/shop", "serve"}) || !slices.Equal(cfg.Cmd, []string{"--verbose"}) {
		t.Errorf("entrypoint %q cmd %q", cfg.Entrypoint, cfg.Cmd)
	}
	if !slices.Equal(cfg.Env, []string{"A=1", "B=2"}) {
		t.Errorf("env %q", cfg.Env)
	}
	if *cfg.StopTimeout != 2 {
		t.Errorf("stop timeout %d, want 2 (rounded up)", *cfg.StopTimeout)
	}
	if host.RestartPolicy.Name != container.RestartPolicyUnlessStopped {
		t.Errorf("restart policy %q", host.RestartPolicy.Name)
	}
	wantLabels := map[string]string{
		driver.LabelManagedBy: driver.ManagedByValue, driver.LabelApp: "shop", driver.LabelEnvironment: "production",
		driver.LabelRevision: "3", driver.LabelReplica: spec.ID, "team": "shop", LabelPorts: "http=8080/tcp,dns=53/udp",
	}
	for k, v := range wantLabels {
		if cfg.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Labels[k], v)
		}
	}
	for _, p := range []string{"8080/tcp", "53/udp"} {
		port := network.MustParsePort(p)
		if _, ok := cfg.ExposedPorts[port]; !ok {
			t.Errorf("%s not exposed", p)
		}
		if b := host.PortBindings[port]; len(b) != 1 || b[0].HostIP != loopback || b[0].HostPort != "" {
			t.Errorf("%s bound as %+v, want 127.0.0.1 with a port the daemon picks", p, b)
		}
	}
	kinds := make([]string, len(host.Mounts))
	for i, m := range host.Mounts {
		kinds[i] = string(m.Type) + ":" + m.Source + ":" + m.Target
	}
	if want := []string{"bind:/srv/shop:/data", "volume:cache:/cache", "volume::/tmp/scratch"}; !slices.Equal(kinds, want) {
		t.Errorf("mounts %q, want %q", kinds, want)
	}
	if !host.Mounts[0].ReadOnly || host.Mounts[1].ReadOnly {
		t.Errorf("read-only flags wrong: %+v", host.Mounts)
	}

	minimal, err := createOptions(driver.Spec{ID: "a", Image: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if minimal.Config.Entrypoint != nil || minimal.Config.Cmd != nil || *minimal.Config.StopTimeout != 10 ||
		minimal.HostConfig.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("minimal spec: %+v %+v", minimal.Config, minimal.HostConfig)
	}
}

func TestValidateNamesEveryField(t *testing.T) {
	err := validate(driver.Spec{
		ID:              "-bad",
		Command:         []string{""},
		Env:             map[string]string{"": "x"},
		WorkingDir:      "rel",
		Ports:           []driver.Port{{Name: "a,b", ContainerPort: 0, Protocol: "icmp"}},
		Volumes:         []driver.Volume{{Source: "../x", Target: "y"}},
		StopGracePeriod: -1,
	})
	if !errors.Is(err, driver.ErrInvalidSpec) {
		t.Fatalf("validate = %v, want ErrInvalidSpec", err)
	}
	for _, field := range []string{"ID", "Image", "Command[0]", "Env", "WorkingDir", "Ports[0].Name", "Ports[0].ContainerPort",
		"Ports[0].Protocol", "Volumes[0].Target", "Volumes[0].Source", "StopGracePeriod"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"whole lines", []string{"a\n", "b\n"}, []string{"a\n", "b\n"}},
		{"several in one write", []string{"a\nb\nc\n"}, []string{"a\n", "b\n", "c\n"}},
		{"split across writes", []string{"he", "llo\nwor", "ld\n"}, []string{"hello\n", "world\n"}},
		{"partial last line", []string{"a\nb"}, []string{"a\n", "b\n"}},
		{"empty lines", []string{"\n\n"}, []string{"\n", "\n"}},
		{"overlong line", []string{strings.Repeat("x", maxLine+1)}, []string{strings.Repeat("x", maxLine+1) + "\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			lw := &lineWriter{w: &rec}
			for _, w := range tt.writes {
				if n, err := lw.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := lw.Flush(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rec.writes, tt.want) {
				t.Errorf("writes = %q, want %q", rec.writes, tt.want)
			}
		})
	}
}

type recorder struct{ writes []string }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(bytes.Clone(p)))
	return len(p), nil
}
