package docker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/docker"
)

func TestNewUnavailable(t *testing.T) {
	t.Parallel()
	for _, host := range []string{
		"unix://" + filepath.Join(t.TempDir(), "no-daemon.sock"),
		"tcp://" + closedLoopbackAddr(t),
	} {
		t.Run(host, func(t *testing.T) {
			_, err := docker.New(context.Background(), docker.Config{Host: host, PingTimeout: 2 * time.Second}, nil)
			if !errors.Is(err, driver.ErrUnavailable) {
				t.Fatalf("New(%s) = %v, want ErrUnavailable", host, err)
			}
			if !strings.Contains(err.Error(), "does not answer") {
				t.Errorf("error %q does not say why", err)
			}
			t.Logf("New(%s): %v", host, err)
		})
	}
}

func TestStartServes(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	if d.Name() != "docker" {
		t.Errorf("Name() = %q", d.Name())
	}
	ctx := context.Background()

	bindDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(bindDir, "hello.txt"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	volume := "opsuite-test-" + suite.run + "-data"
	t.Cleanup(func() {
		if _, err := suite.cli.VolumeRemove(context.Background(), volume, client.VolumeRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove volume %s: %v", volume, err)
		}
	})

	spec := testSpec("serves")
	spec.Revision = 7
	spec.Command = []string{"/demo"}
	spec.Args = []string{"--unused-flag"}
	spec.Env = map[string]string{"GREETING": "hello world", "PORT": "9090"}
	spec.WorkingDir = "/srv/app"
	spec.Ports = []driver.Port{{Name: "http", ContainerPort: 9090}, {Name: "spare", ContainerPort: 7000, Protocol: "udp"}}
	spec.Volumes = []driver.Volume{
		{Source: bindDir, Target: "/host", ReadOnly: true},
		{Source: volume, Target: "/data"},
	}
	spec.Labels["team"] = "payments"
	spec.Labels[driver.LabelApp] = "not-the-app" // the driver's labels win

	begin := time.Now()
	r := start(t, d, spec)
	t.Logf("create+start+inspect took %s", time.Since(begin))

	if r.ID != spec.ID || r.App != spec.App || r.Environment != "test" || r.Revision != 7 {
		t.Errorf("replica identity = %s/%s/%s/r%d, want %s/%s/test/r7", r.ID, r.App, r.Environment, r.Revision, spec.ID, spec.App)
	}
	if r.State != driver.StateRunning || r.Reason != "" {
		t.Errorf("state = %s (%q), want running", r.State, r.Reason)
	}
	if r.RuntimeID == "" || r.StartedAt.IsZero() || time.Since(r.StartedAt) > time.Minute {
		t.Errorf("RuntimeID %q, StartedAt %s", r.RuntimeID, r.StartedAt)
	}
	wantLabels := map[string]string{
		driver.LabelManagedBy:   driver.ManagedByValue,
		driver.LabelApp:         spec.App,
		driver.LabelEnvironment: "test",
		driver.LabelRevision:    "7",
		driver.LabelReplica:     spec.ID,
		"team":                  "payments",
	}
	for k, v := range wantLabels {
		if r.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, r.Labels[k], v)
		}
	}
	if len(r.Bindings) != 2 {
		t.Fatalf("bindings = %+v, want http and spare", r.Bindings)
	}
	for _, b := range r.Bindings {
		if b.HostIP != "127.0.0.1" || b.HostPort == 0 {
			t.Errorf("binding %+v is not on 127.0.0.1 with a port", b)
		}
	}
	web := binding(t, r, "http")
	if web.ContainerPort != 9090 {
		t.Errorf("http binding %+v, want container port 9090", web)
	}

	checks := []struct{ path, want string }{
		{"/healthz", "ok"},
		{"/env?name=GREETING", "hello world"},
		{"/cwd", "/srv/app"},
		{"/file?path=/host/hello.txt", "from the host"},
	}
	for _, c := range checks {
		if got := get(t, web, c.path); got != c.want {
			t.Errorf("GET %s = %q, want %q", c.path, got, c.want)
		}
	}

	// What the daemon was asked for, seen behind the driver's back.
	ins, err := suite.cli.ContainerInspect(ctx, r.RuntimeID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := ins.Container
	if c.Path != "/demo" || !slices.Equal(c.Args, []string{"--unused-flag"}) {
		t.Errorf("process = %s %q, want /demo [--unused-flag]", c.Path, c.Args)
	}
	if p := c.HostConfig.RestartPolicy.Name; p != container.RestartPolicyDisabled {
		t.Errorf("restart policy = %q, want no", p)
	}
	if c.Config.StopTimeout == nil || *c.Config.StopTimeout != 5 {
		t.Errorf("stop timeout = %v, want 5", c.Config.StopTimeout)
	}
	mounts := map[string]container.MountPoint{}
	for _, m := range c.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts["/host"]; m.Type != "bind" || m.RW {
		t.Errorf("/host mount = %+v, want a read-only bind", m)
	}
	if m := mounts["/data"]; m.Type != "volume" || m.Name != volume || !m.RW {
		t.Errorf("/data mount = %+v, want the writable volume %s", m, volume)
	}

	got, err := d.Inspect(ctx, spec.ID)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if got.RuntimeID != r.RuntimeID || got.State != driver.StateRunning || !slices.Equal(got.Bindings, r.Bindings) {
		t.Errorf("Inspect = %+v, want what Start reported %+v", got, r)
	}

	if err := d.Stop(ctx, spec.ID, 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, spec.ID)
	// A named volume outlives the replica; anonymous ones do not.
	if _, err := suite.cli.VolumeInspect(ctx, volume, client.VolumeInspectOptions{}); err != nil {
		t.Errorf("named volume %s: %v", volume, err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		env            map[string]string
		grace          time.Duration
		minDur, maxDur time.Duration
	}{
		// The demo exits on SIGTERM at once: no need to wait for the grace.
		{name: "graceful", grace: 10 * time.Second, maxDur: 3 * time.Second},
		// SIGTERM ignored: SIGKILL after the grace period.
		{name: "forced", env: map[string]string{"IGNORE_SIGTERM": "1"}, grace: time.Second, minDur: time.Second, maxDur: 5 * time.Second},
		// Rounded up to whole seconds, as the Engine API counts.
		{name: "forced-rounded", env: map[string]string{"IGNORE_SIGTERM": "1"}, grace: 300 * time.Millisecond, minDur: time.Second, maxDur: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDriver(t)
			ctx := context.Background()
			spec := testSpec("stop-" + tt.name)
			spec.Env = tt.env
			r := start(t, d, spec)
			get(t, binding(t, r, "http"), "/healthz") // serving, so its signal handling is set up

			begin := time.Now()
			if err := d.Stop(ctx, spec.ID, tt.grace); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			took := time.Since(begin)
			t.Logf("Stop with grace %s took %s", tt.grace, took)
			if took < tt.minDur || took > tt.maxDur {
				t.Errorf("Stop took %s, want %s..%s", took, tt.minDur, tt.maxDur)
			}
			assertGone(t, spec.ID)
			if _, err := d.Inspect(ctx, spec.ID); !errors.Is(err, driver.ErrNotFound) {
				t.Errorf("Inspect after Stop = %v, want ErrNotFound", err)
			}
			if err := d.Stop(ctx, spec.ID, tt.grace); err != nil {
				t.Errorf("second Stop = %v, want nil", err)
			}
		})
	}
}

