package integration_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// replicaProc is one replica of a service in split mode: its own process,
// ports and data dir, a replica id, and an external NATS shared with the
// other replicas.
type replicaProc struct {
	*proc
	id       string
	grpcAddr string
	dataDir  string
	conn     *grpc.ClientConn
}

// startReplica runs `opsuite serve --target=<target>` as replica id.
func startReplica(t *testing.T, natsURL, target, id string, extra ...string) *replicaProc {
	t.Helper()
	r := &replicaProc{id: id, grpcAddr: freeAddr(t), dataDir: filepath.Join(t.TempDir(), id)}
	args := append([]string{"serve", "--target=" + target, "--nats-url", natsURL, "--grpc-addr", r.grpcAddr,
		"--data-dir", r.dataDir, "--replica-id", id, "--docker=off"}, extra...)
	r.proc = startOpsuite(t, freeAddr(t), args...)
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(tokenCreds{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	r.conn = conn
	return r
}

// eventually polls cond every 50ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// natsClient connects the test to the NATS at url, with JetStream; closed
// when the test ends.
func natsClient(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
