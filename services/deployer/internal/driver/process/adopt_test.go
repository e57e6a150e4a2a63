//go:build linux

package process_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
)

func killGroup(tb testing.TB, r driver.Replica) {
	tb.Helper()
	pid := pidOf(tb, r)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	eventually(tb, 5*time.Second, r.ID+" is dead", func() bool { return !running(pid) })
}

func inspect(tb testing.TB, d *process.Driver, id string) driver.Replica {
	tb.Helper()
	r, err := d.Inspect(context.Background(), id)
	if err != nil {
		tb.Fatalf("inspect %s: %v", id, err)
	}
	return r
}

// stopAll stops every replica of d and checks their processes are gone.
func stopAll(tb testing.TB, d *process.Driver) {
	tb.Helper()
	rs, err := d.List(context.Background(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range rs {
		if err := d.Stop(context.Background(), r.ID, 5*time.Second); err != nil {
			tb.Errorf("stop %s: %v", r.ID, err)
		}
		if pid, err := strconv.Atoi(r.RuntimeID); err == nil && running(pid) {
			tb.Errorf("%s: pid %d still runs", r.ID, pid)
		}
	}
	if rs, err := d.List(context.Background(), nil); err != nil || len(rs) != 0 {
		tb.Errorf("after stopping all: %d replicas, %v", len(rs), err)
	}
}

// A driver closed and replaced on the same StateDir (a deployer restart in
// the same process) finds its replicas running, notices the one killed
// meanwhile, restarts the one that asked for it and keeps supervising.
func TestAdoptAfterClose(t *testing.T) {
	t.Parallel()
	dir := newStateDir(t)
	a := newDriver(t, dir)
	keep := startApp(t, a, appSpec("keep", nil))
	crashySpec := appSpec("crashy", map[string]string{"CRASH_AFTER": "1s"})
	crashySpec.RestartOnCrash = true
	startApp(t, a, crashySpec)
	killed := startApp(t, a, appSpec("killed", nil))
	reviveSpec := appSpec("revive", nil)
	reviveSpec.RestartOnCrash = true
	revive := startApp(t, a, reviveSpec)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	waitHTTP(t, keep.Bindings[0]) // Close left it running
	killGroup(t, killed)
	killGroup(t, revive)

	b := newDriver(t, dir)
	rs, err := b.List(context.Background(), map[string]string{driver.LabelApp: "shop"})
	if err != nil || len(rs) != 4 {
		t.Fatalf("adopted %d replicas, %v; want 4", len(rs), err)
	}
	if got := inspect(t, b, "keep"); got.State != driver.StateRunning || got.RuntimeID != keep.RuntimeID || got.Bindings[0] != keep.Bindings[0] {
		t.Errorf("keep after adoption = %+v, want running as pid %s", got, keep.RuntimeID)
	}
	// Still a child of this test process, so its status is known.
	if got := inspect(t, b, "killed"); got.State != driver.StateExited || got.ExitCode != 137 {
		t.Errorf("killed after adoption = %+v, want exited with 137", got)
	}
	got := waitReplica(t, b, "revive", "restarted", func(r driver.Replica) bool {
		return r.State == driver.StateRunning && r.Restarts == 1
	})
	if got.RuntimeID == revive.RuntimeID {
		t.Errorf("revive still has pid %s", got.RuntimeID)
	}
	waitHTTP(t, got.Bindings[0])
	waitReplica(t, b, "crashy", "restarted by the new driver", func(r driver.Replica) bool {
		return r.Restarts >= 1 && r.ExitCode == 3
	})
	waitLogged(t, b, "keep", "stderr works")
	stopAll(t, b)
}

// The deployer is SIGKILLed, one of its Stops half done: its replicas keep
// running and writing output; a new deployer adopts them, tells the one
// killed meanwhile (no longer its child: exit status unknown), restarts the
// one that asked for it and finishes the interrupted Stop.
func TestAdoptAfterDeployerKilled(t *testing.T) {
	t.Parallel()
	dir := newStateDir(t)
	revive := appSpec("revive", nil)
	revive.RestartOnCrash = true
	stopping := appSpec("stopping", map[string]string{"IGNORE_TERM": "1"})
	stopping.StopGracePeriod = 300 * time.Millisecond
	specs, err := json.Marshal([]driver.Spec{appSpec("keep", nil), appSpec("dead", nil), revive, stopping})
	if err != nil {
		t.Fatal(err)
	}
	deployer := exec.Command(os.Args[0])
	deployer.Env = append(os.Environ(), fakeDeployerEnv+"="+dir, fakeSpecsEnv+"="+string(specs), fakeStopEnv+"=stopping")
	var stderr bytes.Buffer
	deployer.Stderr = &stderr
	stdout, err := deployer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := deployer.Start(); err != nil {
		t.Fatal(err)
	}
	var started []driver.Replica
	if err := json.NewDecoder(stdout).Decode(&started); err != nil {
		_ = deployer.Process.Kill()
		_ = deployer.Wait()
		t.Fatalf("fake deployer: %v: %s", err, stderr.String())
	}
	eventually(t, 5*time.Second, "the fake deployer is stopping a replica", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "stopping", "record.json"))
		return bytes.Contains(b, []byte(`"stopping": true`))
	})
	if err := deployer.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = deployer.Wait()
	keep, dead, revived, stopped := started[0], started[1], started[2], started[3]
	if !running(pidOf(t, stopped)) {
		t.Fatal("the replica being stopped ignores SIGTERM, yet it is gone")
	}

	waitHTTP(t, keep.Bindings[0])
	say(t, keep, "written while no deployer ran", "")
	killGroup(t, dead)
	killGroup(t, revived)

	d := newDriver(t, dir)
	if got := inspect(t, d, "keep"); got.State != driver.StateRunning || got.RuntimeID != keep.RuntimeID {
		t.Errorf("keep after adoption = %+v, want running as pid %s", got, keep.RuntimeID)
	}
	if got := inspect(t, d, "dead"); got.State != driver.StateExited || got.ExitCode != -1 || !strings.Contains(got.Reason, "unknown") {
		t.Errorf("dead after adoption = %+v, want exited, status unknown", got)
	}
	got := waitReplica(t, d, "revive", "restarted", func(r driver.Replica) bool {
		return r.State == driver.StateRunning && r.Restarts == 1
	})
	if got.RuntimeID == revived.RuntimeID {
		t.Errorf("revive still has pid %s", got.RuntimeID)
	}
	waitLogged(t, d, "keep", "written while no deployer ran")
	eventually(t, 5*time.Second, "the interrupted stop finishes", func() bool {
		_, err := d.Inspect(context.Background(), "stopping")
		return isNotFound(err) && !running(pidOf(t, stopped))
	})
	stopAll(t, d)
}