func TestRestartOnCrash(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	ctx := context.Background()
	spec := testSpec("crashloop")
	spec.Env = map[string]string{"CRASH_AFTER": "300ms", "CRASH_CODE": "4"}
	spec.RestartOnCrash = true
	r := start(t, d, spec)
	first := binding(t, r, "http")

	var last driver.Replica
	var states []string
	eventually(t, 20*time.Second, "two restarts", func() (bool, string) {
		var err error
		last, err = d.Inspect(ctx, spec.ID)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		s := fmt.Sprintf("%s/%d/%q", last.State, last.Restarts, last.Reason)
		if len(states) == 0 || states[len(states)-1] != s {
			states = append(states, s)
		}
		return last.Restarts >= 2, s
	})
	t.Logf("states seen: %s", strings.Join(states, " → "))
	for _, s := range states {
		if strings.HasPrefix(s, string(driver.StateStarting)) && !strings.Contains(s, "exited with code 4") {
			t.Errorf("state %s while restarting does not give the exit code", s)
		}
	}
	ins, err := suite.cli.ContainerInspect(ctx, r.RuntimeID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := ins.Container.HostConfig.RestartPolicy.Name; p != container.RestartPolicyUnlessStopped {
		t.Errorf("restart policy = %q, want unless-stopped", p)
	}
	eventually(t, 5*time.Second, "running again", func() (bool, string) {
		last, err = d.Inspect(ctx, spec.ID)
		return err == nil && last.State == driver.StateRunning && len(last.Bindings) == 1, fmt.Sprintf("%+v %v", last, err)
	})
	if last.ExitCode != 4 {
		t.Errorf("running again after %d restarts: exit code %d, want the last crash's 4", last.Restarts, last.ExitCode)
	}
	if b := binding(t, last, "http"); b.HostPort != first.HostPort {
		// The daemon picks a new random port on each restart: whoever
		// routes to the replica must re-read its bindings.
		t.Logf("host port changed across restarts: %d → %d", first.HostPort, b.HostPort)
	}
	if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, spec.ID)
}

