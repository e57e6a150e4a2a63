// Command testapp is the workload the process driver's tests run: a small
// HTTP server whose behaviour is chosen through its environment.
//
//	PORT, PORT_<NAME>  listen on 127.0.0.1 at each of these ports; on UDP
//	                   for PORT_UDP*, echoing each datagram
//	CRASH_AFTER        exit with EXIT_CODE (default 3) after this duration
//	IGNORE_TERM=1      ignore SIGTERM (otherwise exit 0 on SIGTERM)
//	SPAWN_CHILD=1      start a child process that ignores SIGTERM and sleeps
//	TESTAPP_CHILD=1    be that child
//	SPAM_LINES=N       print N numbered lines of 100 bytes at start
//
// Endpoints: /healthz, /env?name=X (value of X), /cwd, /pid, /child (the
// child's pid), /say?msg=X (prints X on stdout, or stderr with stream=stderr).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv("TESTAPP_CHILD") == "1" {
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("child started")
		for {
			time.Sleep(time.Hour)
		}
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	if os.Getenv("IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM)
		defer stop()
	}

	if n, _ := strconv.Atoi(os.Getenv("SPAM_LINES")); n > 0 {
		pad := strings.Repeat("x", 88)
		for i := range n {
			fmt.Printf("spam %06d %s\n", i, pad)
		}
	}

	childPID := 0
	if os.Getenv("SPAWN_CHILD") == "1" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		child := exec.Command(self)
		child.Env = append(os.Environ(), "TESTAPP_CHILD=1")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			return fmt.Errorf("start child: %w", err)
		}
		childPID = child.Process.Pid
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
	})
	mux.HandleFunc("/cwd", func(w http.ResponseWriter, r *http.Request) {
		wd, _ := os.Getwd()
		fmt.Fprint(w, wd)
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, os.Getpid()) })
	mux.HandleFunc("/child", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, childPID) })
	mux.HandleFunc("/say", func(w http.ResponseWriter, r *http.Request) {
		out := os.Stdout
		if r.URL.Query().Get("stream") == "stderr" {
			out = os.Stderr
		}
		fmt.Fprintln(out, r.URL.Query().Get("msg"))
	})

	var ports []string // $PORT is also one of the $PORT_<NAME>
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PORT_UDP"):
			pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", v))
			if err != nil {
				return err
			}
			go echo(pc)
		case (k == "PORT" || strings.HasPrefix(k, "PORT_")) && !slices.Contains(ports, v):
			ports = append(ports, v)
		}
	}
	errc := make(chan error, len(ports))
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p))
		if err != nil {
			return err
		}
		go func() { errc <- http.Serve(l, mux) }()
	}
	fmt.Printf("listening on %s\n", strings.Join(ports, ","))
	fmt.Fprintln(os.Stderr, "stderr works")

	var crash <-chan time.Time
	if d := os.Getenv("CRASH_AFTER"); d != "" {
		dur, err := time.ParseDuration(d)
		if err != nil {
			return err
		}
		crash = time.After(dur)
	}
	select {
	case <-ctx.Done():
		fmt.Println("terminating")
		return nil
	case <-crash:
		code, err := strconv.Atoi(os.Getenv("EXIT_CODE"))
		if err != nil {
			code = 3
		}
		fmt.Println("crashing")
		os.Exit(code)
	case err := <-errc:
		return errors.Join(errors.New("serve"), err)
	}
	return nil
}

func echo(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(buf[:n], addr)
	}
}
