package router_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/router"
)

// A canary: revision 2 gets 10% of the traffic, its error rate over a
// window is read from Stats, and it is promoted with an atomic switch.
func Example() {
	replica := func(version string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "hello from", version)
		}))
	}
	v1, v2 := replica("v1"), replica("v2")
	defer v1.Close()
	defer v2.Close()

	r, err := router.New(router.Config{App: "shop"}, router.Deps{})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, l) }()
	defer func() { stop(); <-served }()

	_ = r.SetBackends(1, []string{v1.Listener.Addr().String()})
	_ = r.SetBackends(2, []string{v2.Listener.Addr().String()})
	_ = r.SetWeights(map[int64]int{1: 90, 2: 10})
	before, _ := r.Stats(2)

	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for range 200 {
		resp, err := client.Get("http://" + l.Addr().String() + "/")
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	window, _ := r.Stats(2)
	window = window.Sub(before)
	fmt.Println("canary saw requests:", window.Requests > 0, "error rate:", window.ErrorRate())

	_ = r.Switch(2)
	resp, err := client.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print("revision ", resp.Header.Get(router.RevisionHeader), ": ", string(body))
	// Output:
	// canary saw requests: true error rate: 0
	// revision 2: hello from v2
}