func TestExitWithoutRestart(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	ctx := context.Background()
	spec := testSpec("exits")
	spec.Env = map[string]string{"CRASH_AFTER": "200ms"}
	start(t, d, spec)

	var r driver.Replica
	eventually(t, 10*time.Second, "exited", func() (bool, string) {
		var err error
		r, err = d.Inspect(ctx, spec.ID)
		return err == nil && r.State == driver.StateExited, fmt.Sprintf("%+v %v", r, err)
	})
	if r.ExitCode != 3 || r.Reason != "exited with code 3" || r.Restarts != 0 || len(r.Bindings) != 0 {
		t.Errorf("exited replica = exit %d, reason %q, %d restarts, bindings %+v; want 3, \"exited with code 3\", 0, none",
			r.ExitCode, r.Reason, r.Restarts, r.Bindings)
	}
	if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatalf("Stop an exited replica: %v", err)
	}
	assertGone(t, spec.ID)
}

func TestStartFailures(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	tests := []struct {
		name   string
		modify func(*driver.Spec)
		want   error
		says   string
	}{
		{"missing image", func(s *driver.Spec) { s.Image = "opsuite-test/missing:" + suite.run }, driver.ErrInvalidSpec, "opsuite-test/missing:" + suite.run},
		{"bad image name", func(s *driver.Spec) { s.Image = "Shop:1" }, driver.ErrInvalidSpec, `Image: "Shop:1"`},
		{"no image", func(s *driver.Spec) { s.Image = "" }, driver.ErrInvalidSpec, "Image"},
		{"bad id", func(s *driver.Spec) { s.ID = "Bad_ID" }, driver.ErrInvalidSpec, "ID"},
		{"port out of range", func(s *driver.Spec) { s.Ports[0].ContainerPort = 70000 }, driver.ErrInvalidSpec, "Ports[0].ContainerPort"},
		{"bad protocol", func(s *driver.Spec) { s.Ports[0].Protocol = "sctp" }, driver.ErrInvalidSpec, "Ports[0].Protocol"},
		{"port twice", func(s *driver.Spec) {
			s.Ports = append(s.Ports, driver.Port{Name: "again", ContainerPort: 8080})
		}, driver.ErrInvalidSpec, "Ports[1].ContainerPort"},
		{"relative volume target", func(s *driver.Spec) { s.Volumes = []driver.Volume{{Source: "v", Target: "data"}} }, driver.ErrInvalidSpec, "Volumes[0].Target"},
		{"relative volume source", func(s *driver.Spec) { s.Volumes = []driver.Volume{{Source: "./data", Target: "/data"}} }, driver.ErrInvalidSpec, "Volumes[0].Source"},
		{"missing bind source", func(s *driver.Spec) {
			s.Volumes = []driver.Volume{{Source: "/nonexistent/opsuite-" + suite.run, Target: "/data"}}
		}, driver.ErrInvalidSpec, "/nonexistent/opsuite-"},
		{"bad env name", func(s *driver.Spec) { s.Env = map[string]string{"A=B": "c"} }, driver.ErrInvalidSpec, "Env"},
		// Created, then the runtime cannot exec it: removed again.
		{"missing program", func(s *driver.Spec) { s.Command = []string{"/no-such-program"} }, driver.ErrInvalidSpec, "/no-such-program"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := testSpec(fmt.Sprintf("fail%d", i))
			tt.modify(&spec)
			removeAfter(t, spec.ID)
			_, err := d.Start(context.Background(), spec)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Start = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not name %q", err, tt.says)
			}
			t.Logf("Start: %v", err)
			if spec.ID != "Bad_ID" {
				assertGone(t, spec.ID)
			}
		})
	}
}

