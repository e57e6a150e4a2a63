// Command stepbin is the program the docker executor's tests run in a FROM
// scratch image: `stepbin write FILE TEXT`, `stepbin env NAME`,
// `stepbin exit CODE`, `stepbin sleep SECONDS`, `stepbin pwd`,
// `stepbin serve ADDR` (answers "pong") and `stepbin get URL` (retries for
// 10 s, prints the body).
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: stepbin write|env|exit|sleep|pwd ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "write":
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("wrote", os.Args[2])
	case "env":
		fmt.Printf("%s=%s\n", os.Args[2], os.Getenv(os.Args[2]))
	case "exit":
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintln(os.Stderr, "exiting with", code)
		os.Exit(code)
	case "sleep":
		s, _ := strconv.Atoi(os.Args[2])
		time.Sleep(time.Duration(s) * time.Second)
	case "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("pong")) })
		srv := &http.Server{Addr: os.Args[2], ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	case "get":
		deadline := time.Now().Add(10 * time.Second)
		for {
			res, err := http.Get(os.Args[2])
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				fmt.Println(string(b))
				return
			}
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	case "pwd":
		wd, _ := os.Getwd()
		fmt.Println(wd)
	}
}
