package healthgate_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/healthgate"
	"github.com/opsuite/opsuite/services/healthchecker/checkertest"
	"google.golang.org/protobuf/types/known/durationpb"
)

// replicaFor describes a loopback server as a replica with container port 8080.
func replicaFor(t *testing.T, id, url string) driver.Replica {
	t.Helper()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	p, _ := strconv.Atoi(port)
	return driver.Replica{ID: id, App: "shop", Environment: "prod", Revision: 2,
		Bindings: []driver.Binding{{ContainerPort: 8080, HostIP: "127.0.0.1", HostPort: p}}}
}

var httpCheck = &deployerv1.HealthCheck{
	Probe:            &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz", Port: 8080}},
	Interval:         durationpb.New(100 * time.Millisecond),
	FailureThreshold: 1,
}

func TestWaitPassingAndFailing(t *testing.T) {
	client := checkertest.Start(t)
	gate := healthgate.New(client)
	ctx := t.Context()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "db down", http.StatusServiceUnavailable) }))
	defer bad.Close()

	var names []string
	for i, r := range []driver.Replica{replicaFor(t, "shop-prod-r2-a", ok.URL), replicaFor(t, "shop-prod-r2-b", ok.URL)} {
		n, err := gate.Register(ctx, r, "shop-prod", httpCheck)
		if err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
		names = append(names, n)
	}
	// Registering again (a deployer restart) is fine.
	if _, err := gate.Register(ctx, replicaFor(t, "shop-prod-r2-a", ok.URL), "shop-prod", httpCheck); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := gate.WaitPassing(wctx, "shop-prod", names); err != nil {
		t.Fatalf("healthy replicas: %v", err)
	}

	badName, err := gate.Register(ctx, replicaFor(t, "shop-prod-r2-c", bad.URL), "shop-prod", httpCheck)
	if err != nil {
		t.Fatal(err)
	}
	err = gate.WaitPassing(wctx, "shop-prod", append(names, badName))
	if !errors.Is(err, healthgate.ErrUnhealthy) || !strings.Contains(err.Error(), "shop-prod-r2-c") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("unhealthy replica: %v, want ErrUnhealthy naming it and the status", err)
	}

	if err := gate.Unregister(ctx, append(names, badName, "never-registered")...); err != nil {
		t.Fatal(err)
	}
	list, err := client.ListTargets(ctx, &hcv1.ListTargetsRequest{Group: "shop-prod"})
	if err != nil || len(list.GetTargets()) != 0 {
		t.Fatalf("targets left after unregister: %v %v", list.GetTargets(), err)
	}
}

func TestWaitPassingGivesUpAtDeadline(t *testing.T) {
	gate := healthgate.New(checkertest.Start(t))
	slow := &deployerv1.HealthCheck{Probe: &deployerv1.HealthCheck_Tcp{Tcp: &deployerv1.TcpProbe{}}, InitialDelay: durationpb.New(time.Hour)}
	r := driver.Replica{ID: "shop-prod-r3-a", Bindings: []driver.Binding{{ContainerPort: 80, HostIP: "127.0.0.1", HostPort: 9}}}
	name, err := gate.Register(t.Context(), r, "g", slow)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err = gate.WaitPassing(ctx, "g", []string{name})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), name) {
		t.Fatalf("got %v, want the deadline naming the waiting replica", err)
	}
}

func TestTargetMapping(t *testing.T) {
	r := driver.Replica{ID: "x", Bindings: []driver.Binding{{ContainerPort: 8080, HostIP: "0.0.0.0", HostPort: 30001}, {ContainerPort: 9090, HostPort: 30002}}}
	for _, tc := range []struct {
		name string
		hc   *deployerv1.HealthCheck
		want string
	}{
		{"no check: tcp on first port", nil, "tcp:127.0.0.1:30001"},
		{"http default path", &deployerv1.HealthCheck{Probe: &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Port: 9090}}}, "http:http://127.0.0.1:30002/"},
		{"grpc", &deployerv1.HealthCheck{Probe: &deployerv1.HealthCheck_Grpc{Grpc: &deployerv1.GrpcProbe{Port: 8080, Service: "s"}}}, "grpc:127.0.0.1:30001"},
		{"unpublished port", &deployerv1.HealthCheck{Probe: &deployerv1.HealthCheck_Tcp{Tcp: &deployerv1.TcpProbe{Port: 7}}}, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := healthgate.Target(r, "g", tc.hc)
			got := "error"
			if err == nil {
				switch c := tg.GetCheck().(type) {
				case *hcv1.Target_Tcp:
					got = "tcp:" + c.Tcp.GetAddress()
				case *hcv1.Target_Http:
					got = "http:" + c.Http.GetUrl()
				case *hcv1.Target_Grpc:
					got = "grpc:" + c.Grpc.GetAddress()
				}
			}
			if got != tc.want {
				t.Fatalf("got %s (%v), want %s", got, err, tc.want)
			}
		})
	}
	if tg, err := healthgate.Target(driver.Replica{ID: "y"}, "g", nil); tg != nil || err != nil {
		t.Fatalf("no ports and no check: %v %v, want nothing to check", tg, err)
	}
}

// TestSlowStartIsNotAFailure: a replica whose port opens late passes once it
// answers; one that never listens fails when the startup grace ends.
func TestSlowStartIsNotAFailure(t *testing.T) {
	client := checkertest.Start(t)
	gate := healthgate.New(client)
	gate.StartupGrace = 2 * time.Second
	ctx := t.Context()

	// A port that refuses connections for 600ms, then serves.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	late := make(chan *http.Server, 1)
	go func() {
		time.Sleep(600 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			late <- nil
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: time.Second}
		late <- srv
		_ = srv.Serve(l)
	}()
	name, err := gate.Register(ctx, replicaFor(t, "shop-prod-r2-slow", "http://"+addr), "shop-prod", httpCheck)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := gate.WaitPassing(wctx, "shop-prod", []string{name}); err != nil {
		t.Fatalf("slow starter: %v", err)
	}
	if srv := <-late; srv != nil {
		_ = srv.Close()
	} else {
		t.Fatal("could not listen on the late port")
	}

	// Never listens: fails after the grace, saying why.
	lis, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	name, err = gate.Register(ctx, replicaFor(t, "shop-prod-r2-dead", "http://"+dead), "shop-prod", httpCheck)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = gate.WaitPassing(wctx, "shop-prod", []string{name})
	if !errors.Is(err, healthgate.ErrUnhealthy) || !strings.Contains(err.Error(), "not answering after 2s") {
		t.Fatalf("dead replica: %v", err)
	}
	if took := time.Since(begin); took < 2*time.Second || took > 15*time.Second {
		t.Fatalf("failed after %s, want at the 2s grace", took)
	}
}
