package monitor_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/pkg/natsembed"
	"github.com/opsuite/opsuite/services/monitor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

const (
	childEnv     = "OPSUITE_MONITOR_TEST_CHILD"
	childNATS    = "OPSUITE_MONITOR_TEST_NATS"
	childDataDir = "OPSUITE_MONITOR_TEST_DATA"
	// childFastWebhooks, when set, gives the child short webhook retry
	// delays and ack wait.
	childFastWebhooks = "OPSUITE_MONITOR_TEST_FAST_WEBHOOKS"
)

// fastWebhooks is the webhook retry configuration of tests that restart
// monitors while a receiver fails.
func fastWebhooks(cfg monitor.Config) monitor.Config {
	cfg.WebhookBackoff, cfg.WebhookMaxBackoff = 100*time.Millisecond, 400*time.Millisecond
	cfg.WebhookAckWait, cfg.WebhookMaxAttempts = 2*time.Second, 10_000
	return cfg
}

// runChild is the test binary re-executed as a monitor process: it serves
// the monitor on a loopback port (printed as "ADDR host:port") against the
// parent's NATS until it is killed.
func runChild() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	nc, err := nats.Connect(os.Getenv(childNATS))
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	bus, err := eventbus.New(ctx, nc, eventbus.Config{Source: "opsuite/monitor"}, nil)
	if err != nil {
		fail(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fail(err)
	}
	cfg := monitor.Config{DataDir: os.Getenv(childDataDir), HostMetricsInterval: -1}
	if os.Getenv(childFastWebhooks) != "" {
		cfg = fastWebhooks(cfg)
	}
	svc, err := monitor.New(cfg, monitor.Deps{JetStream: js, Events: bus, Consumer: bus})
	if err != nil {
		fail(err)
	}
	go func() {
		if err := svc.Run(ctx); err != nil {
			fail(err)
		}
	}()
	<-svc.Ready()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	fmt.Printf("ADDR %s\n", lis.Addr())
	if err := gs.Serve(lis); err != nil {
		fail(err)
	}
}

type child struct {
	cmd    *exec.Cmd
	client monitorv1.MonitorServiceClient
	conn   *grpc.ClientConn
}

func spawnChild(t *testing.T, natsURL, dataDir string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childNATS+"="+natsURL, childDataDir+"="+dataDir)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addr <- a
			}
		}
	}()
	var a string
	select {
	case a = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatal("child monitor did not start")
	}
	conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &child{cmd: cmd, client: monitorv1.NewMonitorServiceClient(conn), conn: conn}
}

// natsForChildren starts an embedded NATS on a loopback port that monitor
// child processes reach, with the event streams, and connects to it; both
// end with the test.
func natsForChildren(t *testing.T) (*natsembed.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventbus.New(t.Context(), nc, eventbus.Config{Source: "test"}, nil); err != nil {
		t.Fatal(err)
	}
	return srv, nc, js
}

