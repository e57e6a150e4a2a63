package rollout_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/analysis"
	"github.com/opsuite/opsuite/services/deployer/internal/demoapp"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/process"
	"github.com/opsuite/opsuite/services/deployer/internal/healthgate"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
	"github.com/opsuite/opsuite/services/deployer/internal/router"
	"github.com/opsuite/opsuite/services/healthchecker/checkertest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

var demoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rollout-demo-")
	if err != nil {
		panic(err)
	}
	if demoBin, err = demoapp.Build(dir, false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// world is the real pieces a rollout runs against: the process driver, a
// traffic router on loopback, and the health-checker service.
type world struct {
	dir    string
	drv    *process.Driver
	router *router.Router
	url    string
	runner *rollout.Runner
	exec   *rollout.Executor
	saved  atomic.Pointer[deployerv1.Rollout]
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{dir: t.TempDir()}
	var err error
	w.drv, err = process.New(process.Config{StateDir: w.dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.router, err = router.New(router.Config{App: "shop", DrainTimeout: 5 * time.Second}, router.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.url = "http://" + lis.Addr().String() + "/"
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = w.router.Serve(ctx, lis) }()

	hc := checkertest.Start(t)
	n := 0
	var mu sync.Mutex
	w.exec = &rollout.Executor{
		Driver: w.drv, Traffic: w.router, Health: healthgate.New(hc), DrainTimeout: 5 * time.Second,
		NewID: func(app, env string, rev int64) string {
			mu.Lock()
			defer mu.Unlock()
			n++
			return fmt.Sprintf("%s-%s-r%d-%d", app, env, rev, n)
		},
	}
	w.runner = &rollout.Runner{
		Exec: w.exec,
		// Save must not keep r: the runner goes on changing it.
		Save: func(_ context.Context, r *deployerv1.Rollout) error { w.saved.Store(proto.CloneOf(r)); return nil },
	}
	t.Cleanup(func() {
		reps, _ := w.drv.List(context.Background(), nil)
		for _, r := range reps {
			_ = w.drv.Stop(context.Background(), r.ID, time.Second)
		}
		_ = w.drv.Close()
		cancel()
		<-served
	})
	return w
}

// spec is the demo app at a version, 3 replicas, checked on /healthz.
func spec(version string, strategy *deployerv1.Strategy, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec {
	return &deployerv1.ApplicationSpec{
		Workload: &deployerv1.ApplicationSpec_Process{Process: &deployerv1.ProcessCommand{Argv: []string{demoBin}}},
		Env:      append([]*deployerv1.EnvVar{{Name: "VERSION", Value: version}}, env...),
		Ports:    []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
		Replicas: 3,
		HealthCheck: &deployerv1.HealthCheck{
			Probe:            &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz", Port: 8080}},
			Interval:         durationpb.New(100 * time.Millisecond),
			FailureThreshold: 2,
		},
		StopGracePeriod:  durationpb.New(5 * time.Second),
		ProgressDeadline: durationpb.New(20 * time.Second),
		RollbackPolicy:   &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)},
		Strategy:         strategy,
	}
}

func (w *world) deploy(t testing.TB, id string, from, to rollout.Revision, signals <-chan rollout.Signal) *deployerv1.Rollout {
	t.Helper()
	r := &deployerv1.Rollout{Id: id, Application: "shop", Environment: "prod", Strategy: to.Spec.GetStrategy(), EffectiveSpec: to.Spec}
	current := int32(0)
	if from.Number != 0 {
		current = from.Spec.GetReplicas()
	}
	rollout.Prepare(r, current, true, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.runner.Run(ctx, r, to, from, signals); err != nil {
		t.Fatalf("rollout %s: %v", id, err)
	}
	return r
}

// load sends requests through the router until stopped and counts failures.
type load struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	seen     map[string]int
	lastErr  atomic.Value
}

func startLoad(t *testing.T, url string, clients int) *load {
	l := &load{stop: make(chan struct{}), seen: map[string]int{}}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for n := 0; n < 20000; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err != nil {
					l.fail.Add(1)
					l.lastErr.Store(err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.fail.Add(1)
					l.lastErr.Store(fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body))
					continue
				}
				l.ok.Add(1)
				l.mu.Lock()
				l.seen[string(body)]++
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("load: %d ok, %d failed, versions seen %v", l.ok.Load(), l.fail.Load(), l.seen)
	if l.fail.Load() != 0 {
		t.Errorf("%d requests failed (last: %v)", l.fail.Load(), l.lastErr.Load())
	}
	if l.ok.Load() == 0 {
		t.Error("no request succeeded")
	}
}

func (w *world) versions(t *testing.T) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range 30 {
		resp, err := http.Get(w.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		seen[string(body)]++
	}
	return seen
}

func (w *world) replicasByRevision(t *testing.T) map[int64]int {
	t.Helper()
	reps, err := w.drv.List(context.Background(), map[string]string{driver.LabelApp: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]int{}
	for _, r := range reps {
		out[r.Revision]++
	}
	return out
}

func rolling() *deployerv1.Strategy {
	return &deployerv1.Strategy{Kind: &deployerv1.Strategy_Rolling{Rolling: &deployerv1.RollingStrategy{
		MaxSurge:       &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 1}},
		MaxUnavailable: &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 0}},
	}}}
}

