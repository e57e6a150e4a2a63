package containers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/containers"
	"github.com/opsuite/opsuite/services/deployer/internal/demoapp"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

func newManager(t *testing.T) *containers.Manager {
	t.Helper()
	m, err := containers.New("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

func TestContainerLifecycle(t *testing.T) {
	demoapp.Docker(t) // skips or fails when no daemon answers
	image := demoapp.Image(t)
	m := newManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := uniqueName("opsuite-ct")
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })

	c, err := m.Create(ctx, &deployerv1.Container{
		Name: name, Image: image,
		Env:    []*deployerv1.EnvVar{{Name: "VERSION", Value: "v7"}, {Name: "PORT", Value: "8080"}, {Name: "BIND", Value: "0.0.0.0"}},
		Ports:  []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
		Labels: map[string]string{"team": "qa"},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetStatus().GetState() != deployerv1.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("state after create+start = %v, want running", c.GetStatus().GetState())
	}
	if c.GetLabels()["team"] != "qa" || c.GetLabels()[containers.LabelManagedBy] != containers.ManagedByValue {
		t.Fatalf("labels = %v", c.GetLabels())
	}
	ports := c.GetStatus().GetPorts()
	if len(ports) != 1 || ports[0].GetName() != "http" || ports[0].GetHostAddress() != "127.0.0.1" || ports[0].GetHostPort() == 0 {
		t.Fatalf("ports = %v, want http bound on 127.0.0.1", ports)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", ports[0].GetHostPort())
	if body := getEventually(t, url); body != "v7" {
		t.Fatalf("GET %s = %q, want v7", url, body)
	}

	// Logs: the start line on stdout, with its time.
	lines := readLogs(t, m, name, containers.LogOptions{Tail: 10})
	if len(lines) == 0 || !strings.Contains(lines[0].GetText(), "demoapp v7 listening") ||
		lines[0].GetStream() != deployerv1.LogStream_LOG_STREAM_STDOUT || lines[0].GetTime() == nil {
		t.Fatalf("logs = %v, want the start line on stdout with a time", lines)
	}

	// Removing a running container needs force.
	if err := m.Remove(ctx, name, false, false); !errors.Is(err, containers.ErrConflict) {
		t.Fatalf("remove running without force: err = %v, want ErrConflict", err)
	}
	c, err = m.Stop(ctx, name, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetStatus().GetState() != deployerv1.ContainerState_CONTAINER_STATE_EXITED || c.GetStatus().GetFinishTime() == nil {
		t.Fatalf("after stop: status = %v, want exited with a finish time", c.GetStatus())
	}
	// The stop line went to stderr.
	stderr := readLogs(t, m, name, containers.LogOptions{Stream: deployerv1.LogStream_LOG_STREAM_STDERR})
	if len(stderr) != 1 || stderr[0].GetText() != "demoapp stopping" {
		t.Fatalf("stderr = %v, want the stop line only", stderr)
	}
	// Listing: only running by default, all with all.
	if list, _, err := m.List(ctx, false, "team=qa", 0, ""); err != nil || containsName(list, name) {
		t.Fatalf("running list = %v, %v; must not hold the stopped %s", names(list), err, name)
	}
	if list, _, err := m.List(ctx, true, "team=qa", 0, ""); err != nil || !containsName(list, name) {
		t.Fatalf("list all = %v, %v; want %s", names(list), err, name)
	}
	if c, err = m.Start(ctx, name); err != nil || c.GetStatus().GetState() != deployerv1.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("restart: %v, %v", c.GetStatus(), err)
	}
	if err := m.Remove(ctx, name, true, true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, name); !errors.Is(err, containers.ErrNotFound) {
		t.Fatalf("get after remove: err = %v, want ErrNotFound", err)
	}
}

func TestFollowStreamsNewLinesUntilTheContainerStops(t *testing.T) {
	demoapp.Docker(t)
	image := demoapp.Image(t)
	m := newManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := uniqueName("opsuite-follow")
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })
	if _, err := m.Create(ctx, &deployerv1.Container{
		Name: name, Image: image, Env: []*deployerv1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "BIND", Value: "0.0.0.0"}},
	}, true); err != nil {
		t.Fatal(err)
	}
	got := make(chan *deployerv1.LogLine, 16)
	done := make(chan error, 1)
	go func() {
		done <- m.Logs(ctx, name, containers.LogOptions{Follow: true}, func(ls []*deployerv1.LogLine) error {
			for _, l := range ls {
				got <- l
			}
			return nil
		})
	}()
	waitLine := func(text string) {
		t.Helper()
		for {
			select {
			case l := <-got:
				if l.GetText() == text || strings.Contains(l.GetText(), text) {
					return
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no line %q while following", text)
			}
		}
	}
	waitLine("listening on")
	if _, err := m.Stop(ctx, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitLine("demoapp stopping")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("follow did not end after the container stopped")
	}
}

