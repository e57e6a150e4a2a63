// Command demo is the workload the docker driver tests run in a FROM scratch
// image. It serves HTTP on :$PORT (8080 by default) and misbehaves on demand:
//
//	GET /healthz        200 "ok"
//	GET /env?name=K     the value of $K
//	GET /cwd            the working directory
//	GET /file?path=P    the contents of P
//	GET /log?msg=M      writes M as one line to stdout
//
//	LOG_LINES=N         print "line 1" ... "line N" to stdout at start, then
//	                    "stderr line" to stderr
//	CRASH_AFTER=D       exit with $CRASH_CODE (default 3) after duration D
//	IGNORE_SIGTERM=1    ignore SIGTERM, so only SIGKILL stops it
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	stopSignals := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	if os.Getenv("IGNORE_SIGTERM") == "1" {
		stopSignals = stopSignals[1:]
		signal.Ignore(syscall.SIGTERM)
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()

	if d := os.Getenv("CRASH_AFTER"); d != "" {
		after, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("CRASH_AFTER: %w", err)
		}
		code := 3
		if c := os.Getenv("CRASH_CODE"); c != "" {
			if code, err = strconv.Atoi(c); err != nil {
				return fmt.Errorf("CRASH_CODE: %w", err)
			}
		}
		time.AfterFunc(after, func() {
			fmt.Printf("crashing with code %d\n", code)
			os.Exit(code)
		})
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
	})
	mux.HandleFunc("GET /cwd", func(w http.ResponseWriter, _ *http.Request) {
		wd, err := os.Getwd()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, wd)
	})
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("GET /log", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.URL.Query().Get("msg"))
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	fmt.Printf("listening on :%s\n", port)
	if n, _ := strconv.Atoi(os.Getenv("LOG_LINES")); n > 0 {
		for i := 1; i <= n; i++ {
			fmt.Printf("line %d\n", i)
		}
		fmt.Fprintln(os.Stderr, "stderr line")
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Println("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