func TestStartNameTaken(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	spec := testSpec("taken")
	r := start(t, d, spec)
	_, err := d.Start(context.Background(), spec)
	if !errors.Is(err, driver.ErrInvalidSpec) {
		t.Fatalf("second Start of %s = %v, want ErrInvalidSpec", spec.ID, err)
	}
	// The first replica is untouched.
	got, err := d.Inspect(context.Background(), spec.ID)
	if err != nil || got.RuntimeID != r.RuntimeID || got.State != driver.StateRunning {
		t.Errorf("after the failed Start, Inspect = %+v, %v; want the first replica running", got, err)
	}
}

// TestStartCancelled cancels Start at different moments; whenever it fails,
// no container may be left behind.
func TestStartCancelled(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	for i, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond} {
		spec := testSpec(fmt.Sprintf("cancel%d", i))
		removeAfter(t, spec.ID)
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(after, cancel)
		r, err := d.Start(ctx, spec)
		timer.Stop()
		cancel()
		if err == nil {
			t.Logf("cancel after %s: started anyway (%s)", after, r.State)
			if err := d.Stop(context.Background(), spec.ID, time.Second); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancel after %s: Start = %v, want context.Canceled", after, err)
		}
		t.Logf("cancel after %s: %v", after, err)
		assertGone(t, spec.ID)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	ctx := context.Background()

	app := testSpec("list").App
	var specs []driver.Spec
	for i, rev := range []int64{1, 2, 2} {
		s := testSpec(fmt.Sprintf("list%d", i))
		s.App, s.Revision = app, rev
		specs = append(specs, s)
	}
	other := testSpec("list-other")
	specs = append(specs, other)
	for _, s := range specs {
		start(t, d, s)
	}
	unmanaged := createUnmanaged(t, "list-unmanaged", map[string]string{driver.LabelApp: app})

	ids := func(rs []driver.Replica) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	tests := []struct {
		match map[string]string
		want  []string
	}{
		{map[string]string{driver.LabelApp: app}, []string{specs[0].ID, specs[1].ID, specs[2].ID}},
		{map[string]string{driver.LabelApp: app, driver.LabelRevision: "2"}, []string{specs[1].ID, specs[2].ID}},
		{map[string]string{driver.LabelApp: other.App, driver.LabelEnvironment: "test"}, []string{other.ID}},
		{map[string]string{driver.LabelApp: app, driver.LabelEnvironment: "production"}, nil},
		{map[string]string{labelRun: suite.run, driver.LabelReplica: specs[1].ID}, []string{specs[1].ID}},
	}
	for _, tt := range tests {
		got, err := d.List(ctx, tt.match)
		if err != nil {
			t.Fatalf("List(%v): %v", tt.match, err)
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("List(%v) = %v, want %v", tt.match, ids(got), tt.want)
		}
		for _, r := range got {
			if r.State != driver.StateRunning || len(r.Bindings) != 1 {
				t.Errorf("listed %s: %s with bindings %+v", r.ID, r.State, r.Bindings)
			}
		}
	}
	all, err := d.List(ctx, nil)
	if err != nil {
		t.Fatalf("List(nil): %v", err)
	}
	for _, s := range specs {
		if !slices.Contains(ids(all), s.ID) {
			t.Errorf("List(nil) lacks %s", s.ID)
		}
	}
	if slices.Contains(ids(all), unmanaged) {
		t.Errorf("List(nil) reports the unmanaged container %s", unmanaged)
	}
}

