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

// handler answers / with the version and /healthz with ok, or fails them
// on purpose when told to.
func handler(version string, unhealthy, fail bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if unhealthy {
			http.Error(w, "unhealthy on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		if fail {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, version)
	})
	return mux
}

func main() {
	version := os.Getenv("VERSION")
	mux := handler(version, os.Getenv("UNHEALTHY") == "1", os.Getenv("FAIL") == "1")
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