// A deployer that died between starting a process and recording its pid
// left a record in the launching phase: the process is found by its
// marker; without a process the replica is reported exited.
func TestAdoptInterruptedStart(t *testing.T) {
	t.Parallel()
	dir := newStateDir(t)
	port := freePort(t)
	found := appSpec("found", nil)
	found.Ports = nil
	app := exec.Command(testApp)
	app.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "OPSUITE_REPLICA_ID=found")
	app.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	pid := app.Process.Pid
	_ = app.Process.Release() // the driver reaps it
	binding := driver.Binding{HostIP: "127.0.0.1", HostPort: port}
	waitHTTP(t, binding)
	if err := process.WriteInterruptedStart(dir, found); err != nil {
		t.Fatal(err)
	}
	if err := process.WriteInterruptedStart(dir, appSpec("never-ran", nil)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "no-record"), 0o700); err != nil {
		t.Fatal(err)
	}

	d := newDriver(t, dir)
	if got := inspect(t, d, "found"); got.State != driver.StateRunning || got.RuntimeID != strconv.Itoa(pid) {
		t.Errorf("found = %+v, want running as pid %d", got, pid)
	}
	if got := inspect(t, d, "never-ran"); got.State != driver.StateExited {
		t.Errorf("never-ran = %+v, want exited", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "no-record")); !os.IsNotExist(err) {
		t.Errorf("a state directory without a record was kept: %v", err)
	}
	stopAll(t, d)
	if running(pid) {
		t.Errorf("pid %d still runs", pid)
	}
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
