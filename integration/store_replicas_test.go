package integration_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// startNATSCluster runs n NATS servers with JetStream clustered over
// loopback routes and waits until JetStream has a meta leader.
func startNATSCluster(t *testing.T, n int) []*server.Server {
	t.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range n {
		_, p, err := net.SplitHostPort(freeAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		ports[i], _ = strconv.Atoi(p)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	servers := make([]*server.Server, n)
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "opsuite", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		})
		servers[i] = ns
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready", ns.Name())
		}
	}
	_, js := natsClient(t, servers[0].ClientURL())
	eventually(t, 30*time.Second, "a JetStream meta leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
	return servers
}

// TestStoreReplicasOnNATSCluster runs every service against a three-node
// NATS cluster with --store-replicas=3: every stream and bucket the suite
// creates keeps three copies, and with one NATS node shut down the suite
// still stores and reads.
func TestStoreReplicasOnNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts three NATS servers and the opsuite binary")
	}
	servers := startNATSCluster(t, 3)
	r := startReplica(t, servers[0].ClientURL(), "all", "r1", "--store-replicas", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	_, js := natsClient(t, servers[0].ClientURL())
	names := map[string]int{}
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		names[info.Config.Name] = info.Config.Replicas
	}
	if err := streams.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"OPSUITE_EVENTS", "OPSUITE_LOGS", "KV_opsuite_event_dedupe", "KV_opsuite_leases",
		"KV_opsuite_healthchecker_targets", "KV_opsuite_monitor_alerts",
	} {
		if _, ok := names[want]; !ok {
			t.Errorf("stream %s missing; the suite created %v", want, names)
		}
	}
	for name, n := range names {
		if n != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, n)
		}
	}
	t.Logf("%d streams and buckets, all with 3 replicas", len(names))

	// One node down: a quorum of two keeps every stream writable.
	servers[2].Shutdown()
	servers[2].WaitForShutdown()
	hc := hcv1.NewHealthCheckerServiceClient(r.conn)
	start := time.Now()
	eventually(t, time.Minute, "a target created with one NATS node down", func() bool {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := hc.CreateTarget(c, &hcv1.CreateTargetRequest{Target: &hcv1.Target{
			Name: "after-node-loss", Interval: durationpb.New(time.Second),
			Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: "http://127.0.0.1:1/"}},
		}})
		return err == nil || status.Code(err) == codes.AlreadyExists
	})
	t.Logf("first write after losing a node: %s", time.Since(start).Round(time.Millisecond))
	got, err := hc.GetTarget(ctx, &hcv1.GetTargetRequest{Name: "after-node-loss"})
	if err != nil || got.GetTarget().GetName() != "after-node-loss" {
		t.Fatalf("read back after node loss: %v %v", got, err)
	}
}
