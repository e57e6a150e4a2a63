// Command demoapp is the workload the rollout tests deploy: it answers
// every request with its VERSION on $PORT, and can be told to be unhealthy
// (UNHEALTHY=1 fails /healthz) or to fail requests (FAIL=1 answers 500).
// It listens on BIND (default 127.0.0.1) at $PORT.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	version := os.Getenv("VERSION")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if os.Getenv("UNHEALTHY") == "1" {
			http.Error(w, "unhealthy on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		if os.Getenv("FAIL") == "1" {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, version)
	})
	// Local processes listen on loopback; in a container BIND=0.0.0.0.
	host := os.Getenv("BIND")
	if host == "" {
		host = "127.0.0.1"
	}
	srv := &http.Server{Addr: host + ":" + os.Getenv("PORT"), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// One line on each stream, so log tests have something to read.
	fmt.Printf("demoapp %s listening on %s\n", version, srv.Addr)
	go func() {
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, "demoapp stopping")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