// createUnmanaged creates (without starting) a container from the demo
// image that the deployer does not manage, removed when the test ends.
func createUnmanaged(tb testing.TB, name string, labels map[string]string) string {
	tb.Helper()
	id := "t" + suite.run + "-" + name
	l := map[string]string{labelRun: suite.run}
	for k, v := range labels {
		l[k] = v
	}
	removeAfter(tb, id)
	_, err := suite.cli.ContainerCreate(context.Background(), client.ContainerCreateOptions{
		Name:   id,
		Config: &container.Config{Image: suite.image, Labels: l},
	})
	if err != nil {
		tb.Fatalf("create unmanaged container: %v", err)
	}
	return id
}

func TestUnknownAndUnmanaged(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	ctx := context.Background()
	unmanaged := createUnmanaged(t, "unmanaged", nil)
	ins, err := suite.cli.ContainerInspect(ctx, unmanaged, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t" + suite.run + "-nobody", unmanaged, ins.Container.ID, ins.Container.ID[:12], ""} {
		if _, err := d.Inspect(ctx, id); !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("Inspect(%q) = %v, want ErrNotFound", id, err)
		}
		if err := d.Logs(ctx, id, driver.LogOptions{}, &lines{}); !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("Logs(%q) = %v, want ErrNotFound", id, err)
		}
		if err := d.Stop(ctx, id, time.Second); err != nil {
			t.Errorf("Stop(%q) = %v, want nil", id, err)
		}
	}
	if _, err := suite.cli.ContainerInspect(ctx, unmanaged, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("Stop touched the unmanaged container: %v", err)
	}
}

func TestParallelStarts(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	ctx := context.Background()
	const n = 5
	app := testSpec("par").App
	specs := make([]driver.Spec, n)
	for i := range specs {
		specs[i] = testSpec(fmt.Sprintf("par%d", i))
		specs[i].App = app
		removeAfter(t, specs[i].ID)
	}

	replicas := make([]driver.Replica, n)
	took := make([]time.Duration, n)
	errs := make([]error, n)
	begin := time.Now()
	var wg sync.WaitGroup
	for i := range specs {
		wg.Go(func() {
			t0 := time.Now()
			replicas[i], errs[i] = d.Start(ctx, specs[i])
			took[i] = time.Since(t0)
		})
	}
	wg.Wait()
	total := time.Since(begin)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("parallel Start: %v", err)
	}
	slices.Sort(took)
	t.Logf("%d parallel starts: %s in all; each min %s, median %s, max %s", n, total, took[0], took[n/2], took[n-1])

	ports := map[int]bool{}
	for _, r := range replicas {
		b := binding(t, r, "http")
		if ports[b.HostPort] {
			t.Errorf("host port %d bound twice", b.HostPort)
		}
		ports[b.HostPort] = true
		if got := get(t, b, "/healthz"); got != "ok" {
			t.Errorf("%s /healthz = %q", r.ID, got)
		}
	}
	listed, err := d.List(ctx, map[string]string{driver.LabelApp: app})
	if err != nil || len(listed) != n {
		t.Fatalf("List = %d replicas, %v; want %d", len(listed), err, n)
	}

	for i := range specs {
		wg.Go(func() { errs[i] = d.Stop(ctx, specs[i].ID, time.Second) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("parallel Stop: %v", err)
	}
	for _, s := range specs {
		assertGone(t, s.ID)
	}
}

// TestStopConcurrent stops one replica from several callers at once, as a
// rollback racing a scale-down would: every Stop succeeds.
func TestStopConcurrent(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	spec := testSpec("stop-race")
	start(t, d, spec)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = d.Stop(context.Background(), spec.ID, time.Second) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("concurrent Stop: %v", err)
	}
	assertGone(t, spec.ID)
}