// TestSIGKILLWhileFiring kills a monitor process with SIGKILL while its
// alert fires; the restarted process keeps the alert firing with the same
// start time and sends no second notification.
func TestSIGKILLWhileFiring(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns monitor processes")
	}
	srv, nc, js := natsForChildren(t)
	ev := watchEvents(t, nc)
	dataDir := t.TempDir()
	ctx := t.Context()

	c1 := spawnChild(t, srv.ClientURL(), dataDir)
	var cur atomic.Pointer[child]
	cur.Store(c1)
	p := startPusher(t, func() monitorv1.MonitorServiceClient { return cur.Load().client }, "temp", map[string]string{"app": "oven"})
	p.value.Store(95)
	high := 90.0
	if _, err := c1.client.CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
		Name: "oven", Interval: dur(time.Second),
		Rules: []*monitorv1.Rule{{Name: "oven-hot", For: dur(time.Second), Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{
			// A window longer than the restart gap: samples pushed before the
			// kill still count after it.
			Metric: "temp", High: &high, Window: dur(10 * time.Second)}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 8*time.Second, func() error {
		if ev.count(monitor.EventAlertFiring) == 0 {
			return errNotYet
		}
		return nil
	})
	list, err := c1.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{})
	if err != nil || len(list.GetAlerts()) != 1 {
		t.Fatalf("alerts %v %v", list, err)
	}
	before := list.GetAlerts()[0]

	if err := c1.cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = c1.cmd.Wait()
	c2 := spawnChild(t, srv.ClientURL(), dataDir)
	cur.Store(c2)
	time.Sleep(2500 * time.Millisecond)
	got, err := c2.client.GetAlert(ctx, &monitorv1.GetAlertRequest{Id: before.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	after := got.GetAlert()
	if after.GetState() != monitorv1.AlertState_ALERT_STATE_FIRING || !proto.Equal(after.GetActiveAt(), before.GetActiveAt()) || !proto.Equal(after.GetFiredAt(), before.GetFiredAt()) {
		t.Fatalf("after SIGKILL: %s active %v fired %v; before: active %v fired %v", after.GetState(),
			after.GetActiveAt().AsTime(), after.GetFiredAt().AsTime(), before.GetActiveAt().AsTime(), before.GetFiredAt().AsTime())
	}
	if n := ev.count(monitor.EventAlertFiring); n != 1 {
		t.Fatalf("%d firing events seen, want 1", n)
	}
	if c := streamCounts(t, js); c[monitor.EventAlertFiring] != 1 {
		t.Fatalf("events in stream %v, want one firing", c)
	}
	p.stop()
}

// TestSIGKILLWhileWebhookFails kills a monitor process with SIGKILL while it
// retries a notification to a failing receiver (the receiver answers
// slowly, so the kill usually lands during an attempt); the restarted
// process takes the notification over and, once the receiver accepts,
// delivers it exactly once.
func TestSIGKILLWhileWebhookFails(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns monitor processes")
	}
	srv, _, js := natsForChildren(t)
	hook := newFlakyHook(t)
	hook.slow.Store(true)
	dataDir := t.TempDir()
	ctx := t.Context()
	fast := childFastWebhooks + "=1"

	c1 := spawnChild(t, srv.ClientURL(), dataDir, fast)
	var cur atomic.Pointer[child]
	cur.Store(c1)
	client := func() monitorv1.MonitorServiceClient { return cur.Load().client }
	if _, err := c1.client.CreateReceiver(ctx, &monitorv1.CreateReceiverRequest{Receiver: &monitorv1.Receiver{
		Name: "ops", Webhook: &monitorv1.WebhookConfig{Url: hook.srv.URL}}}); err != nil {
		t.Fatal(err)
	}
	p := startPusher(t, client, "disk_used_percent", map[string]string{"host": "a"})
	p.value.Store(95)
	high := 90.0
	if _, err := c1.client.CreateRuleGroup(ctx, &monitorv1.CreateRuleGroupRequest{RuleGroup: &monitorv1.RuleGroup{
		Name: "disks", Interval: dur(time.Second),
		Rules: []*monitorv1.Rule{{Name: "disk-full", Condition: &monitorv1.Rule_Threshold{Threshold: &monitorv1.ThresholdCondition{
			Metric: "disk_used_percent", High: &high, Window: dur(10 * time.Second)}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if att, _ := hook.snapshot(); att["a/firing"] < 3 {
			return fmt.Errorf("attempts %v: %w", att, errNotYet)
		}
		return nil
	})
	if err := c1.cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = c1.cmd.Wait()
	killedAt, _ := hook.snapshot()

	c2 := spawnChild(t, srv.ClientURL(), dataDir, fast)
	cur.Store(c2)
	eventually(t, 20*time.Second, func() error {
		if att, _ := hook.snapshot(); att["a/firing"] <= killedAt["a/firing"] {
			return fmt.Errorf("attempts %v: %w", att, errNotYet)
		}
		return nil
	})
	hook.failing.Store(false)
	eventually(t, 20*time.Second, func() error {
		if _, acc := hook.snapshot(); len(acc) == 0 {
			return errNotYet
		}
		return nil
	})
	time.Sleep(2*2*time.Second + time.Second) // twice the ack wait: any redelivery shows
	if att, acc := hook.snapshot(); len(acc) != 1 || acc[0] != "a/firing" {
		t.Fatalf("accepted %v, want a/firing once (attempts %v)", acc, att)
	}
	if n := webhookQueue(t, js, "ops"); n != 0 {
		t.Fatalf("%d notifications still queued", n)
	}
	p.stop()
}