func TestReplicasAndForeignContainersCannotBeChanged(t *testing.T) {
	d := demoapp.Docker(t)
	image := demoapp.Image(t)
	m := newManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	replica := uniqueName("opsuite-replica")
	if _, err := d.Start(ctx, driver.Spec{ID: replica, App: "shop", Environment: "prod", Revision: 1, Image: image,
		Env: map[string]string{"PORT": "8080", "BIND": "0.0.0.0"}, Ports: []driver.Port{{Name: "http", ContainerPort: 8080}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background(), replica, time.Second) })
	foreign := uniqueName("foreign")
	if out, err := exec.Command("docker", "create", "--name", foreign, image).CombinedOutput(); err != nil {
		t.Fatalf("docker create: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", foreign).Run() })

	for _, id := range []string{replica, foreign} {
		if _, err := m.Stop(ctx, id, time.Second); !errors.Is(err, containers.ErrNotOwned) {
			t.Errorf("stop %s: err = %v, want ErrNotOwned", id, err)
		}
		if err := m.Remove(ctx, id, true, false); !errors.Is(err, containers.ErrNotOwned) {
			t.Errorf("remove %s: err = %v, want ErrNotOwned", id, err)
		}
		if _, err := m.Start(ctx, id); !errors.Is(err, containers.ErrNotOwned) {
			t.Errorf("start %s: err = %v, want ErrNotOwned", id, err)
		}
	}
	if _, err := m.Stop(ctx, replica, time.Second); err == nil || !strings.Contains(err.Error(), `application "shop"`) {
		t.Errorf("stop replica: err = %v, want it to name the application", err)
	}
	// Reading is allowed: the replica is still running and listed.
	c, err := m.Get(ctx, replica)
	if err != nil || c.GetStatus().GetState() != deployerv1.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("get replica: %v, %v", c.GetStatus(), err)
	}
	list, _, err := m.List(ctx, false, "opsuite.app=shop", 0, "")
	if err != nil || !containsName(list, replica) {
		t.Fatalf("list = %v, %v; want the replica", names(list), err)
	}
	all, _, err := m.List(ctx, true, "", 1000, "")
	if err != nil || containsName(all, foreign) {
		t.Fatalf("list all = %v, %v; must not list foreign containers", names(all), err)
	}
}

func TestCreateNamesTheBadField(t *testing.T) {
	m := newManager(t) // validation happens before the daemon is asked
	cases := []struct {
		name  string
		c     *deployerv1.Container
		field string
	}{
		{"nil", nil, "container"},
		{"no image", &deployerv1.Container{}, "container.image"},
		{"bad image", &deployerv1.Container{Image: "UPPER::case"}, "container.image"},
		{"bad name", &deployerv1.Container{Image: "a", Name: "Not_Valid"}, "container.name"},
		{"output only id", &deployerv1.Container{Image: "a", Id: "abc"}, "container.id"},
		{"relative working dir", &deployerv1.Container{Image: "a", WorkingDir: "srv"}, "container.working_dir"},
		{"bad env", &deployerv1.Container{Image: "a", Env: []*deployerv1.EnvVar{{Name: "1X"}}}, "container.env[0].name"},
		{"reserved label", &deployerv1.Container{Image: "a", Labels: map[string]string{"opsuite.app": "x"}}, "container.labels"},
		{"port range", &deployerv1.Container{Image: "a", Ports: []*deployerv1.Port{{ContainerPort: 70000}}}, "container.ports[0].container_port"},
		{"port twice", &deployerv1.Container{Image: "a", Ports: []*deployerv1.Port{{ContainerPort: 80}, {ContainerPort: 80}}}, "container.ports[1].container_port"},
		{"host port range", &deployerv1.Container{Image: "a", Ports: []*deployerv1.Port{{ContainerPort: 80, HostPort: 70000}}}, "container.ports[0].host_port"},
		{"volume target", &deployerv1.Container{Image: "a", Volumes: []*deployerv1.Volume{{Target: "data", Source: &deployerv1.Volume_NamedVolume{NamedVolume: "v"}}}}, "container.volumes[0].target"},
		{"volume source", &deployerv1.Container{Image: "a", Volumes: []*deployerv1.Volume{{Target: "/data"}}}, "container.volumes[0]"},
		{"host path", &deployerv1.Container{Image: "a", Volumes: []*deployerv1.Volume{{Target: "/d", Source: &deployerv1.Volume_HostPath{HostPath: "rel"}}}}, "container.volumes[0].host_path"},
		{"cpus", &deployerv1.Container{Image: "a", Resources: &deployerv1.Resources{Cpus: -1}}, "container.resources.cpus"},
		{"restart policy", &deployerv1.Container{Image: "a", RestartPolicy: 42}, "container.restart_policy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Create(context.Background(), tc.c, false)
			var verr *validation.Error
			if !errors.As(err, &verr) {
				t.Fatalf("err = %v, want a validation error", err)
			}
			found := false
			for _, f := range verr.Fields {
				found = found || f.Field == tc.field
			}
			if !found {
				t.Fatalf("err = %v, want field %s", err, tc.field)
			}
		})
	}
}

func TestUnreachableDaemonIsUnavailable(t *testing.T) {
	m, err := containers.New("tcp://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Create(ctx, &deployerv1.Container{Image: "busybox"}, true); !errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("create: err = %v, want ErrUnavailable", err)
	}
	if _, _, err := m.List(ctx, true, "", 0, ""); !errors.Is(err, containers.ErrUnavailable) {
		t.Fatalf("list: err = %v, want ErrUnavailable", err)
	}
}

func getEventually(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no answer: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readLogs(t *testing.T, m *containers.Manager, id string, opts containers.LogOptions) []*deployerv1.LogLine {
	t.Helper()
	var out []*deployerv1.LogLine
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := m.Logs(ctx, id, opts, func(ls []*deployerv1.LogLine) error { out = append(out, ls...); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func containsName(list []*deployerv1.Container, name string) bool {
	for _, c := range list {
		if c.GetName() == name {
			return true
		}
	}
	return false
}

func names(list []*deployerv1.Container) []string {
	out := make([]string, len(list))
	for i, c := range list {
		out[i] = c.GetName()
	}
	return out
}
