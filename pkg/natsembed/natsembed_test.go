package natsembed_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/opsuite/opsuite/pkg/natsembed"
)

func TestStateSurvivesRestartAndListenerServesClients(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	srv, err := natsembed.Start(natsembed.Config{DataDir: dir, ListenAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientURL() == "" {
		t.Fatal("no client URL with a listener")
	}
	ext, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("external client: %v", err)
	}
	js, err := jetstream.New(ext)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	ext.Close()
	srv.Shutdown()
	srv.Shutdown() // safe twice

	srv, err = natsembed.Start(natsembed.Config{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if srv.ClientURL() != "" {
		t.Errorf("in-process-only server reports client URL %q", srv.ClientURL())
	}
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	kv, err = js.KeyValue(ctx, "b")
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("value after restart: %v %v", e, err)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	for _, cfg := range []natsembed.Config{
		{},
		{DataDir: t.TempDir(), ListenAddr: "nope"},
		{DataDir: t.TempDir(), ListenAddr: "127.0.0.1:99999"},
	} {
		if srv, err := natsembed.Start(cfg, nil); err == nil {
			srv.Shutdown()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}