func canary() *deployerv1.Strategy {
	return &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 34}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{Duration: durationpb.New(300 * time.Millisecond)}}},
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 67}}},
	}}}}
}

func blueGreen() *deployerv1.Strategy {
	return &deployerv1.Strategy{Kind: &deployerv1.Strategy_BlueGreen{BlueGreen: &deployerv1.BlueGreenStrategy{AutoPromote: true}}}
}

// TestRolloutsUnderLoadLoseNothing runs the rollout scenarios with local
// processes: see scenarios.
func TestRolloutsUnderLoadLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	scenarios(t, w, spec, w.replicasByRevision)
}

// scenarios deploys v1, then under steady load through the router rolls to
// v2 (rolling), v3 (canary) and v4 (blue-green), tries a revision that fails
// its health check in each strategy (each is rolled back, saying why), and
// rolls back by hand to v3: no request fails. Last, a revision that passes
// its health check but answers 500 is rolled back by the canary's analysis.
func scenarios(t *testing.T, w *world, specOf func(version string, strategy *deployerv1.Strategy, env ...*deployerv1.EnvVar) *deployerv1.ApplicationSpec, replicas func(t *testing.T) map[int64]int) {
	t.Helper()
	w.runner.Analysis = &analysis.Measurer{Router: w.router.Stats}
	v1 := rollout.Revision{Number: 1, Spec: specOf("v1", rolling())}
	r := w.deploy(t, "r1", rollout.Revision{}, v1, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("first deploy: %s: %s", r.GetPhase(), r.GetMessage())
	}
	if got := w.versions(t); got["v1"] != 30 {
		t.Fatalf("after v1: served %v", got)
	}
	expect := func(version string, rev int64) {
		t.Helper()
		if got := w.versions(t); got[version] != 30 {
			t.Fatalf("want %s everywhere: served %v", version, got)
		}
		if reps := replicas(t); len(reps) != 1 || reps[rev] != 3 {
			t.Fatalf("want only 3 replicas of revision %d: %v", rev, reps)
		}
	}

	l := startLoad(t, w.url, 4)
	revs := map[string]rollout.Revision{"v1": v1}
	prev := v1
	for i, tc := range []struct {
		version  string
		strategy *deployerv1.Strategy
	}{
		{"v2", rolling()},
		{"v3", canary()},
		{"v4", blueGreen()},
	} {
		next := rollout.Revision{Number: int64(i + 2), Spec: specOf(tc.version, tc.strategy)}
		r := w.deploy(t, "r-"+tc.version, prev, next, nil)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
			t.Fatalf("%s: %s: %s", tc.version, r.GetPhase(), r.GetMessage())
		}
		expect(tc.version, next.Number)
		revs[tc.version] = next
		prev = next
	}

	// A revision failing its health check, in each strategy.
	for i, tc := range []struct {
		name     string
		strategy *deployerv1.Strategy
	}{{"rolling", rolling()}, {"canary", canary()}, {"blue-green", blueGreen()}} {
		broken := rollout.Revision{Number: int64(5 + i), Spec: specOf("broken", tc.strategy, &deployerv1.EnvVar{Name: "UNHEALTHY", Value: "1"})}
		r := w.deploy(t, "r-broken-"+tc.name, prev, broken, nil)
		if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_HEALTH ||
			!strings.Contains(r.GetMessage(), "unhealthy on purpose") {
			t.Fatalf("broken (%s): %s (%s): %s; want rolled back on health, saying why", tc.name, r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
		}
		t.Logf("broken (%s) rolled back: %s (time to stable %s)", tc.name, r.GetMessage(), r.GetTimeToStable().AsDuration())
		expect("v4", 4)
	}

	// Rollback by hand: back to v3 with the rolling strategy, no canary replay.
	back := rollout.Revision{Number: 3, Spec: specOf("v3", rolling())}
	r = w.deploy(t, "r-rollback", prev, back, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("manual rollback: %s: %s", r.GetPhase(), r.GetMessage())
	}
	expect("v3", 3)
	l.finish(t)

	// A revision that passes its checks but fails requests: the canary's
	// analysis catches it (its 500s are expected, so only counted).
	l = startLoad(t, w.url, 4)
	failing := rollout.Revision{Number: 8, Spec: specOf("failing", analysedCanary(), &deployerv1.EnvVar{Name: "FAIL", Value: "1"})}
	r = w.deploy(t, "r-failing", back, failing, nil)
	close(l.stop)
	l.wg.Wait()
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS {
		t.Fatalf("failing requests: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
	t.Logf("failing revision rolled back after %d failed requests: %s", l.fail.Load(), r.GetMessage())
	expect("v3", 3)
}

// TestAbortDuringPauseRollsStraightBack aborts a canary waiting to be
// promoted: traffic returns to the stable revision without replaying steps.
func TestAbortDuringPauseRollsStraightBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)
	st := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 50}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
	}}}}
	v2 := rollout.Revision{Number: 2, Spec: spec("v2", st)}
	signals := make(chan rollout.Signal, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if r := w.saved.Load(); r != nil && r.GetId() == "r2" && r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED {
				signals <- rollout.Abort
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	r := w.deploy(t, "r2", v1, v2, signals)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_ABORT {
		t.Fatalf("aborted canary: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
	if got := w.versions(t); got["v1"] != 30 {
		t.Fatalf("after abort: served %v", got)
	}
}

// TestRestartMidRolloutResumes stops the rollout's runner and driver in the
// middle of a rolling update (as a deployer crash would), then resumes it
// from the saved progress with a new driver on the same state: the rollout
// finishes, with exactly the desired replicas and none orphaned, and no
// request fails meanwhile.
func TestRestartMidRolloutResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)
	l := startLoad(t, w.url, 4)

	v2 := rollout.Revision{Number: 2, Spec: spec("v2", rolling())}
	r := &deployerv1.Rollout{Id: "r2", Application: "shop", Environment: "prod", Strategy: v2.Spec.GetStrategy(), EffectiveSpec: v2.Spec}
	rollout.Prepare(r, 3, true, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.runner.Run(ctx, r, v2, v1, nil) }()
	// Stop it once the second batch has begun.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s := w.saved.Load(); s != nil && s.GetId() == "r2" && s.GetCurrentStepIndex() >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("rollout did not reach its second batch")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Log("rollout finished before it could be interrupted")
	}
	saved := w.saved.Load()
	if err := w.drv.Close(); err != nil {
		t.Fatal(err)
	}

	// A new deployer: new driver on the same state, same router and checker.
	drv, err := process.New(process.Config{StateDir: w.dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.drv = drv
	w.exec.Driver = drv
	resumed := proto.CloneOf(saved)
	rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer rcancel()
	if err := w.runner.Run(rctx, resumed, v2, v1, nil); err != nil {
		t.Fatal(err)
	}
	if resumed.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("resumed rollout: %s: %s", resumed.GetPhase(), resumed.GetMessage())
	}
	if reps := w.replicasByRevision(t); len(reps) != 1 || reps[2] != 3 {
		t.Fatalf("after resume: replicas by revision %v, want only 3 of revision 2", reps)
	}
	if got := w.versions(t); got["v2"] != 30 {
		t.Fatalf("after resume: served %v", got)
	}
	l.finish(t)
}

// TestFailingRequestsRollBack deploys a canary that passes its health check
// but answers 500: the error guard trips on the router's counts and the
// rollout goes straight back to the stable revision.
func TestFailingRequestsRollBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	w.runner.Guard = &rollout.ErrorGuard{
		Counts: func(rev int64) (uint64, uint64) {
			s, _ := w.router.Stats(rev)
			return s.Requests, s.Errors
		},
		Interval: 50 * time.Millisecond,
	}
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)
	l := startLoad(t, w.url, 4)
	st := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 34}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{Duration: durationpb.New(20 * time.Second)}}},
	}}}}
	v2 := rollout.Revision{Number: 2, Spec: spec("v2", st, &deployerv1.EnvVar{Name: "FAIL", Value: "1"})}
	start := time.Now()
	r := w.deploy(t, "r2", v1, v2, nil)
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK || r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_FAILED_ANALYSIS {
		t.Fatalf("failing canary: %s (%s): %s", r.GetPhase(), r.GetRollbackTrigger(), r.GetMessage())
	}
	t.Logf("rolled back after %s: %s", time.Since(start).Round(time.Millisecond), r.GetMessage())
	if time.Since(start) > 15*time.Second {
		t.Fatal("the guard waited for the pause to end")
	}
	close(l.stop)
	l.wg.Wait()
	t.Logf("requests during the failing canary: %d ok, %d failed", l.ok.Load(), l.fail.Load())
	if got := w.versions(t); got["v1"] != 30 {
		t.Fatalf("after rollback: served %v", got)
	}
}

// TestPauseAndResume holds a rolling update between batches and lets it go on.
func TestPauseAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w := newWorld(t)
	v1 := rollout.Revision{Number: 1, Spec: spec("v1", rolling())}
	w.deploy(t, "r1", rollout.Revision{}, v1, nil)
	v2 := rollout.Revision{Number: 2, Spec: spec("v2", rolling())}
	signals := make(chan rollout.Signal, 1)
	signals <- rollout.Pause
	held := make(chan *deployerv1.Rollout, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if r := w.saved.Load(); r != nil && r.GetId() == "r2" && r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED {
				held <- r
				time.Sleep(300 * time.Millisecond)
				signals <- rollout.Resume
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(held)
	}()
	r := w.deploy(t, "r2", v1, v2, signals)
	h := <-held
	if h == nil || h.GetPauseCause() != deployerv1.PauseCause_PAUSE_CAUSE_USER {
		t.Fatalf("never held by the user: %v", h)
	}
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		t.Fatalf("after resume: %s: %s", r.GetPhase(), r.GetMessage())
	}
	if got := w.versions(t); got["v2"] != 30 {
		t.Fatalf("served %v", got)
	}
}
